"""One scheduler for every connection: each session's audio goes into its own stream, and a single
worker thread runs the ready chunks of all of them together through :meth:`NemotronModel.step`.

The worker is the only thread that touches streams (it makes, feeds, steps, resets and closes
them), so the event loop never waits for the engine: protocol handlers hand audio to a
:class:`Session` and read its updates from an ``asyncio.Queue``. While one step computes, audio
piles up for the next, so the busier the server, the larger the batches; results are each
stream's own, bit for bit, however the steps fell.
"""

from __future__ import annotations

import asyncio
import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Deque, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import chunking as geometry
from ..audio import check_sample_rate, iter_audio, live_samples, to_mono_float
from ..model import NemotronModel
from ..boosting import Hotword
from ..stream import CHUNKINGS, PCM, Stream, StreamUpdate
from .metrics import Metrics

__all__ = ["Limits", "Scheduler", "Session", "Delivery", "Refused", "BufferFull", "ServerClosing", "deliveries",
           "feed_recording", "settle"]


class Refused(Exception):
    """A new session cannot start: the server holds its maximum of sessions."""


class ServerClosing(Refused):
    """A new session cannot start: the server is shutting down."""


class BufferFull(Exception):
    """A session was given audio faster than the engine recognizes it, beyond its buffer."""


@dataclass(frozen=True)
class Limits:
    """What one server allows."""

    max_sessions: int = 64  #: sessions of all protocols at once; more are refused
    max_buffer_seconds: float = 30.0  #: audio of one session waiting for the engine
    #: seconds a connection may send nothing before it is closed (Pipecat's Riva client sends silence
    #: after 30 s without audio, to keep its stream open)
    idle_timeout: float = 60.0
    max_upload_bytes: int = 25 * 1024 * 1024  #: an HTTP request body (OpenAI's own limit)

    def __post_init__(self) -> None:
        if not isinstance(self.max_sessions, int) or self.max_sessions < 1:
            raise ValueError(f"max_sessions must be a positive integer, not {self.max_sessions!r}")
        for name in ("max_buffer_seconds", "idle_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if not isinstance(self.max_upload_bytes, int) or self.max_upload_bytes < 1:
            raise ValueError(f"max_upload_bytes must be a positive integer, not {self.max_upload_bytes!r}")


@dataclass(frozen=True)
class Delivery:
    """What a step gave one session."""

    update: StreamUpdate
    ended: bool  #: the update of an end of audio (Session.end)
    offset: float  #: seconds of the session's audio before its stream's current start (see Session.end)
    seconds: float  #: seconds of audio recognized in the stream so far


class _End:
    """A mark in a session's audio: the audio ends here; ``restart`` takes more audio after it."""

    def __init__(self, restart: bool) -> None:
        self.restart = restart


class Session:
    """One connection's recognition, computed by the scheduler.

    Audio goes in with :meth:`push` (or :meth:`write`, which waits for room), at ``sample_rate``;
    what each step recognized comes out of :attr:`updates` as :class:`Delivery` items, then ``None``
    once the session is over (its audio ended, or it was closed), or an exception if it failed.
    """

    def __init__(self, scheduler: "Scheduler", protocol: str, stream_options: Dict[str, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.protocol = protocol
        self.sample_rate: int = stream_options["sample_rate"]
        self.updates: "asyncio.Queue[Union[Delivery, BaseException, None]]" = asyncio.Queue()
        self._scheduler = scheduler
        self._options = stream_options
        self._loop = loop
        self._pending: Deque[Union[np.ndarray, _End]] = collections.deque()
        self._pending_samples = 0
        self._room = asyncio.Event()
        self._room.set()
        self._ended = False  # an end without restart is pending or done: no more audio
        self._closed = False
        # The worker's alone:
        self.stream: Optional[Stream] = None
        self.offset = 0.0

    @property
    def pending_seconds(self) -> float:
        """Audio given and not yet recognized."""
        return self._pending_samples / self.sample_rate

    def push(self, pcm: PCM) -> None:
        """Queues audio (a numpy array, or bytes of 16-bit PCM) at the session's rate; raises
        ``BufferFull`` rather than hold more than the limit, and ValueError/TypeError for audio
        that is not audio (checked here, so the connection that sent it hears about it)."""
        samples = to_mono_float(live_samples(pcm))
        self._scheduler._queue(self, samples)

    async def write(self, pcm: PCM) -> None:
        """Queues audio like :meth:`push`, first waiting while the session's buffer is full: the
        back-pressure for uploads and for clients that send faster than real time."""
        samples = to_mono_float(live_samples(pcm))
        while True:
            await self._room.wait()
            try:
                self._scheduler._queue(self, samples)
                return
            except BufferFull:
                self._room.clear()

    def end(self, restart: bool = False) -> None:
        """Ends the audio: the rest is recognized and the last update has ``ended`` set. With
        ``restart`` the session then starts over with a fresh stream for the audio after this
        point (the next utterance), its times counted on from here (``Delivery.offset``);
        without, the session is over after that update."""
        self._scheduler._queue(self, _End(restart))

    def close(self) -> None:
        """Abandons the session (the client went away): what is pending is dropped. Harmless twice."""
        self._scheduler._drop(self)

    # ---- from the worker thread --------------------------------------------------------------

    def _deliver(self, item: Union[Delivery, BaseException, None]) -> None:
        self._loop.call_soon_threadsafe(self.updates.put_nowait, item)

    def _make_room(self) -> None:
        self._loop.call_soon_threadsafe(self._room.set)


class Scheduler:
    """Runs every session of one model on one worker thread, batching their chunks."""

    def __init__(self, model: NemotronModel, limits: Limits = Limits(), metrics: Optional[Metrics] = None) -> None:
        self.model = model
        self.limits = limits
        self.metrics = metrics if metrics is not None else Metrics()
        self._sessions: List[Session] = []
        self._dropped: List[Session] = []  # closed by their connections; their streams await the worker
        self._lock = threading.Condition()
        self._accepting = True
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="nemotron-scheduler", daemon=True)
        self._thread.start()

    # ---- sessions ----------------------------------------------------------------------------

    def open(self, protocol: str, *, latency_ms: Optional[int] = None, sample_rate: Optional[int] = None,
             chunking: str = "stream", endpointing: Any = True, language: Optional[str] = None,
             hotwords: Optional[Sequence[Hotword]] = None) -> Session:
        """A new session in the running event loop; raises ``Refused`` at the session limit (and
        ``ServerClosing`` once shutting down), ValueError for options the model does not take (hotwords
        it cannot spell among them)."""
        # Checked here, so that a bad option is the caller's error; the worker makes the stream (making
        # one here could wait for a step to finish, holding up the event loop).
        rate = check_sample_rate(sample_rate or self.model.hparams.sample_rate)
        geometry.att_right_context(self.model.hparams, latency_ms, None)
        if chunking not in CHUNKINGS:
            raise ValueError(f"chunking must be one of {CHUNKINGS}, not {chunking!r}")
        if language is not None and language not in self.model.languages:
            raise ValueError(f"unknown language {language!r}; this model knows {', '.join(self.model.languages)}"
                             if self.model.languages else "this model has no languages to choose from")
        if hotwords:
            self.model.check_hotwords(hotwords)
        options = dict(latency_ms=latency_ms, sample_rate=rate, chunking=chunking, endpointing=endpointing,
                       language=language, hotwords=hotwords or None)
        session = Session(self, protocol, options, asyncio.get_running_loop())
        with self._lock:
            if not self._accepting:
                raise ServerClosing("the server is shutting down")
            if len(self._sessions) >= self.limits.max_sessions:
                self.metrics.refused(protocol)
                raise Refused(f"the server is at its limit of {self.limits.max_sessions} sessions; try again later")
            self._sessions.append(session)
            self.metrics.opened(protocol)
        return session

    @property
    def n_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _queue(self, session: Session, item: Union[np.ndarray, _End]) -> None:
        with self._lock:
            if session._closed:
                raise ValueError("the session is closed")
            if session._ended:
                raise ValueError("the session's audio has ended")
            if isinstance(item, np.ndarray):
                limit = int(self.limits.max_buffer_seconds * session.sample_rate)
                if session._pending_samples + item.size > limit and session._pending_samples > 0:
                    raise BufferFull(f"more than {self.limits.max_buffer_seconds:g} s of audio is waiting to be "
                                     f"recognized; send it no faster than real time")
                if item.size == 0:
                    return
                session._pending_samples += item.size
            elif not item.restart:
                session._ended = True
            session._pending.append(item)
            self._lock.notify()

    def _drop(self, session: Session) -> None:
        with self._lock:
            if session._closed:
                return
            if self._leave(session):
                self._dropped.append(session)
            self._lock.notify()

    def _leave(self, session: Session) -> bool:
        """The session is over: nothing more is taken from or for it, and it leaves the count; whether it
        was still counted. The caller holds the lock; the worker frees its stream."""
        session._closed = True
        session._pending.clear()
        session._pending_samples = 0
        if session not in self._sessions:
            return False
        self._sessions.remove(session)
        self.metrics.closed(session.protocol)
        return True

    # ---- lifetime ----------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """New sessions are refused from now on (``ServerClosing``)."""
        with self._lock:
            self._accepting = False

    @property
    def accepting(self) -> bool:
        """False once shutting down."""
        return self._accepting

    @property
    def stopped(self) -> bool:
        """True once the worker has stopped."""
        return not self._thread.is_alive()

    def stop(self, grace: float = 10.0) -> None:
        """Refuses new sessions, gives the sessions under way up to ``grace`` seconds to finish, then
        ends the others with a ``ServerClosing`` error and stops the worker. Never waits longer."""
        self.stop_accepting()
        if self.stopped:
            return
        deadline = time.monotonic() + grace
        with self._lock:
            while self._sessions and time.monotonic() < deadline:
                self._lock.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            for session in list(self._sessions):
                session._deliver(ServerClosing("the server is shutting down"))
                self._leave(session)
                self._dropped.append(session)
            self._stopping = True
            self._lock.notify()
        self._thread.join()

    # ---- the worker --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._dropped and not any(s._pending for s in self._sessions):
                    self._lock.wait()
                dropped, self._dropped = self._dropped, []
                work = [] if self._stopping else self._take()
                self.metrics.queue(sum(1 for s in self._sessions if s._pending),
                                   sum(s.pending_seconds for s in self._sessions))
            for session in dropped:
                if session.stream is not None:
                    session.stream.close()
                    session.stream = None
            if self._stopping:
                return
            if work:
                self._step(work)

    def _take(self) -> List[Tuple[Session, List[np.ndarray], Optional[_End]]]:
        """Each session's audio for this step, up to a chunk's worth (so that one long upload does not
        hold the live sessions back) and up to its next end mark."""
        work = []
        for session in self._sessions:
            if not session._pending:
                continue
            budget = self._chunk_samples(session)
            pieces: List[np.ndarray] = []
            end: Optional[_End] = None
            while session._pending and budget > 0:
                item = session._pending[0]
                if isinstance(item, _End):
                    if not pieces:
                        end = item
                        session._pending.popleft()
                    break
                if item.size > budget:
                    pieces.append(item[:budget])
                    session._pending[0] = item[budget:]
                    session._pending_samples -= budget
                    budget = 0
                else:
                    session._pending.popleft()
                    pieces.append(item)
                    session._pending_samples -= item.size
                    budget -= item.size
            following = session._pending[0] if pieces and session._pending else None
            if isinstance(following, _End):  # the end comes with the last of the audio
                session._pending.popleft()
                end = following
            work.append((session, pieces, end))
            if session._pending_samples < int(self.limits.max_buffer_seconds * session.sample_rate):
                session._make_room()
        return work

    def _chunk_samples(self, session: Session) -> int:
        latency = session._options["latency_ms"]
        ms = latency if latency is not None else self.model.latencies_ms[0]  # the engine's default
        return max(1, int(session.sample_rate * ms / 1000))

    def _step(self, work: List[Tuple[Session, List[np.ndarray], Optional[_End]]]) -> None:
        ready: List[Tuple[Session, Optional[_End], int]] = []
        audio_seconds = 0.0
        for session, pieces, end in work:
            try:
                if session.stream is None:
                    session.stream = self.model.stream(**session._options)
                for piece in pieces:
                    session.stream.push(piece)
                    audio_seconds += piece.size / session.sample_rate
                ready.append((session, end, session.stream.n_frames))
            except Exception as e:  # this session's audio or stream failed: it ends, the others go on
                self._fail(session, e)
        if not ready:
            return
        started = time.perf_counter()
        try:
            updates = self.model.step([s.stream for s, _, _ in ready],  # type: ignore[misc]
                                      final=[end is not None for _, end, _ in ready])
        except Exception as e:
            for session, _, _ in ready:
                self._fail(session, e)
            return
        elapsed = time.perf_counter() - started
        chunks = 0
        live_latency = math.inf
        for (session, end, frames_before), update in zip(ready, updates):
            stream = session.stream
            assert stream is not None
            chunk_frames = stream.att_right_context + 1
            done = math.ceil((stream.n_frames - frames_before) / chunk_frames)
            chunks += done
            if done and session._options["chunking"] != "offline":
                live_latency = min(live_latency, stream.latency_ms / 1000)
            if update.new_tokens or update.segments or end is not None:
                session._deliver(Delivery(update, end is not None, session.offset, stream.seconds))
            if end is not None:
                if end.restart:
                    session.offset += stream.seconds
                    stream.reset()
                else:
                    session._deliver(None)
                    self._retire(session)
        self.metrics.step(elapsed, chunks, audio_seconds, live_latency)

    def _fail(self, session: Session, error: BaseException) -> None:
        session._deliver(error)
        self._retire(session)

    def _retire(self, session: Session) -> None:
        """A session whose work is over: its stream is freed and it leaves the count."""
        with self._lock:
            self._leave(session)
            self._lock.notify_all()
        if session.stream is not None:
            session.stream.close()
            session.stream = None


async def deliveries(session: Session, feeding: "asyncio.Task[None]") -> AsyncIterator[Delivery]:
    """The session's updates until its audio has ended, while ``feeding`` (the task that gives it audio)
    runs; an error of either, in decoding or in recognizing, is raised."""
    getter: "Optional[asyncio.Task[Any]]" = None
    try:
        while True:
            getter = asyncio.ensure_future(session.updates.get())
            await asyncio.wait([getter, feeding], return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                feeding.result()  # raises the decoding error, if that is why the feed stopped
                await getter
            item = getter.result()
            getter = None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if getter is not None:
            getter.cancel()


async def feed_recording(session: Session, source: Any, sample_rate: Optional[int] = None) -> None:
    """Gives a session a whole recording (anything ``iter_audio`` reads; ``sample_rate`` for raw
    samples), decoded and resampled a block at a time on a worker thread, waiting while the session's
    buffer is full; then ends its audio. The session's rate must be the model's."""
    loop = asyncio.get_running_loop()
    blocks = iter_audio(source, sample_rate, session.sample_rate, block_seconds=2.0)
    while True:
        item = await loop.run_in_executor(None, next, blocks, None)
        if item is None:
            break
        await session.write(item[0])
    session.end()


async def settle(task: "asyncio.Task[None]") -> None:
    """Cancels a feeding task if it still runs and waits for it; its error, if any, was answered."""
    if not task.done():
        task.cancel()
    try:
        await task
    except BaseException:  # its error, if any, was already answered
        pass
