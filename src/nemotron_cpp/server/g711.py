"""G.711 telephone audio (mu-law and A-law, 8 bits a sample) decoded to 16-bit PCM, as telephony
gateways send it (OpenAI's ``audio/pcmu``/``audio/pcma``, Riva's ``MULAW``/``ALAW``)."""

from __future__ import annotations

import numpy as np

__all__ = ["ulaw_to_pcm16", "alaw_to_pcm16"]


def _ulaw_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    magnitude = ((((code & 0x0F) << 3) + 0x84) << exponent) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


_ULAW = _ulaw_table()
_ALAW = _alaw_table()


def ulaw_to_pcm16(data: bytes) -> np.ndarray:
    """mu-law bytes as int16 samples."""
    return _ULAW[np.frombuffer(data, np.uint8)]


def alaw_to_pcm16(data: bytes) -> np.ndarray:
    """A-law bytes as int16 samples."""
    return _ALAW[np.frombuffer(data, np.uint8)]
