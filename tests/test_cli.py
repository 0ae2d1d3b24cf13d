"""The nemotron-cpp command line: info on models and on the system, errors as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest


def run(args: List[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nemotron_cpp", *args], capture_output=True, text=True, timeout=120)


def test_info_text(fixtures_dir: Path) -> None:
    out = run(["info", str(fixtures_dir / "layout-b-tiny.q8_0.gguf")])
    assert out.returncode == 0, out.stderr
    assert "layout       asr (NVIDIA NeMo-Speech.cpp)" in out.stdout
    assert "weights      q8_0" in out.stdout
    assert "encoder      2 conformer layers, d_model 128, 4 heads" in out.stdout
    assert "streaming    left context 70, right contexts 13, 6, 1, 0" in out.stdout


def test_info_json_with_vocabulary(fixtures_dir: Path) -> None:
    out = run(["info", "--json", "--vocab", "--threads", "1", str(fixtures_dir / "layout-a-tiny.f32.gguf")])
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["layout"] == "nemo" and info["weight_type"] == "f32" and info["n_threads"] == 1
    assert info["hparams"]["att_right_contexts"] == [13, 6, 1, 0]
    assert info["vocabulary"][:2] == ["<unk>", "\u2581t"] and len(info["vocabulary"]) == 128
    assert [g["name"] for g in info["tensor_groups"]][:3] == ["subsampling", "attention", "feed_forward"]


def test_info_system() -> None:
    out = run(["info"])
    assert out.returncode == 0
    assert "ggml 0.15.3" in out.stdout and "backends: CPU" in out.stdout
    info = json.loads(run(["info", "--json"]).stdout)
    assert info["ggml_version"] == "0.15.3" and "CPU" in info["backends"]


@pytest.mark.parametrize("content,expected", [
    (None, "No such file or directory"),
    (b"not a model", "is not a GGUF file"),
])
def test_errors_are_one_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    out = run(["info", str(path)])
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nemotron-cpp: error: ") and expected in lines[0], out.stderr


def test_usage_errors() -> None:
    assert run([]).returncode == 2
    out = run(["info", "--backend", "tpu", "x.gguf"])
    assert out.returncode == 1 and "backend must be" in out.stderr
