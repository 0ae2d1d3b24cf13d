"""``Endpointing(reset_decoder=True)``: the prediction network starts over at each endpoint.

The rule runs in the engine's greedy decoder frame by frame; these tests check it against the numpy
reference decoder given the same encoder output, check that it does not depend on how the audio is
split, and that it changes nothing before the first endpoint (where NeMo's decoding and the engine's
agree token for token).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile

from nemotron_cpp import Endpointing, NemotronModel, _lib, testing
from nemotron_cpp.demo import demo_model_path

REFERENCE = Path(__file__).parent / "reference" / "demo"
RESET = Endpointing(reset_decoder=True)


@pytest.fixture(scope="module")
def model() -> NemotronModel:
    return NemotronModel(demo_model_path(log=False), n_threads=1)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    """Forty held-out commands by as many voices, 0.6 s apart: a stream with many endpoints."""
    clips = json.loads((REFERENCE / "manifest.json").read_text(encoding="utf-8"))["clips"][:40]
    gap = np.zeros(9600, np.float32)
    return np.concatenate([x for c in clips for x in (soundfile.read(REFERENCE / c["file"], dtype="float32")[0], gap)])


def _weights(model: NemotronModel) -> Dict[str, np.ndarray]:
    return {t.name: model.get_tensor(t.name) for t in model.tensors if t.name.startswith(("decoder.", "joint."))}


def _stream(model: NemotronModel, audio: np.ndarray, endpointing: Endpointing, piece: int) -> List[int]:
    with model.stream(160, endpointing=endpointing) as s:
        for i in range(0, audio.size, piece):
            s.feed(audio[i:i + piece])
        s.finalize()
        return s.tokens.tolist()


def test_reset_follows_the_reference_decoder(model: NemotronModel, audio: np.ndarray) -> None:
    w = _weights(model)
    rule = RESET.frames(model.frame_seconds)
    decoded = {}
    for endpointing, reset in ((Endpointing(), (0, 0)), (RESET, rule)):
        with model.stream(160, endpointing=endpointing, keep_encoder_output=True) as s:
            s.feed(audio)
            s.finalize()
            ours = s.tokens.tolist()
            theirs = testing.greedy_decode(w, s.encoder_output, model.hparams.max_symbols_per_step, reset)
        assert ours == theirs, reset
        decoded[reset] = ours
    # On this stream the rule fires and changes the decoding (else the comparison proves nothing).
    assert decoded[(0, 0)] != decoded[rule]


def test_reset_does_not_depend_on_the_pieces(model: NemotronModel, audio: np.ndarray) -> None:
    whole = _stream(model, audio, RESET, audio.size)
    assert _stream(model, audio, RESET, 1000) == whole
    assert _stream(model, audio, RESET, 37_000) == whole


def test_nothing_changes_before_the_first_endpoint(model: NemotronModel, audio: np.ndarray) -> None:
    with model.stream(160, endpointing=Endpointing()) as s:
        s.feed(audio)
        s.finalize()
        n = len(s.segments[0].tokens)
    plain = _stream(model, audio, Endpointing(), audio.size)
    reset = _stream(model, audio, RESET, audio.size)
    assert reset[:n] == plain[:n]


def test_rule_in_frames() -> None:
    # 0.8 s of silence is 10 frames of 80 ms; 0.3 s of utterance needs 4 frames (3 last 0.24 s).
    assert Endpointing().frames(0.08) == (10, 4)
    assert Endpointing(silence=0.81, min_utterance=0).frames(0.08) == (11, 0)
    with pytest.raises(TypeError, match="reset_decoder must be True or False"):
        Endpointing(reset_decoder="yes")  # type: ignore[arg-type]


def test_engine_refuses_negative_frames(model: NemotronModel) -> None:
    with pytest.raises(ValueError, match="endpoint_reset_silence_frames \\(-1\\) .* must be >= 0"):
        _lib.stream_init(model._handle, -1, "stream", False, False, (-1, 0))


def test_command_line_flag(model: NemotronModel, audio: np.ndarray, tmp_path: Path) -> None:
    wav = tmp_path / "forty.wav"
    soundfile.write(wav, audio, 16000, subtype="FLOAT")
    out = subprocess.run([sys.executable, "-m", "nemotron_cpp", "transcribe", str(wav), "-m", str(model.path), "--threads", "1",
                          "--latency", "160", "-f", "json", "--reset-decoder"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    ids = [k["id"] for k in json.loads(out.stdout)["tokens"]]
    with_reset = [k.id for k in model.transcribe(audio, latency_ms=160, endpointing=RESET).tokens]
    without = [k.id for k in model.transcribe(audio, latency_ms=160, endpointing=Endpointing()).tokens]
    assert ids == with_reset != without
