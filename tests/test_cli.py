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


# ---- recognition: transcribe, stream, bench -----------------------------------------------------

REFERENCE = Path(__file__).parent / "reference" / "tiny"


@pytest.fixture(scope="module")
def tiny(fixtures_dir: Path) -> Path:
    return fixtures_dir / "layout-a-tiny.f32.gguf"


@pytest.fixture(scope="module")
def two_files(tmp_path_factory: pytest.TempPathFactory) -> List[Path]:
    """A 48 kHz stereo FLAC and a 16 kHz WAV."""
    import numpy as np
    import soundfile
    import soxr

    out = tmp_path_factory.mktemp("audio")
    a, _ = soundfile.read(REFERENCE / "speech_a.wav", dtype="float32")
    b, _ = soundfile.read(REFERENCE / "speech_b.wav", dtype="float32")
    both = np.concatenate([a, np.zeros(16000, np.float32), b])
    stereo = soxr.resample(np.stack([both, both], axis=1), 16000, 48000)
    soundfile.write(out / "talk.flac", stereo, 48000)
    soundfile.write(out / "short.wav", b, 16000)
    return [out / "talk.flac", out / "short.wav"]


def expected_transcript(model_path: Path, audio: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    from nemotron_cpp import Endpointing, NemotronModel

    with NemotronModel(model_path, n_threads=1) as model:
        return model.transcribe(audio, endpointing=Endpointing(silence=0.24), **kwargs)


@pytest.mark.parametrize("fmt", ["text", "json", "srt", "vtt"])
def test_transcribe_formats(tiny: Path, two_files: List[Path], fmt: str) -> None:
    from nemotron_cpp.formats import format_transcript

    t = expected_transcript(tiny, two_files[0], latency_ms=160)
    assert len(t.segments) >= 2
    out = run(["transcribe", str(two_files[0]), "-m", str(tiny), "--threads", "1", "--latency", "160",
               "--silence", "0.24", "-f", fmt])
    assert out.returncode == 0, out.stderr
    if fmt == "json":
        data = json.loads(out.stdout)
        assert data["file"] == str(two_files[0]) and data["text"] == t.text and data["duration"] == t.duration
        assert [s["text"] for s in data["segments"]] == [s.text for s in t.segments]
        assert [(w["text"], w["start"], w["end"], w["confidence"]) for w in data["words"]] == \
            [(w.text, w.start, w.end, w.confidence) for w in t.words]
        assert [k["id"] for k in data["tokens"]] == [k.id for k in t.tokens]
        return
    assert out.stdout == format_transcript(t, fmt)
    lines = out.stdout.splitlines()
    if fmt == "text":
        assert lines == [s.text for s in t.segments]
    elif fmt == "srt":
        assert lines[:2] == ["1", f"00:00:{t.segments[0].start:06.3f} --> 00:00:{t.segments[0].end:06.3f}".replace(".", ",")]
        assert lines[2] == t.segments[0].text and lines[3] == "" and lines[4] == "2"
    else:
        assert lines[:3] == ["WEBVTT", "", f"00:00:{t.segments[0].start:06.3f} --> 00:00:{t.segments[0].end:06.3f}"]


def test_transcribe_several_files(tiny: Path, two_files: List[Path], tmp_path: Path) -> None:
    texts = [expected_transcript(tiny, f).text for f in two_files]
    out = run(["transcribe", *map(str, two_files), "-m", str(tiny), "--threads", "1", "--silence", "0.24",
               "--progress"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"==> {two_files[0]} <==\n") and f"==> {two_files[1]} <==\n" in out.stdout
    assert "".join(texts[0].split()) in "".join(out.stdout.split())
    assert "talk.flac [" in out.stderr and "100%" in out.stderr  # the progress bar
    out = run(["transcribe", *map(str, two_files), "-m", str(tiny), "-f", "json"])
    assert [d["file"] for d in json.loads(out.stdout)] == list(map(str, two_files))
    out = run(["transcribe", *map(str, two_files), "-m", str(tiny), "-f", "srt"])
    assert out.returncode == 1 and out.stderr == "nemotron-cpp: error: srt output of several files needs --output-dir\n"
    out = run(["transcribe", *map(str, two_files), "-m", str(tiny), "-f", "vtt", "-o", str(tmp_path / "subs")])
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "subs").iterdir()) == ["short.vtt", "talk.vtt"]
    assert (tmp_path / "subs" / "talk.vtt").read_text().startswith("WEBVTT\n\n00:00:")


def test_model_from_the_environment(tiny: Path, two_files: List[Path]) -> None:
    import os

    env = {**os.environ, "NEMOTRON_MODEL": str(tiny)}
    out = subprocess.run([sys.executable, "-m", "nemotron_cpp", "transcribe", str(two_files[1])], capture_output=True,
                         text=True, env=env, timeout=120)
    given = subprocess.run([sys.executable, "-m", "nemotron_cpp", "transcribe", "-m", str(tiny), str(two_files[1])],
                           capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() and out.stdout == given.stdout
    assert "demo" not in out.stderr  # without either: the demo model, see tests/test_demo.py


def test_stream_from_a_file_and_from_stdin(tiny: Path, two_files: List[Path]) -> None:
    import numpy as np

    from nemotron_cpp import Endpointing, NemotronModel, decode_audio

    audio = decode_audio(two_files[0])
    with NemotronModel(tiny, n_threads=1) as model:
        with model.stream(160, endpointing=Endpointing(silence=0.24)) as s:
            s.feed(audio)
            s.finalize()
            finals = [seg.text for seg in s.segments]
    assert len(finals) >= 2
    out = run(["stream", str(two_files[0]), "-m", str(tiny), "--threads", "1", "--silence", "0.24", "--no-pace"])
    assert out.returncode == 0, out.stderr
    # Not a terminal: no partials redrawn in place, one line per finished utterance.
    assert out.stdout.splitlines() == finals
    pcm = np.round(audio * 32767).astype("<i2").tobytes()
    with NemotronModel(tiny, n_threads=1) as model:
        with model.stream(160, endpointing=Endpointing(silence=0.24)) as s:
            s.feed(pcm)
            s.finalize()
            finals = [seg.text for seg in s.segments]
    out = subprocess.run([sys.executable, "-m", "nemotron_cpp", "stream", "-m", str(tiny), "--threads", "1",
                          "--silence", "0.24"], input=pcm, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == finals


def test_stream_paces_a_file_in_real_time(tiny: Path, two_files: List[Path]) -> None:
    import time

    start = time.monotonic()
    out = run(["stream", str(two_files[1]), "-m", str(tiny), "--threads", "1"])
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - start >= 3.8  # the file lasts 3.85 s


def test_bench(tiny: Path) -> None:
    out = run(["bench", "-m", str(tiny), "--threads", "1", "--seconds", "3", "--latency", "160", "--latency", "1120"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "f32, 2 layers x d_model 128; 3.0 s of audio; CPU, 1 threads" in lines[0]
    assert lines[2] == "| latency | RTF | chunk p50 | chunk p95 | first partial | tokens/s |"
    assert [line.split("|")[1].strip() for line in lines[4:]] == ["160 ms", "1120 ms"]


@pytest.mark.parametrize("command", ["transcribe", "stream", "bench", "info", "convert", "quantize"])
def test_help_reads_well(command: str) -> None:
    out = run([command, "--help"])
    assert out.returncode == 0 and out.stdout.startswith("usage: nemotron-cpp " + command)
    assert out.stderr == ""


def test_recognition_errors_are_one_line(tiny: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + bytes(60))
    low = tmp_path / "low.wav"
    import numpy as np
    import soundfile

    soundfile.write(low, np.zeros(4000, np.int16), 4000)
    for args, message in [
        (["transcribe", str(tmp_path / "none.wav")], f"no such audio file: {tmp_path / 'none.wav'}"),
        (["transcribe", str(bad)], f"cannot read {bad}: "),
        (["transcribe", str(low)], "the sample rate is 4000 Hz; speech recognition needs at least 8000 Hz"),
        (["transcribe", str(low), "--latency", "100"], "latency_ms must be a positive multiple of 80 ms"),
        (["stream", str(low), "--silence", "0"], "endpointing silence must be > 0 seconds"),
    ]:
        out = run([*args, "-m", str(tiny)])
        assert out.returncode == 1, args
        assert out.stderr.startswith(f"nemotron-cpp: error: {message}") and out.stderr.count("\n") == 1, out.stderr
