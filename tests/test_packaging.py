"""The installed package, the sdist, and the engine built on its own without Python."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import nemotron_cpp

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(nemotron_cpp.__file__).resolve().parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is needed for this test (it is in the test extra)")
    return str(path)


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


def test_engine_builds_and_runs_without_python(tmp_path: Path, fixtures_dir: Path) -> None:
    """vendor/nemotron-asr.cpp is a standalone CMake project with a C command-line tool."""
    site = PACKAGE.parent
    build = tmp_path / "build"
    subprocess.run([_tool("cmake"), "-S", str(REPO / "vendor" / "nemotron-asr.cpp"), "-B", str(build), "-G", "Ninja",
                    f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}", f"-Dggml_DIR={site / 'lib' / 'cmake' / 'ggml'}"],
                   check=True, capture_output=True, text=True)
    subprocess.run([_tool("cmake"), "--build", str(build)], check=True, capture_output=True, text=True)
    tool = build / "nemotron-info"

    out = subprocess.run([str(tool), str(fixtures_dir / "layout-a-tiny.q8_0.gguf")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "layout        nemo (nemotron-asr.cpp)" in out.stdout
    assert "weight type   q8_0" in out.stdout
    assert "encoder       2 layers, d_model 128, 4 heads x 32" in out.stdout

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    out = subprocess.run([str(tool), str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "error 4:" in out.stderr and "claims" in out.stderr

    out = subprocess.run([str(tool), "--system"], capture_output=True, text=True, check=True)
    assert "ggml 0.15.3" in out.stdout and "backends: CPU" in out.stdout
