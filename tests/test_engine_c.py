"""The engine on its own, without Python: built as the standalone CMake project it is, with its
command-line programs, its C-level tests and a short run of its GGUF loader fuzzer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import soundfile

import nemotron_cpp
from nemotron_cpp import NemotronModel, testing
from nemotron_cpp.demo import demo_model_path, demo_sample

pytestmark = pytest.mark.build  # every test here uses the CMake build of the engine

REPO = Path(__file__).resolve().parents[1]
SITE = Path(nemotron_cpp.__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is needed for this test (it is in the test extra)")
    return str(path)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("engine")
    q4_0 = testing.write_model(folder / "tiny.q4_0.gguf", weight_type="q4_0")
    seeds = [testing.write_model(folder / "tiny.f32.gguf"), q4_0,
             fixtures_dir / "layout-a-tiny.q8_0.gguf", fixtures_dir / "layout-b-tiny.q8_0.gguf"]
    subprocess.run([_tool("cmake"), "-S", str(REPO / "vendor" / "nemotron-asr.cpp"), "-B", str(folder / "build"),
                    "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}",
                    f"-Dggml_DIR={SITE / 'lib' / 'cmake' / 'ggml'}", "-DNEMOTRON_ASR_BUILD_TESTS=ON",
                    f"-DNEMOTRON_ASR_TEST_MODEL={q4_0}", f"-DNEMOTRON_ASR_FUZZ_SEEDS={';'.join(map(str, seeds))}",
                    "-DNEMOTRON_ASR_FUZZ_CASES=300"],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([_tool("cmake"), "--build", str(folder / "build")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return folder / "build"


def test_c_level_tests_pass(build: Path) -> None:
    out = subprocess.run([_tool("ctest"), "--output-on-failure"], cwd=build, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:]
    assert "100% tests passed" in out.stdout and "out of 2" in out.stdout  # the engine tests and the fuzzer


def test_info_tool(build: Path, fixtures_dir: Path, tmp_path: Path) -> None:
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
    assert "ggml 0.15.3" in out.stdout and "backends: CPU" in out.stdout and "usable cores: " in out.stdout


def transcribe_c(build: Path, *args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([str(build / "nemotron-transcribe"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("latency", [None, 160])
@pytest.mark.parametrize("subtype,channels", [("PCM_16", 1), ("FLOAT", 2)])
def test_c_example_transcribes_as_python_does(build: Path, tmp_path: Path, latency: int, subtype: str,
                                              channels: int) -> None:
    audio, expected = demo_sample()
    samples, rate = soundfile.read(audio, dtype="float32")
    assert rate == 16000
    wav = tmp_path / "sample.wav"
    soundfile.write(wav, np.stack([samples] * channels, axis=1), rate, subtype=subtype)
    model = demo_model_path(log=False)
    args: List[str] = ["--latency", str(latency)] if latency else []
    out = transcribe_c(build, *args, str(model), str(wav))
    assert out.returncode == 0, out.stderr
    with NemotronModel(model) as python:
        text = python.transcribe(wav, latency_ms=latency).text
    assert out.stdout == text + "\n"
    assert text == " ".join(expected.splitlines())  # the sample's three commands, word for word


def test_c_example_refuses_what_it_cannot_read(build: Path, tmp_path: Path) -> None:
    model = str(demo_model_path(log=False))
    wav8k = tmp_path / "8k.wav"
    soundfile.write(wav8k, np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    out = transcribe_c(build, model, str(wav8k))
    assert out.returncode == 1 and "is 8000 Hz; the model takes 16000 Hz audio" in out.stderr
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    out = transcribe_c(build, model, str(text))
    assert out.returncode == 1 and "is not a WAV file" in out.stderr
    pcm24 = tmp_path / "24bit.wav"
    soundfile.write(pcm24, np.zeros(1600, np.float32), 16000, subtype="PCM_24")
    out = transcribe_c(build, model, str(pcm24))
    assert out.returncode == 1 and "only 16-bit PCM and 32-bit float WAV files are read (format 1, 24 bits)" in out.stderr
    wav = tmp_path / "16k.wav"
    soundfile.write(wav, np.zeros(1600, np.float32), 16000, subtype="PCM_16")
    out = transcribe_c(build, "--latency", "100", model, str(wav))
    assert out.returncode == 2 and "--latency must be a positive multiple of 80 ms, not 100" in out.stderr
    out = transcribe_c(build, str(tmp_path / "missing.gguf"), str(wav))
    assert out.returncode == 1 and "missing.gguf" in out.stderr


def test_c_detokenize_matches_python(tmp_path: Path) -> None:
    """The C API's nemotron_context_detokenize (the text a C program prints) and the package's detokenize."""
    from nemotron_cpp import _lib, detokenize

    pieces = testing.vocab_pieces(128, seed=5)
    pieces[10:16] = ["<0xE2>", "<0x82>", "<0xAC>", "<0x41>", "<0xzz>", "\u2581\u2581x"]  # bytes of "€", "A"
    with NemotronModel(testing.write_model(tmp_path / "m.gguf", vocab=pieces, legacy_vocab=False)) as model:
        assert list(model.vocabulary) == pieces
        rng = np.random.default_rng(0)
        for n in range(200):
            ids = rng.integers(-2, 131, size=n % 40).tolist()  # the blank (128) and ids out of range too
            assert _lib.detokenize(model._handle.live(), ids).decode("utf-8", errors="replace") == detokenize(pieces, ids)
        assert _lib.detokenize(model._handle.live(), [11 - 1, 11, 12]) == "€".encode()


def test_header_usage_example_compiles_and_transcribes(build: Path, tmp_path: Path) -> None:
    """The 15-line example at the top of the header, as written, in a program: it gives the text
    the package gives for the same stream."""
    header = REPO / "vendor" / "nemotron-asr.cpp" / "include" / "nemotron-asr.h"
    lines = header.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(" * Usage")) + 2
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(" * Conventions")) - 1
    example = "\n".join(line[len(" *     "):] for line in lines[start:end])
    assert 14 <= len(lines[start:end]) <= 16 and "nemotron_context_detokenize" in example
    program = tmp_path / "example.c"
    program.write_text(
        '#include "nemotron-asr.h"\n#include <stdio.h>\n\nint main(void) {\n'
        '    static float samples[16000 * 30];\n'
        '    FILE * f = fopen("samples.f32", "rb");\n'
        '    size_t n_samples = fread(samples, sizeof(float), sizeof samples / sizeof(float), f);\n'
        f'    fclose(f);\n{example}\n    return 0;\n}}\n')
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler is not None
    out = subprocess.run([compiler, "-std=c11", "-Wall", "-Werror", "-o", str(tmp_path / "example"), str(program),
                          f"-I{header.parent}", f"-L{build}", "-lnemotron-asr", f"-Wl,-rpath,{build}",
                          f"-Wl,-rpath,{SITE / 'lib'}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    audio, _ = demo_sample()
    samples, _ = soundfile.read(audio, dtype="float32")
    samples.tofile(tmp_path / "samples.f32")
    (tmp_path / "model.gguf").symlink_to(demo_model_path(log=False))
    out = subprocess.run([str(tmp_path / "example")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with NemotronModel(tmp_path / "model.gguf") as model, model.stream(endpointing=False) as stream:
        stream.feed(samples)
        text = stream.finalize().text
    assert text and out.stdout == text + "\n"
