"""The demo model that ships in the package: real words on held-out voices, through the engine.

The model was trained by scripts/train_demo_model.py with NVIDIA NeMo on espeak-ng speech;
scripts/make_demo_assets.py converted it to q8_0, chose the bundled sample and wrote
tests/reference/demo/ (held-out clips spoken with voice variants training never used, and NeMo's
own greedy hypotheses and WER on the same audio for every att_context_size).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import warnings

import numpy as np
import pytest
import soundfile

import nemotron_cpp
from nemotron_cpp import DemoModelWarning, Endpointing, NemotronModel
from nemotron_cpp.demo import DEMO_DOMAIN, demo_model_path, demo_sample, long_stream, telephone, word_error_rate

REFERENCE = Path(__file__).parent / "reference" / "demo"
MANIFEST = json.loads((REFERENCE / "manifest.json").read_text(encoding="utf-8"))
# latency -> NeMo's att_context_size (right context = latency / 80 ms - 1)
CONTEXTS = {1120: "70_13", 560: "70_6", 160: "70_1", 80: "70_0"}
# The bars: WER on held-out voices at 1120 ms and 160 ms, and distance from NeMo's WER.
MAX_WER = {1120: 10.0, 160: 15.0}
MAX_WER_GAP = 0.5
# The long stream (the held-out clips one after another, ten minutes) and the same clips through a
# telephone line (8 kHz, mu-law): bars at every latency.
MAX_LONG_WER = 10.0
MAX_TELEPHONE_WER = 15.0


@pytest.fixture(scope="module")
def demo() -> NemotronModel:
    return NemotronModel(demo_model_path(log=False), n_threads=1)


@pytest.fixture(scope="module")
def clips() -> List[np.ndarray]:
    return [soundfile.read(REFERENCE / c["file"], dtype="float32")[0] for c in MANIFEST["clips"]]


@pytest.fixture(scope="module")
def hypotheses(demo: NemotronModel, clips: List[np.ndarray]) -> Dict[int, List[str]]:
    """The engine's text for every held-out clip at every latency (each clip one utterance)."""
    return {latency: [demo.transcribe(c, sample_rate=16000, latency_ms=latency, endpointing=False).text for c in clips]
            for latency in CONTEXTS}


def test_shipped_model_is_the_one_measured() -> None:
    import hashlib

    digest = hashlib.sha256(demo_model_path(log=False).read_bytes()).hexdigest()
    assert digest == MANIFEST["model"]["gguf_sha256"]


def test_default_model_is_the_demo_and_says_so() -> None:
    with pytest.warns(DemoModelWarning, match="using the built-in demo model") as caught:
        with NemotronModel(n_threads=1) as model:
            assert Path(model.path) == demo_model_path(log=False)
            assert model.weight_type == "q8_0"
            assert model.file_size < 20 * 1024 * 1024
    assert len(caught) == 1
    assert caught[0].filename == __file__  # it points at the line that asked for no model
    # README's one line silences it.
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    line = 'warnings.filterwarnings("ignore", category=nemotron_cpp.DemoModelWarning)'
    assert line in readme
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(line, {"warnings": warnings, "nemotron_cpp": nemotron_cpp})
        NemotronModel(n_threads=1).close()
    assert caught == []


@pytest.mark.parametrize("latency", [1120, 560, 160, 80])
def test_accuracy_on_held_out_voices(hypotheses: Dict[int, List[str]], latency: int) -> None:
    refs = [c["text"] for c in MANIFEST["clips"]]
    ours = word_error_rate(refs, hypotheses[latency])
    nemo = MANIFEST["nemo"][CONTEXTS[latency]]
    # NeMo's WER from its own hypotheses, recomputed here so both sides use the same scoring.
    theirs = word_error_rate(refs, nemo["hyps"])
    assert theirs == pytest.approx(nemo["wer"], abs=0.01)
    if latency in MAX_WER:
        assert ours <= MAX_WER[latency], f"WER {ours:.2f} % at {latency} ms"
    assert abs(ours - theirs) <= MAX_WER_GAP, f"WER {ours:.2f} % against NeMo's {theirs:.2f} % at {latency} ms"


def test_bundled_sample_transcribes_exactly(demo: NemotronModel) -> None:
    audio, text = demo_sample()
    commands = text.splitlines()
    for latency in (1120, 160):
        transcript = demo.transcribe(audio, latency_ms=latency)
        # The pauses between the commands end utterances: one segment per command.
        assert [s.text for s in transcript.segments] == commands, latency
    with demo.stream(160) as stream:
        finals = []
        samples, _ = soundfile.read(audio, dtype="float32")
        for i in range(0, len(samples), 2560):
            finals += [s.text for s in stream.feed(samples[i:i + 2560]).segments]
        finals += [s.text for s in stream.finalize().segments]
    assert finals == commands


def test_demo_command_streams_the_sample() -> None:
    _, text = demo_sample()
    out = subprocess.run([sys.executable, "-m", "nemotron_cpp", "demo", "--no-pace", "--threads", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == text.splitlines()
    assert "trained on synthetic speech" in out.stderr and f"expected: {' / '.join(text.splitlines())}" in out.stderr
    assert DEMO_DOMAIN.split(":")[0] in out.stderr
    quiet = subprocess.run([sys.executable, "-m", "nemotron_cpp", "demo", "--no-pace", "--threads", "1", "--quiet"],
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stdout == out.stdout and quiet.stderr == ""


def test_commands_fall_back_to_the_demo_model() -> None:
    audio, text = demo_sample()
    env = {k: v for k, v in os.environ.items() if k != "NEMOTRON_MODEL"}
    out = subprocess.run([sys.executable, "-m", "nemotron_cpp", "transcribe", str(audio), "--threads", "1"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == text.splitlines()
    assert "using the demo model" in out.stderr
    for command in (["transcribe", str(audio)], ["stream", "--no-pace", str(audio)], ["bench", "--seconds", "1"],
                    ["transcribe", "--progress", str(audio)]):
        quiet = subprocess.run([sys.executable, "-m", "nemotron_cpp", *command, "--threads", "1", "-q"],
                               capture_output=True, text=True, timeout=300, env=env)
        assert quiet.returncode == 0 and quiet.stdout and quiet.stderr == "", (command, quiet.stderr)
    # Errors still show.
    quiet = subprocess.run([sys.executable, "-m", "nemotron_cpp", "transcribe", "-q", "missing.wav"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 1 and quiet.stderr == "nemotron-cpp: error: no such audio file: missing.wav\n"


def test_sample_audio_is_what_the_manifest_says() -> None:
    audio, text = demo_sample()
    samples, rate = soundfile.read(audio, dtype="int16")
    assert rate == 16000 and samples.ndim == 1
    assert len(samples) / rate == pytest.approx(MANIFEST["sample"]["seconds"], abs=0.01)
    assert text.splitlines() == MANIFEST["sample"]["commands"]
    assert np.abs(samples).max() > 1000


@pytest.mark.parametrize("latency", [1120, 560, 160, 80])
def test_ten_minute_stream(demo: NemotronModel, clips: List[np.ndarray], latency: int) -> None:
    """The held-out clips as one ten-minute live stream, fed in half-second pieces: the WER stays
    within the bar and near NeMo's own streaming of the same audio, and the last minute is there."""
    audio = long_stream(clips)
    assert audio.size / 16000 == pytest.approx(MANIFEST["long_stream"]["seconds"], abs=0.01)
    assert audio.size / 16000 >= 590  # ten minutes, give or take the clips' lengths
    with demo.stream(latency) as stream:
        for i in range(0, audio.size, 8000):
            stream.feed(audio[i:i + 8000])
        stream.finalize()
        transcript = stream.transcript()
    refs = [c["text"] for c in MANIFEST["clips"]]
    ours = word_error_rate([" ".join(refs)], [transcript.text])
    nemo = MANIFEST["long_stream"]["nemo"][CONTEXTS[latency]]
    theirs = word_error_rate([" ".join(refs)], [nemo["text"]])
    assert theirs == pytest.approx(nemo["wer"], abs=0.01)
    assert ours <= MAX_LONG_WER, f"WER {ours:.2f} % on the ten-minute stream at {latency} ms"
    assert abs(ours - theirs) <= MAX_WER_GAP, f"WER {ours:.2f} % against NeMo's {theirs:.2f} % at {latency} ms"
    # The last minute: the commands that start in it against the words the stream put there.
    starts = np.cumsum([0] + [c.size + round(MANIFEST["long_stream"]["gap_seconds"] * 16000) for c in clips[:-1]]) / 16000
    cut = starts[starts >= audio.size / 16000 - 60][0]  # the first command to start in the last minute
    last_refs = " ".join(r for r, t in zip(refs, starts) if t >= cut)
    # Half the pause before that command: the words of the one before it end earlier.
    last_hyps = " ".join(w.text for w in transcript.words if w.start >= cut - 0.3)
    assert len(last_refs.split()) > 100
    assert word_error_rate([last_refs], [last_hyps]) <= MAX_LONG_WER, last_hyps


@pytest.mark.parametrize("latency", [1120, 560, 160, 80])
def test_telephone_audio(demo: NemotronModel, clips: List[np.ndarray], latency: int) -> None:
    """The held-out clips as a phone line delivers them (8 kHz, mu-law), given at 8 kHz."""
    refs = [c["text"] for c in MANIFEST["clips"]]
    hyps = [demo.transcribe(telephone(c), sample_rate=8000, latency_ms=latency, endpointing=False).text for c in clips]
    assert word_error_rate(refs, hyps) <= MAX_TELEPHONE_WER


def test_telephone_line() -> None:
    """telephone(): 8 kHz, at most 255 mu-law levels, and a 6 kHz tone filtered out before the rate
    drops (not folded to 2 kHz)."""
    t = np.arange(16000) / 16000
    wide = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    line = telephone(wide)
    assert line.dtype == np.float32 and line.size == 8000
    assert len(np.unique(line)) <= 255
    spectrum = np.abs(np.fft.rfft(line[1000:7000]))  # a bin every 4/3 Hz
    assert spectrum[round(2000 * 0.75)] < spectrum[round(440 * 0.75)] / 100


def test_endpoint_reset_on_the_long_stream(demo: NemotronModel, clips: List[np.ndarray]) -> None:
    """Endpointing(reset_decoder=True) decodes each utterance from the start state: on the long
    stream it stays within the bar too (what it changes against NeMo's decoding is measured in
    docs/demo-model.md)."""
    refs = [c["text"] for c in MANIFEST["clips"]]
    text = demo.transcribe(long_stream(clips), sample_rate=16000, latency_ms=160,
                           endpointing=Endpointing(reset_decoder=True)).text
    assert word_error_rate([" ".join(refs)], [text]) <= MAX_LONG_WER
