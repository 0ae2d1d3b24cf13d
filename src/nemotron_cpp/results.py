"""Recognition results: plain frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

__all__ = ["Token", "Transcript"]


@dataclass(frozen=True)
class Token:
    """One emitted token: its id, its piece as text, and the encoder frame that emitted it.

    ``start`` and ``end`` are the seconds the frame covers in the audio.
    """

    id: int
    text: str
    frame: int
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    """The result of :meth:`NemotronModel.transcribe`."""

    text: str
    tokens: Tuple[Token, ...]
    duration: float  #: seconds of audio
