"""Streams: cache-aware recognition of audio that arrives in pieces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Tuple

import numpy as np

from . import _lib
from .text import piece_bytes, text_from_bytes

if TYPE_CHECKING:  # pragma: no cover
    from .model import NemotronModel

__all__ = ["Stream", "StreamUpdate", "CHUNKINGS"]

#: ``"stream"``: NeMo's cache-aware streaming; ``"stream_padded"``: NeMo's
#: ``pad_and_drop_preencoded=True`` (what the nemotron-asr.cpp port computes);
#: ``"offline"``: NeMo's full-utterance path, computed chunk by chunk.
CHUNKINGS = ("stream", "stream_padded", "offline")


@dataclass(frozen=True)
class StreamUpdate:
    """What one ``feed`` or ``finalize`` added."""

    new_tokens: Tuple[int, ...]
    new_text: str
    text: str  #: everything recognized so far


class Stream:
    """One utterance or live feed on a model; it owns its caches and decoder state.

    Made by :meth:`NemotronModel.stream`. ``feed`` takes mono float samples at the model's
    sample rate in pieces of any size; the results do not depend on how the audio is split.
    """

    def __init__(
        self,
        model: "NemotronModel",
        *,
        att_right_context: Optional[int] = None,
        chunking: str = "stream",
        keep_encoder_output: bool = False,
        keep_trace: bool = False,
    ) -> None:
        if chunking not in CHUNKINGS:
            raise ValueError(f"chunking must be one of {CHUNKINGS}, not {chunking!r}")
        if att_right_context is not None and att_right_context < 0:
            raise ValueError(f"att_right_context must be >= 0, not {att_right_context}")
        self._model = model
        self._handle: Any = _lib.stream_init(
            model._live(), -1 if att_right_context is None else att_right_context, chunking, keep_encoder_output,
            keep_trace,
        )
        self.chunking = chunking
        self.att_right_context = _lib.stream_right_context(self._handle)
        self._n_reported = 0
        self._bytes = bytearray()  # the pieces reported so far, joined
        self._text = ""

    def feed(self, samples: np.ndarray) -> StreamUpdate:
        """Adds audio (float in [-1, 1) or int16, mono, at the model's sample rate) and runs
        every chunk that is complete."""
        _lib.stream_feed(self._handle, as_samples(samples))
        return self._update()

    def finalize(self) -> StreamUpdate:
        """Ends the audio: runs what remains, as NeMo does at the end of a stream."""
        _lib.stream_finish(self._handle)
        return self._update()

    def reset(self) -> None:
        """Starts over with empty caches and no results."""
        _lib.stream_reset(self._handle)
        self._n_reported = 0
        self._bytes = bytearray()
        self._text = ""

    def close(self) -> None:
        """Frees the stream now rather than when it is garbage-collected."""
        if self._handle is not None:
            _lib.free(self._handle)
            self._handle = None

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _update(self) -> StreamUpdate:
        if _lib.stream_n_tokens(self._handle) == self._n_reported:
            return StreamUpdate(new_tokens=(), new_text="", text=self._text)
        ids, _ = _lib.stream_tokens(self._handle)
        new = tuple(int(i) for i in ids[self._n_reported:])
        self._n_reported = len(ids)
        self._bytes += piece_bytes(self._model.vocabulary, new)
        text = text_from_bytes(bytes(self._bytes))
        new_text = text[len(self._text):] if text.startswith(self._text) else text
        self._text = text
        return StreamUpdate(new_tokens=new, new_text=new_text, text=text)

    @property
    def tokens(self) -> np.ndarray:
        """Every token id emitted so far."""
        return _lib.stream_tokens(self._handle)[0]

    @property
    def token_frames(self) -> np.ndarray:
        """The encoder frame at which each token was emitted."""
        return _lib.stream_tokens(self._handle)[1]

    @property
    def text(self) -> str:
        """The text so far."""
        return text_from_bytes(piece_bytes(self._model.vocabulary, self.tokens.tolist()))

    @property
    def n_frames(self) -> int:
        """Encoder frames computed so far."""
        return _lib.stream_n_frames(self._handle)

    @property
    def encoder_output(self) -> np.ndarray:
        """Every encoder frame so far, ``[frames, d_model]`` (needs ``keep_encoder_output``)."""
        return _lib.stream_encoder_output(self._handle, self._model.hparams.d_model)[0]

    @property
    def chunk_ends(self) -> np.ndarray:
        """The encoder frame count after each chunk (needs ``keep_encoder_output``)."""
        return _lib.stream_encoder_output(self._handle, self._model.hparams.d_model)[1]

    @property
    def trace(self) -> np.ndarray:
        """Every joint step: fields ``frame``, ``token`` (the argmax, blank included) and
        ``margin`` (top-1 minus top-2 logit) (needs ``keep_trace``)."""
        return _lib.stream_trace(self._handle)


def as_samples(samples: np.ndarray) -> np.ndarray:
    """Mono audio as contiguous float32 in [-1, 1): float arrays as they are, int16 scaled."""
    audio = np.asarray(samples)
    if audio.ndim != 1:
        raise ValueError(f"samples must be one-dimensional (mono), not of shape {audio.shape}")
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768.0
    elif audio.dtype.kind != "f":
        raise TypeError(f"samples must be float in [-1, 1) or int16, not {audio.dtype}")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise ValueError("samples contain NaN or infinity")
    return audio
