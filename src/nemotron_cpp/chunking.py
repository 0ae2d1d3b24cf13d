"""A stream's chunk geometry in its three units, converted here and nowhere else.

A cache-aware model computes its audio in chunks of ``right context + 1`` encoder frames; a frame
is ``subsampling_factor x hop_length`` samples (80 ms for this model family). Users speak of the
chunk's latency in milliseconds, the engine of the right context in frames, and whoever cuts a
recording into chunk-sized pieces of samples.
"""

from __future__ import annotations

from typing import Optional, Tuple

from .info import HParams

__all__ = ["frame_seconds", "latency_ms", "latencies_ms", "att_right_context", "chunk_samples"]


def frame_seconds(hp: HParams) -> float:
    """Seconds of audio per encoder frame."""
    return hp.subsampling_factor * hp.hop_length / hp.sample_rate


def latency_ms(hp: HParams, att_right_context: int) -> int:
    """The latency of chunks of ``att_right_context + 1`` frames."""
    return int(round((att_right_context + 1) * frame_seconds(hp) * 1000))


def latencies_ms(hp: HParams) -> Tuple[int, ...]:
    """The latencies the model was trained for, from its right contexts (the first is the default)."""
    return tuple(latency_ms(hp, r) for r in hp.att_right_contexts)


def att_right_context(hp: HParams, latency: Optional[int], given: Optional[int] = None,
                      name: str = "latency_ms") -> Optional[int]:
    """The right context (in encoder frames) of a latency in milliseconds, or the one ``given``
    directly; None: the model's default. ``name`` is how the caller's user wrote the latency, for the
    message of a ValueError."""
    if latency is None:
        return given
    if given is not None:
        raise ValueError(f"give {name} or att_right_context, not both")
    frame_ms = frame_seconds(hp) * 1000
    frames = latency / frame_ms
    if frames < 1 or abs(frames - round(frames)) > 1e-6:
        raise ValueError(f"{name} must be a positive multiple of {frame_ms:g} ms, not {latency}; "
                         f"this model was trained for {', '.join(map(str, latencies_ms(hp)))} ms")
    return int(round(frames)) - 1


def chunk_samples(hp: HParams, att_right_context: int) -> int:
    """Samples at the model's rate in a chunk of ``att_right_context + 1`` frames."""
    return (att_right_context + 1) * hp.subsampling_factor * hp.hop_length
