"""``nemotron-cpp bench``: how fast one model streams one recording on this machine.

For each latency it streams the audio in chunk-sized pieces, as a live feed would arrive, as fast
as the engine runs, and reports the real-time factor (compute seconds per audio second), the compute
time of each chunk (p50, p95), the time to the first partial (the audio a live user must speak
before text appears, plus the compute of that chunk), the load time and the peak RSS.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from .formats import plural
from .model import NemotronModel

__all__ = ["BenchRow", "bench", "markdown_table"]


@dataclass(frozen=True)
class BenchRow:
    """One latency's measurements."""

    latency_ms: int
    rtf: float  #: compute seconds per second of audio
    chunk_p50_ms: float
    chunk_p95_ms: float
    first_partial_s: Optional[float]  #: None when no token came at all
    tokens_per_second: float  #: tokens emitted per second of audio


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def bench(model: NemotronModel, audio: np.ndarray, latencies: Sequence[int]) -> List[BenchRow]:
    """Streams ``audio`` (mono float32 at the model's rate) once per latency."""
    rate = model.hparams.sample_rate
    rows = []
    for latency in latencies:
        chunk_times: List[float] = []
        first: Optional[float] = None
        with model.stream(latency, endpointing=False) as s:
            step = s.chunk_samples
            start = time.perf_counter()
            for i in range(0, len(audio), step):
                before = s.n_frames
                t = time.perf_counter()
                update = s.feed(audio[i:i + step])
                spent = time.perf_counter() - t
                if s.n_frames > before:
                    chunk_times.append(spent)
                if first is None and update.partial:
                    first = min(i + step, len(audio)) / rate + spent
            s.finalize()
            total = time.perf_counter() - start
            n_tokens = len(s.tokens)
        times = np.array(chunk_times or [0.0]) * 1000
        seconds = len(audio) / rate
        rows.append(BenchRow(latency_ms=latency, rtf=total / seconds, chunk_p50_ms=float(np.percentile(times, 50)),
                             chunk_p95_ms=float(np.percentile(times, 95)), first_partial_s=first,
                             tokens_per_second=n_tokens / seconds))
    return rows


def markdown_table(model: NemotronModel, rows: Sequence[BenchRow], seconds: float, load_seconds: float) -> str:
    """The rows as a markdown table, under a line saying what ran where."""
    from .info import system_info

    info = system_info()
    cpus = os.cpu_count()
    head = (f"{model.path}: {model.weight_type}, {model.hparams.n_layers} layers x d_model {model.hparams.d_model}; "
            f"{seconds:.1f} s of audio; {model.backend}, {plural(model.n_threads, 'thread')}; {platform.machine()}, "
            f"{plural(cpus, 'logical CPU') if cpus else 'an unknown number of CPUs'}; engine {info.version}, ggml {info.ggml_version}; "
            f"load {load_seconds * 1000:.0f} ms; peak RSS {_peak_rss_bytes() / 2**20:.0f} MiB")
    lines = [head, "", "| latency | RTF | chunk p50 | chunk p95 | first partial | tokens/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        first = "-" if r.first_partial_s is None else f"{r.first_partial_s:.2f} s"
        lines.append(f"| {r.latency_ms} ms | {r.rtf:.3f} | {r.chunk_p50_ms:.1f} ms | {r.chunk_p95_ms:.1f} ms | {first} "
                     f"| {r.tokens_per_second:.1f} |")
    return "\n".join(lines) + "\n"
