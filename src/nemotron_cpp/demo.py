"""The demo model and sample recording that ship inside the package.

The demo model is a small cache-aware FastConformer RNN-T of the same family as
nemotron-speech-streaming-en-0.6b (the same encoder structure and all four latency modes, far
fewer and narrower layers), trained by ``scripts/train_demo_model.py`` with NVIDIA NeMo on speech
synthesized by espeak-ng, and converted to q8_0 by this package's converter. It knows only the
narrow domain it was trained on (``DEMO_DOMAIN``, about 170 words): it is there so that the
package works out of the box and so that tests can check recognition of real words end to end,
not to transcribe general English.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import soxr

from .hub import RECOMMENDED_MODEL

__all__ = ["DEMO_DOMAIN", "LONG_STREAM_GAP", "DemoModelWarning", "demo_model_path", "demo_sample", "long_stream",
           "telephone", "word_error_rate"]

_DATA = Path(__file__).parent / "data"

#: What the demo model was trained to recognize.
DEMO_DOMAIN = ("smart-home voice commands: timers, alarms and clock times, lights, fans and heaters by room, "
               "temperatures, music and volume, doors and blinds, phone numbers read digit by digit, "
               "a shopping list")


class DemoModelWarning(UserWarning):
    """No model file was given, so the built-in demo model is used: it knows only ``DEMO_DOMAIN``.
    Silence it with ``warnings.filterwarnings("ignore", category=nemotron_cpp.DemoModelWarning)``."""


def demo_model_path(log: bool = True) -> Path:
    """The demo model's GGUF file; with ``log`` a :class:`DemoModelWarning` says that this model is the
    demo one (a warning, not a log record, so that it shows without logging set up and one filter
    silences it)."""
    path = _DATA / "demo.q8_0.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"the demo model is not installed ({path} is missing); pass a model file")
    if log:
        # stacklevel 3: the line that called NemotronModel() without a path.
        english = RECOMMENDED_MODEL.name
        warnings.warn(DemoModelWarning(
            f"no model file given: using the built-in demo model ({path.name}), which knows only "
            f"{DEMO_DOMAIN.split(':')[0]}. For general English, NemotronModel({english!r}) fetches NVIDIA's "
            f"model ({RECOMMENDED_MODEL.size / 1e6:.0f} MB, once; `nemotron-cpp download {english}` does the "
            f"same): see \"Getting the model\" in README."), stacklevel=3)
    return path


def word_error_rate(references: "list[str]", hypotheses: "list[str]") -> float:
    """WER in percent: word-level edit distance summed over the pairs, over the reference words (the
    scoring of the demo model's accuracy figures and tests; text compared as it is, split on spaces)."""
    errors = words = 0
    for ref, hyp in zip(references, hypotheses):
        r, h = ref.split(), hyp.split()
        row = list(range(len(h) + 1))
        for i in range(1, len(r) + 1):
            prev, row[0] = row[0], i
            for j in range(1, len(h) + 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
        errors, words = errors + row[len(h)], words + len(r)
    return 100.0 * errors / words


def demo_sample() -> "tuple[Path, str]":
    """The bundled recording (spoken by a voice the demo model was not trained on) and its text."""
    audio = _DATA / "demo-sample.flac"
    if not audio.is_file():
        raise FileNotFoundError(f"the demo sample is not installed ({audio} is missing)")
    return audio, (_DATA / "demo-sample.txt").read_text(encoding="utf-8").strip()


# ---- what the accuracy figures are measured on ----------------------------------------------

#: Seconds of silence after each clip of :func:`long_stream`: the 200 held-out clips (480 s) make a
#: ten-minute stream.
LONG_STREAM_GAP = 0.6


def long_stream(clips: Sequence[np.ndarray], sample_rate: int = 16000, gap: float = LONG_STREAM_GAP) -> np.ndarray:
    """The clips one after another, each followed by ``gap`` seconds of silence: one long recording
    of many speakers, as a live stream of a room or a phone line hears them."""
    silence = np.zeros(int(round(gap * sample_rate)), np.float32)
    return np.concatenate([piece for clip in clips for piece in (np.asarray(clip, np.float32), silence)])


def telephone(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """``audio`` as a telephone line delivers it: 8 kHz, mu-law coded with 8 bits per sample (mu 255,
    G.711's curve without its segment approximation). Float32 at 8 kHz."""
    mu = 255.0
    narrow = np.clip(soxr.resample(np.asarray(audio, np.float32), sample_rate, 8000, quality="HQ"), -1.0, 1.0)
    code = np.round(np.sign(narrow) * np.log1p(mu * np.abs(narrow)) / np.log1p(mu) * 127) / 127
    decoded: np.ndarray = (np.sign(code) * np.expm1(np.abs(code) * np.log1p(mu)) / mu).astype(np.float32)
    return decoded
