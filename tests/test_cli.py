"""The nemotron-cpp command line: info on models and on the system, errors as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest


def run(args: List[str], env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nemotron_cpp", *args], capture_output=True, text=True, timeout=120,
                          env=env)


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


def test_info_takes_the_model_as_every_command_does(fixtures_dir: Path) -> None:
    model = str(fixtures_dir / "layout-b-tiny.q8_0.gguf")
    positional, flag, long_flag = run(["info", model]), run(["info", "-m", model]), run(["info", "--model", model])
    assert flag.returncode == 0, flag.stderr
    assert flag.stdout == positional.stdout == long_flag.stdout and "layout       asr" in flag.stdout
    both = run(["info", model, "-m", model])
    assert both.returncode == 1 and both.stderr == "nemotron-cpp: error: give the model once: as MODEL or with --model\n"


def test_info_system() -> None:
    out = run(["info"])
    assert out.returncode == 0
    assert "ggml 0.15.3" in out.stdout and "backends: CPU" in out.stdout
    info = json.loads(run(["info", "--json"]).stdout)
    assert info["ggml_version"] == "0.15.3" and "CPU" in info["backends"]


@pytest.mark.parametrize("content,expected", [
    (None, "model.gguf: no such file"),
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
    assert out.returncode == 2 and "error: argument --backend: must be auto, cpu, gpu, gpu:N or rpc://HOST:PORT, not tpu" in out.stderr


@pytest.mark.parametrize("args,message", [
    (["transcribe", "a.wav", "--threads", "0"], "argument --threads: must be a positive integer, not 0"),
    (["info", "--threads", "two"], "argument --threads: must be a positive integer, not two"),
    (["rpc-server", "--port", "0"], "argument --port: must be a port number from 1 to 65535, not 0"),
    (["rpc-server", "--backend", "rpc://host:1"], "argument --backend: must be auto, cpu, gpu or gpu:N, not rpc://host:1"),
    (["stream", "--rate", "1000000000"], "argument --rate: must be a sample rate from 8000 to 768000 Hz, not 1000000000"),
    (["transcribe", "-", "--rate", "4000"], "argument --rate: must be a sample rate from 8000 to 768000 Hz, not 4000"),
    (["stream", "--silence", "0"], "argument --silence: must be a number of seconds > 0, not 0"),
    (["transcribe", "a.wav", "--min-utterance", "-1"], "argument --min-utterance: must be a number of seconds >= 0, not -1"),
    (["bench", "--latency", "0"], "argument --latency: must be a positive number of milliseconds, not 0"),
    (["bench", "--seconds", "nan"], "argument --seconds: must be a number of seconds > 0, not nan"),
])
def test_bad_values_are_named_by_their_flag(args: List[str], message: str) -> None:
    out = run(args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines()[-1] == f"nemotron-cpp {args[0]}: error: {message}", out.stderr


def test_missing_model_files_are_named_by_where_they_came_from(tmp_path: Path) -> None:
    env = {**os.environ, "NEMOTRON_MODEL": "nope.gguf"}
    for args, message in [
        (["transcribe", "a.wav"], "$NEMOTRON_MODEL names nope.gguf, which does not exist"),
        (["stream", "-m", "gone.gguf"], "--model gone.gguf: no such file"),
        (["info", "-m", "gone.gguf"], "--model gone.gguf: no such file"),
        (["bench", "--model", "gone.gguf"], "--model gone.gguf: no such file"),
    ]:
        out = run(args, env=env)
        assert out.returncode == 1 and out.stderr == f"nemotron-cpp: error: {message}\n", out.stderr


@pytest.mark.parametrize("args", [["info"], ["info", "--json"], ["info", "--json", "--vocab", "MODEL"],
                                  ["transcribe", "-m", "MODEL", "AUDIO"], ["stream", "-m", "MODEL", "--no-pace", "AUDIO"]])
def test_a_closed_pipe_ends_quietly(fixtures_dir: Path, args: List[str]) -> None:
    """``nemotron-cpp info --json | head``: the reader went away, so the command stops, as Unix tools do,
    with the status of death by SIGPIPE and nothing on stderr. The pipe is closed before the command
    writes, so the test does not depend on how much a pipe buffers."""
    names = {"MODEL": str(fixtures_dir / "layout-a-tiny.f32.gguf"), "AUDIO": str(REFERENCE / "speech_a.wav")}
    read, write = os.pipe()
    os.close(read)
    try:
        out = subprocess.run([sys.executable, "-m", "nemotron_cpp", *[names.get(a, a) for a in args]], stdout=write,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert (out.returncode, out.stderr) == (141, "")


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


def test_one_bad_file_does_not_stop_the_others(tiny: Path, two_files: List[Path], tmp_path: Path) -> None:
    missing = tmp_path / "missing.wav"
    silent = tmp_path / "silent.wav"
    import numpy as np
    import soundfile

    soundfile.write(silent, np.zeros(4000, np.int16), 4000)
    files = [str(two_files[0]), str(missing), str(silent), str(two_files[1])]
    alone = [run(["transcribe", f, "-m", str(tiny)]).stdout for f in (files[0], files[3])]
    out = run(["transcribe", *files, "-m", str(tiny)])
    assert out.returncode == 1
    assert out.stdout == f"==> {files[0]} <==\n{alone[0]}==> {files[3]} <==\n{alone[1]}"
    assert out.stderr.splitlines() == [
        f"nemotron-cpp: error: no such audio file: {missing}",
        f"nemotron-cpp: error: {silent}: the sample rate is 4000 Hz; speech recognition needs at least 8000 Hz "
        f"(accepted: 8000 to 768000 Hz)",
    ]
    out = run(["transcribe", *files, "-m", str(tiny), "-f", "json"])
    assert out.returncode == 1
    entries = json.loads(out.stdout)
    assert [e["file"] for e in entries] == files
    assert [e.get("error") for e in entries] == [None, f"no such audio file: {missing}", out.stderr.splitlines()[1][21:],
                                                 None]
    assert entries[0]["text"] and "text" not in entries[1]
    one = run(["transcribe", str(missing), "-m", str(tiny), "-f", "json"])
    assert one.returncode == 1 and json.loads(one.stdout) == {"file": str(missing),
                                                               "error": f"no such audio file: {missing}"}
    out = run(["transcribe", *files, "-m", str(tiny), "-o", str(tmp_path / "out")])
    assert out.returncode == 1 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["short.txt", "talk.txt"]


def test_transcribe_reads_stdin(tiny: Path, two_files: List[Path], tmp_path: Path) -> None:
    """``-``: an audio file of any format, or raw PCM at --rate."""
    import numpy as np
    import soundfile
    import soxr

    expected = run(["transcribe", str(two_files[0]), "-m", str(tiny), "-f", "json"])
    assert expected.returncode == 0

    def from_stdin(data: bytes, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nemotron_cpp", "transcribe", "-", "-m", str(tiny), *args],
                              input=data, capture_output=True, timeout=120)

    piped = from_stdin(two_files[0].read_bytes(), "-f", "json")  # a 48 kHz stereo FLAC
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout) == {**json.loads(expected.stdout), "file": "-"}
    audio, rate = soundfile.read(two_files[1], dtype="int16")
    text = run(["transcribe", str(two_files[1]), "-m", str(tiny)]).stdout
    assert text.strip()
    assert from_stdin(two_files[1].read_bytes()).stdout.decode() == text  # a WAV
    assert from_stdin(audio.astype("<i2").tobytes()).stdout.decode() == text  # raw PCM at 16 kHz
    at_8k = np.round(soxr.resample(audio.astype(np.float32), rate, 8000)).astype(np.int16)
    soundfile.write(tmp_path / "8k.wav", at_8k, 8000)
    with_rate = from_stdin(at_8k.astype("<i2").tobytes(), "--rate", "8000")
    assert with_rate.returncode == 0 and with_rate.stdout.decode() == run(["transcribe", str(tmp_path / "8k.wav"),
                                                                            "-m", str(tiny)]).stdout
    empty = from_stdin(b"")
    assert empty.returncode == 1 and empty.stderr.decode() == "nemotron-cpp: error: stdin: the audio is empty\n"


def test_stream_reads_a_wav_from_stdin_by_its_header(tiny: Path, two_files: List[Path], tmp_path: Path) -> None:
    """A WAV on stdin (arecord writes WAV unless told ``-t raw``) is streamed with its header's rate,
    channels and sample format, as it arrives, not fed to the model as raw PCM header and all."""
    import io

    import soundfile

    file = run(["stream", str(two_files[0]), "-m", str(tiny), "--silence", "0.24", "--no-pace"])
    assert file.returncode == 0 and file.stdout.strip()
    audio, rate = soundfile.read(two_files[0], dtype="float32")  # 48 kHz stereo
    for subtype in ("PCM_16", "FLOAT"):
        buffer = io.BytesIO()
        soundfile.write(buffer, audio, rate, format="WAV", subtype=subtype)
        wav = bytearray(buffer.getvalue())
        for data_size in (None, 0xFFFFFFFF):  # as written to a file, and as streamed by a tool that cannot seek
            if data_size is not None:
                at = wav.index(b"data") + 4
                wav[at:at + 4] = data_size.to_bytes(4, "little")
            out = subprocess.run([sys.executable, "-m", "nemotron_cpp", "stream", "-m", str(tiny), "--silence", "0.24"],
                                 input=bytes(wav), capture_output=True, text=False, timeout=120)
            assert out.returncode == 0, out.stderr
            assert out.stdout.decode() == file.stdout, (subtype, data_size)
    flac = subprocess.run([sys.executable, "-m", "nemotron_cpp", "stream", "-m", str(tiny), "--silence", "0.24"],
                          input=two_files[0].read_bytes(), capture_output=True, timeout=120)
    assert flac.returncode == 0 and flac.stdout.decode() == file.stdout


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
    assert "f32, 2 layers x d_model 128; 3.0 s of audio; CPU, 1 thread;" in lines[0]
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
        (["transcribe", str(low)], f"{low}: the sample rate is 4000 Hz; speech recognition needs at least 8000 Hz"),
        (["transcribe", str(low), "--latency", "100"], "--latency must be a positive multiple of 80 ms, not 100; this model "
                                                       "was trained for 1120, 560, 160, 80 ms"),
        (["stream", str(low), "--latency", "120"], "--latency must be a positive multiple of 80 ms, not 120"),
    ]:
        out = run([*args, "-m", str(tiny)])
        assert out.returncode == 1, args
        assert out.stderr.startswith(f"nemotron-cpp: error: {message}") and out.stderr.count("\n") == 1, out.stderr
