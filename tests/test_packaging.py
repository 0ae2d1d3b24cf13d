"""The installed package and the sdist (the engine built on its own: test_engine_c.py)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import nemotron_cpp

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(nemotron_cpp.__file__).resolve().parent


def _dynamic_section(library: Path) -> str:
    return subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout


def _check_engine_library(library: Path) -> None:
    dynamic = _dynamic_section(library)
    needed = [line.split("[", 1)[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert "libggml.so" in needed and "libggml-base.so" in needed, needed
    assert all("/" not in n for n in needed), f"absolute library paths recorded: {needed}"
    runpath = [line for line in dynamic.splitlines() if "RUNPATH" in line or "RPATH" in line]
    assert runpath and all("[$ORIGIN/../lib]" in line for line in runpath), runpath


def test_installed_library_has_no_build_paths() -> None:
    """pip builds in a temporary environment; the installed engine must find ggml-python's
    libraries by name through $ORIGIN, not by the paths they had at build time."""
    _check_engine_library(PACKAGE / "libnemotron-asr.so")
    assert (PACKAGE / "nemotron-asr.h").exists()
    assert (PACKAGE / "py.typed").exists()
    # The demo model and its sample ship in the package (NemotronModel() with no path loads them).
    assert (PACKAGE / "data" / "demo.q8_0.gguf").exists() and (PACKAGE / "data" / "demo-sample.flac").exists()



def test_tooling_keeps_its_earlier_module_names() -> None:
    """The GGUF tooling lives in nemotron_cpp.gguf; its earlier modules re-export the same objects,
    and importing the package loads none of it."""
    import nemotron_cpp.convert
    import nemotron_cpp.gguf.convert
    import nemotron_cpp.gguf.quantize
    import nemotron_cpp.gguf.random_model
    import nemotron_cpp.quantize
    import nemotron_cpp.testing

    for old, new in ((nemotron_cpp.testing, nemotron_cpp.gguf.random_model),
                     (nemotron_cpp.convert, nemotron_cpp.gguf.convert),
                     (nemotron_cpp.quantize, nemotron_cpp.gguf.quantize)):
        assert old.__all__ and all(getattr(old, name) is getattr(new, name) for name in old.__all__), old.__name__
    loaded = subprocess.run([sys.executable, "-c", "import sys, nemotron_cpp; print(sorted(sys.modules))"],
                            capture_output=True, text=True, check=True).stdout
    assert "nemotron_cpp.gguf" not in loaded and "nemotron_cpp.testing" not in loaded


@pytest.mark.build
def test_sdist_builds_and_installs(tmp_path: Path, fixtures_dir: Path) -> None:
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "dist"), str(REPO)],
                   check=True, capture_output=True, text=True)
    (sdist,) = (tmp_path / "dist").glob("nemotron_cpp-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for expected in ("pyproject.toml", "CMakeLists.txt", "LICENSE", "README.md", "src/nemotron_cpp/model.py",
                     "vendor/nemotron-asr.cpp/CMakeLists.txt", "vendor/nemotron-asr.cpp/include/nemotron-asr.h",
                     "vendor/nemotron-asr.cpp/src/model_loader.cpp", "src/nemotron_cpp/data/demo.q8_0.gguf",
                     "src/nemotron_cpp/data/demo-sample.flac", "src/nemotron_cpp/data/demo-sample.txt"):
        assert expected in names, expected
    assert not any(n.startswith(".ci/") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(sdist)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sys, nemotron_cpp; m = nemotron_cpp.NemotronModel(sys.argv[1]); print(m.layout, m.hparams.n_layers); "
         "print(nemotron_cpp.NemotronModel().weight_type)",
         str(fixtures_dir / "layout-b-tiny.q8_0.gguf")],
        capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["asr", "2", "q8_0"]
    (library,) = (venv / "lib").glob("python*/site-packages/nemotron_cpp/libnemotron-asr.so")
    _check_engine_library(library)
