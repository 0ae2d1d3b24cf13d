"""README's examples run as written; every public name has a docstring; ``mypy --strict`` passes."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import soundfile
import soxr

import nemotron_cpp

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
REFERENCE = Path(__file__).parent / "reference" / "tiny"
# A fenced block, with the line before it (where "<!-- not run: why -->" or "<!-- run -->" may stand).
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>\w+)\n(?P<code>.*?)\n```", re.S)


def blocks(lang: str) -> List[Tuple[str, str]]:
    return [(m["before"], m["code"]) for m in BLOCK.finditer(README) if m["lang"] == lang]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    """The files README's examples name: a tiny model, a 16 kHz call and a 48 kHz stereo meeting."""
    d = tmp_path_factory.mktemp("readme")
    shutil.copy(fixtures_dir / "layout-a-tiny.f32.gguf", d / "model.gguf")
    shutil.copy(REFERENCE / "speech_a.wav", d / "call.wav")
    parts = [soundfile.read(REFERENCE / f"{n}.wav", dtype="float32")[0] for n in ("speech_a", "speech_b")]
    meeting = soxr.resample(np.concatenate([parts[0], np.zeros(16000, np.float32), parts[1]]), 16000, 48000)
    soundfile.write(d / "meeting.flac", np.stack([meeting, meeting], axis=1), 48000)
    return d


def test_python_examples_run(workdir: Path) -> None:
    examples = [code for before, code in blocks("python") if "not run:" not in before]
    assert len(examples) >= 6
    # The examples continue each other (a model made in one is used in the next), as a reader runs them.
    script = "\n\n".join(examples)
    out = subprocess.run([sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[0.00 - " in out.stdout  # the first segment's times
    skipped = [before for before, _ in blocks("python") if "not run:" in before]
    assert all(re.search(r"not run: \w+", b) for b in skipped)


def test_command_line_examples_run(workdir: Path) -> None:
    commands = [line.split("#")[0].strip() for before, code in blocks("bash") if "<!-- run -->" in before
                for line in code.splitlines() if line.strip()]
    assert len(commands) >= 5 and all(c.startswith("nemotron-cpp ") for c in commands)
    for command in commands:
        args = command.split()[1:]
        out = subprocess.run([sys.executable, "-m", "nemotron_cpp", *args], cwd=workdir, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, f"{command}: {out.stderr}"
        assert out.stdout or list(workdir.glob("subtitles/*.srt")), command


def test_every_public_name_has_a_docstring() -> None:
    missing = []
    for name in nemotron_cpp.__all__:
        obj = getattr(nemotron_cpp, name)
        if name.startswith("__"):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_") or not (inspect.isfunction(value) or isinstance(value, property)):
                    continue
                if not (value.__doc__ or "").strip():
                    missing.append(f"{name}.{attr}")
    assert missing == []


def test_mypy_strict() -> None:
    mypy = pytest.importorskip("mypy.api")
    if tuple(int(v) for v in np.__version__.split(".")[:2]) < (2, 1):
        pytest.skip(f"numpy {np.__version__}'s stubs give ndarray no default type parameters (2.1 does); "
                    "the check runs where the newest numpy installs (Python >= 3.10)")
    stdout, stderr, status = mypy.run(["--config-file", str(REPO / "pyproject.toml"), "--strict", "--no-incremental",
                                       str(REPO / "src" / "nemotron_cpp")])
    assert status == 0, stdout + stderr
