"""The server's counters, in Prometheus' text format (``GET /metrics``)."""

from __future__ import annotations

import math
import threading
from typing import Dict, List, Tuple

__all__ = ["Metrics", "PROTOCOLS"]

#: The protocols sessions are counted by.
PROTOCOLS = ("http", "realtime", "riva")

#: Upper bounds (seconds) of the compute-time-per-chunk histogram's buckets.
_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)


class Metrics:
    """Counts sessions, queued audio and computed chunks; every method may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sessions: Dict[str, int] = {p: 0 for p in PROTOCOLS}
        self.opened_total: Dict[str, int] = {p: 0 for p in PROTOCOLS}
        self.refused_total: Dict[str, int] = {p: 0 for p in PROTOCOLS}
        self.errors_total: Dict[Tuple[str, str], int] = {}
        self.queued_sessions = 0
        self.queued_seconds = 0.0
        self.steps_total = 0
        self.chunks_total = 0
        self.audio_seconds_total = 0.0
        self.compute_seconds_total = 0.0
        self._bucket_counts: List[int] = [0] * len(_BUCKETS)
        self._chunk_count = 0
        self._chunk_sum = 0.0
        self.realtime_margin = math.nan

    def opened(self, protocol: str) -> None:
        with self._lock:
            self.sessions[protocol] += 1
            self.opened_total[protocol] += 1

    def closed(self, protocol: str) -> None:
        with self._lock:
            self.sessions[protocol] -= 1

    def refused(self, protocol: str) -> None:
        with self._lock:
            self.refused_total[protocol] += 1

    def error(self, protocol: str, code: str) -> None:
        """A request or event refused with an error (by its protocol's code, e.g. 400 or invalid_event)."""
        with self._lock:
            key = (protocol, code)
            self.errors_total[key] = self.errors_total.get(key, 0) + 1

    def queue(self, sessions: int, seconds: float) -> None:
        """Sessions with audio waiting for the engine, and how much, as a step starts."""
        with self._lock:
            self.queued_sessions, self.queued_seconds = sessions, seconds

    def step(self, elapsed: float, chunks: int, audio_seconds: float, live_latency: float) -> None:
        """One ``model.step``: its wall time, the chunks it computed, the audio it took, and the shortest
        chunk latency of the live (not offline) streams it advanced (inf if none)."""
        with self._lock:
            self.steps_total += chunks > 0
            self.chunks_total += chunks
            self.audio_seconds_total += audio_seconds
            self.compute_seconds_total += elapsed
            if chunks:
                per_chunk = elapsed / chunks
                for i, bound in enumerate(_BUCKETS):
                    if per_chunk <= bound:
                        self._bucket_counts[i] += chunks
                self._chunk_count += chunks
                self._chunk_sum += elapsed
            if live_latency < math.inf:
                # A live stream's next chunk arrives one latency after the last: the time a step leaves
                # of it is the margin before the server falls behind real time.
                self.realtime_margin = live_latency - elapsed

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        with self._lock:
            out: List[str] = []

            def metric(name: str, kind: str, help_text: str, samples: List[Tuple[str, float]]) -> None:
                out.append(f"# HELP {name} {help_text}")
                out.append(f"# TYPE {name} {kind}")
                out.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

            def by_protocol(counts: Dict[str, int]) -> List[Tuple[str, float]]:
                return [(f'{{protocol="{p}"}}', float(v)) for p, v in counts.items()]

            metric("nemotron_sessions", "gauge", "Sessions open now.", by_protocol(self.sessions))
            metric("nemotron_sessions_opened_total", "counter", "Sessions opened.", by_protocol(self.opened_total))
            metric("nemotron_sessions_refused_total", "counter", "Sessions refused at the session limit.",
                   by_protocol(self.refused_total))
            metric("nemotron_errors_total", "counter", "Requests and events answered with an error.",
                   [(f'{{protocol="{p}",code="{c}"}}', float(v)) for (p, c), v in sorted(self.errors_total.items())])
            metric("nemotron_queue_sessions", "gauge", "Sessions with audio waiting for the engine.",
                   [("", self.queued_sessions)])
            metric("nemotron_queue_audio_seconds", "gauge", "Seconds of audio waiting for the engine.",
                   [("", self.queued_seconds)])
            metric("nemotron_steps_total", "counter", "Engine steps (model.step) that computed chunks; "
                   "chunks over steps is the mean batch.", [("", self.steps_total)])
            metric("nemotron_chunks_total", "counter", "Chunks computed.", [("", self.chunks_total)])
            metric("nemotron_audio_seconds_total", "counter", "Seconds of audio recognized.",
                   [("", self.audio_seconds_total)])
            metric("nemotron_compute_seconds_total", "counter", "Wall seconds spent in engine steps.",
                   [("", self.compute_seconds_total)])
            buckets = [(f'{{le="{b:g}"}}', float(c)) for b, c in zip(_BUCKETS, self._bucket_counts)]
            out.append("# HELP nemotron_chunk_compute_seconds Compute time per chunk (a step's time over its chunks).")
            out.append("# TYPE nemotron_chunk_compute_seconds histogram")
            out.extend(f"nemotron_chunk_compute_seconds_bucket{labels} {_number(v)}" for labels, v in buckets)
            out.append(f'nemotron_chunk_compute_seconds_bucket{{le="+Inf"}} {self._chunk_count}')
            out.append(f"nemotron_chunk_compute_seconds_sum {_number(self._chunk_sum)}")
            out.append(f"nemotron_chunk_compute_seconds_count {self._chunk_count}")
            metric("nemotron_realtime_margin_seconds", "gauge",
                   "Shortest live chunk latency minus the last step's time: below 0, live streams fall behind.",
                   [("", self.realtime_margin)])
            return "\n".join(out) + "\n"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))
