"""OpenAI's Realtime API in transcription mode: ``/v1/realtime?intent=transcription`` on a WebSocket.

The client sends ``session.update`` (or the older ``transcription_session.update``),
``input_audio_buffer.append`` (base64 audio), ``.commit`` and ``.clear``; the server answers with
``conversation.item.input_audio_transcription.delta`` as words are recognized and ``.completed``
when an utterance (an *item*) ends. Items end at our endpoints when turn detection is on
(``input_audio_buffer.speech_started``/``speech_stopped`` mark them), or at the client's commit.
Anything malformed is answered with an ``error`` event and the session carries on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import secrets
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..audio import check_sample_rate
from ..results import Segment
from ..segmenter import Endpointing
from .g711 import alaw_to_pcm16, ulaw_to_pcm16
from .scheduler import BufferFull, Delivery, Refused, ServerClosing, Session
from .state import ServerState, openai_error, prompt_hotwords

__all__ = ["realtime"]

#: OpenAI's default input: 16-bit PCM at 24 kHz.
DEFAULT_RATE = 24000
#: Close codes: the server is full or going away (1013 "try again later", 1012 "service restart").
_CLOSE_BUSY, _CLOSE_RESTART, _CLOSE_POLICY = 1013, 1012, 1008


class _EventError(Exception):
    """A client event the server refuses: answered with an ``error`` event; the session lives on."""

    def __init__(self, code: str, message: str, param: Optional[str] = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class _Format:
    """How the client's audio is coded."""

    def __init__(self, coding: str = "pcm16", rate: int = DEFAULT_RATE) -> None:
        self.coding, self.rate = coding, rate

    def decode(self, data: bytes) -> np.ndarray:
        if self.coding == "pcm16":
            if len(data) % 2:
                raise _EventError("invalid_audio", f"pcm16 audio is 2 bytes a sample, but {len(data)} bytes came",
                                  "audio")
            return np.frombuffer(data, "<i2").astype(np.int16)
        return ulaw_to_pcm16(data) if self.coding == "g711_ulaw" else alaw_to_pcm16(data)

    def beta(self) -> str:
        return self.coding

    def ga(self) -> Dict[str, Any]:
        if self.coding == "pcm16":
            return {"type": "audio/pcm", "rate": self.rate}
        return {"type": "audio/pcmu" if self.coding == "g711_ulaw" else "audio/pcma"}


_BETA_FORMATS = {"pcm16": ("pcm16", None), "g711_ulaw": ("g711_ulaw", 8000), "g711_alaw": ("g711_alaw", 8000)}
_GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}


class _Connection:
    """One WebSocket's transcription session."""

    def __init__(self, state: ServerState, websocket: WebSocket, latency_ms: int) -> None:
        self.state = state
        self.ws = websocket
        self.format = _Format()
        self.latency_ms = latency_ms
        self.turn_detection: Optional[Dict[str, Any]] = {"type": "server_vad"}
        self.language: Optional[str] = None  # a multilingual model's language (None: its default)
        self.hotwords: List[str] = []  # the transcription's prompt, as phrases to boost
        self.transcription: Dict[str, Any] = {"model": state.model_id, "language": "en"}
        self.session: Optional[Session] = None
        self.pump: "Optional[asyncio.Task[None]]" = None
        self._send_lock = asyncio.Lock()
        self._event_ids = itertools.count(1)
        self._item_prefix = "item_" + secrets.token_hex(6)
        self._item_ids = itertools.count(1)
        # The item (utterance) being recognized, and the one before it.
        self.item_id = self._new_item_id()
        self.previous_item_id: Optional[str] = None
        self.item_text = ""  # what the deltas of the current item have said
        self.speaking = False
        self.appended = 0  # samples appended since the last commit or clear
        self.base_ms = 0.0  # where the current scheduler session's audio starts in the connection's audio
        self.total_seconds = 0.0  # audio appended on this connection

    def _new_item_id(self) -> str:
        return f"{self._item_prefix}_{next(self._item_ids)}"

    # ---- sending ------------------------------------------------------------------------------

    async def send(self, event: Dict[str, Any]) -> None:
        event = {"event_id": f"event_{next(self._event_ids)}", **event}
        async with self._send_lock:
            await self.ws.send_text(json.dumps(event, ensure_ascii=False))

    async def error(self, code: str, message: str, param: Optional[str] = None, event_id: Optional[str] = None,
                    kind: str = "invalid_request_error") -> None:
        self.state.metrics.error("realtime", code)
        await self.send({"type": "error", "error": {"type": kind, "code": code, "message": message, "param": param,
                                                    "event_id": event_id}})

    def session_object(self, ga: bool) -> Dict[str, Any]:
        transcription = dict(self.transcription, latency_ms=self.latency_ms)
        if ga:
            return {"type": "transcription", "object": "realtime.transcription_session",
                    "audio": {"input": {"format": self.format.ga(), "transcription": transcription,
                                        "turn_detection": self.turn_detection, "noise_reduction": None}}}
        return {"object": "realtime.transcription_session", "input_audio_format": self.format.beta(),
                "input_audio_transcription": transcription, "turn_detection": self.turn_detection}

    # ---- the scheduler's session -------------------------------------------------------------

    def open_session(self) -> None:
        endpointing: Any = False
        if self.turn_detection is not None:
            silence = self.turn_detection.get("silence_duration_ms")
            endpointing = Endpointing(silence=silence / 1000) if silence else True
        self.session = self.state.scheduler.open("realtime", latency_ms=self.latency_ms, sample_rate=self.format.rate,
                                                 endpointing=endpointing, language=self.language,
                                                 hotwords=self.hotwords)
        self.base_ms = self.total_seconds * 1000
        self.pump = asyncio.create_task(self.forward(self.session))

    async def close_session(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        if self.pump is not None:
            self.pump.cancel()
            try:
                await self.pump
            except (asyncio.CancelledError, Exception):
                pass
            self.pump = None

    async def forward(self, session: Session) -> None:
        """Turns what the scheduler recognized into the Realtime events."""
        while True:
            item = await session.updates.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                closing = isinstance(item, ServerClosing)
                await self.error("server_shutting_down" if closing else "server_error", str(item), kind="server_error")
                if closing:
                    await self.ws.close(_CLOSE_RESTART)
                return
            await self.on_delivery(item)

    async def on_delivery(self, delivery: Delivery) -> None:
        update = delivery.update
        base = self.base_ms + delivery.offset * 1000
        for segment in update.segments:
            if not self.speaking:
                await self.speech_started(base + 1000 * segment.start)
            await self.delta(segment.text)
            await self.finish_item(segment.text, segment, base)
        ended = {id(t) for s in update.segments for t in s.tokens}
        started = [t for t in update.new_tokens if id(t) not in ended]  # the utterance now in progress
        if started:
            if not self.speaking:
                await self.speech_started(base + 1000 * started[0].start)
            await self.delta(update.partial.strip())
        if delivery.ended:
            # A commit: the item ends here, whatever was said.
            if not update.segments:
                await self.finish_item(self.item_text, None, base)

    async def speech_started(self, start_ms: float) -> None:
        self.speaking = True
        if self.turn_detection is not None:
            await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": int(round(start_ms)),
                             "item_id": self.item_id})

    async def delta(self, text: str) -> None:
        if text.startswith(self.item_text) and len(text) > len(self.item_text):
            await self.send({"type": "conversation.item.input_audio_transcription.delta", "item_id": self.item_id,
                             "content_index": 0, "delta": text[len(self.item_text):]})
            self.item_text = text

    async def finish_item(self, transcript: str, segment: Optional[Segment], base: float) -> None:
        if self.turn_detection is not None and segment is not None:
            await self.send({"type": "input_audio_buffer.speech_stopped",
                             "audio_end_ms": int(round(base + 1000 * segment.end)), "item_id": self.item_id})
        await self.send({"type": "input_audio_buffer.committed", "item_id": self.item_id,
                         "previous_item_id": self.previous_item_id})
        words = segment.words if segment is not None else ()
        await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": self.item_id,
                         "content_index": 0, "transcript": transcript,
                         "usage": {"type": "duration", "seconds": round(segment.end - segment.start, 3)
                                   if segment is not None else 0.0},
                         "confidence": min((w.confidence for w in words), default=None)})
        self.previous_item_id, self.item_id = self.item_id, self._new_item_id()
        self.item_text = ""
        self.speaking = False

    # ---- client events -------------------------------------------------------------------------

    async def handle(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError as e:
            raise _EventError("invalid_json", f"the event is not valid JSON: {e}") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise _EventError("invalid_event", "an event is a JSON object with a string 'type'", "type")
        kind = event["type"]
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise _EventError("unknown_event", f"unknown event type {kind!r}; a transcription session takes "
                                               f"{', '.join(sorted(_HANDLERS))}", "type")
        await handler(self, event)

    async def session_update(self, event: Dict[str, Any]) -> None:
        ga = event["type"] == "session.update"
        config = event.get("session")
        if not isinstance(config, dict):
            raise _EventError("invalid_event", "session.update needs a 'session' object", "session")
        if ga:
            if config.get("type", "transcription") != "transcription":
                raise _EventError("invalid_value", f"this server holds transcription sessions only, not "
                                                   f"{config.get('type')!r}", "session.type")
            audio = config.get("audio") or {}
            section = audio.get("input") or {} if isinstance(audio, dict) else {}
            fmt = section.get("format")
            coding, rate = self._ga_format(fmt) if fmt is not None else (None, None)
            transcription, turn = section.get("transcription"), section.get("turn_detection", ...)
        else:
            fmt = config.get("input_audio_format")
            coding, rate = self._beta_format(fmt) if fmt is not None else (None, None)
            transcription, turn = config.get("input_audio_transcription"), config.get("turn_detection", ...)
        new_format = _Format(coding or self.format.coding, rate or (self.format.rate if coding is None else
                                                                     DEFAULT_RATE))
        new_latency = self.latency_ms
        new_language = self.language
        new_hotwords = self.hotwords
        new_transcription = dict(self.transcription)
        if transcription is not None:
            if not isinstance(transcription, dict):
                raise _EventError("invalid_event", "input_audio_transcription is an object", "transcription")
            language = transcription.get("language")
            if language is not None:
                try:
                    new_language = self.state.language_for(str(language))
                except ValueError as e:
                    raise _EventError("invalid_value", str(e), "language") from None
            prompt = transcription.get("prompt")
            if prompt is not None:
                if not isinstance(prompt, str):
                    raise _EventError("invalid_value", "prompt is a string of phrases to expect", "prompt")
                new_hotwords = prompt_hotwords(prompt)
                try:
                    self.state.model.check_hotwords(new_hotwords)
                except ValueError as e:
                    raise _EventError("invalid_value", f"prompt: {e}", "prompt") from None
            latency = transcription.get("latency_ms", self.latency_ms)
            if latency not in self.state.model.latencies_ms:
                raise _EventError("invalid_value", f"latency_ms must be one of "
                                                   f"{', '.join(map(str, self.state.model.latencies_ms))}, not "
                                                   f"{latency!r}", "latency_ms")
            new_latency = latency
            new_transcription.update({k: v for k, v in transcription.items() if k != "latency_ms"})
        new_turn = self.turn_detection if turn is ... else self._turn_detection(turn)
        changes_stream = (new_format.coding, new_format.rate, new_latency, new_turn, new_language, new_hotwords) != (
            self.format.coding, self.format.rate, self.latency_ms, self.turn_detection, self.language, self.hotwords)
        if changes_stream and (self.appended or self.speaking):
            raise _EventError("session_busy", "the audio format, latency, turn detection, language and prompt change "
                                              "only between items: commit or clear the audio buffer first", "session")
        self.format, self.latency_ms, self.transcription, self.turn_detection, self.language, self.hotwords = (
            new_format, new_latency, new_transcription, new_turn, new_language, new_hotwords)
        if changes_stream:
            await self.close_session()
            self.open_session()
        await self.send({"type": "session.updated" if ga else "transcription_session.updated",
                         "session": self.session_object(ga)})

    @staticmethod
    def _beta_format(fmt: Any) -> Tuple[str, Optional[int]]:
        if fmt not in _BETA_FORMATS:
            raise _EventError("invalid_value", f"input_audio_format must be one of {', '.join(_BETA_FORMATS)}, "
                                               f"not {fmt!r}", "input_audio_format")
        return _BETA_FORMATS[fmt]

    @staticmethod
    def _ga_format(fmt: Any) -> Tuple[str, Optional[int]]:
        if not isinstance(fmt, dict) or fmt.get("type") not in _GA_FORMATS:
            raise _EventError("invalid_value", f"audio.input.format.type must be one of {', '.join(_GA_FORMATS)}, "
                                               f"not {fmt!r}", "audio.input.format")
        coding = _GA_FORMATS[fmt["type"]]
        if coding != "pcm16":
            return coding, 8000
        try:
            rate = check_sample_rate(fmt.get("rate", DEFAULT_RATE))
        except (TypeError, ValueError) as e:
            raise _EventError("invalid_value", str(e), "audio.input.format.rate") from None
        return coding, rate

    @staticmethod
    def _turn_detection(turn: Any) -> Optional[Dict[str, Any]]:
        if turn is None:
            return None
        if not isinstance(turn, dict) or turn.get("type") not in ("server_vad", "semantic_vad"):
            raise _EventError("invalid_value", "turn_detection is null, or an object of type server_vad or "
                                               "semantic_vad (both end an item at the model's endpoint)",
                              "turn_detection")
        silence = turn.get("silence_duration_ms")
        if silence is not None and (isinstance(silence, bool) or not isinstance(silence, int) or silence <= 0):
            raise _EventError("invalid_value", f"silence_duration_ms must be a positive whole number, not "
                                               f"{silence!r}", "turn_detection.silence_duration_ms")
        return {"type": turn["type"], **({"silence_duration_ms": silence} if silence else {})}

    async def append(self, event: Dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise _EventError("invalid_event", "input_audio_buffer.append needs 'audio': base64 audio", "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise _EventError("invalid_audio", "'audio' is not valid base64", "audio") from None
        samples = self.format.decode(data)
        if self.session is None:
            self.open_session()
        assert self.session is not None
        try:
            self.session.push(samples)
        except BufferFull as e:
            raise _EventError("input_audio_buffer_full", str(e), "audio") from None
        self.appended += samples.size
        self.total_seconds += samples.size / self.format.rate

    async def commit(self, event: Dict[str, Any]) -> None:
        if not self.appended and not self.speaking:
            raise _EventError("input_audio_buffer_commit_empty", "the audio buffer is empty: nothing to commit")
        assert self.session is not None
        self.session.end(restart=True)
        self.appended = 0

    async def clear(self, event: Dict[str, Any]) -> None:
        """Drops the audio not yet committed: the utterance in progress is forgotten."""
        await self.close_session()
        self.open_session()
        self.appended = 0
        self.item_text = ""
        self.speaking = False
        await self.send({"type": "input_audio_buffer.cleared"})


_HANDLERS = {
    "session.update": _Connection.session_update,
    "transcription_session.update": _Connection.session_update,
    "input_audio_buffer.append": _Connection.append,
    "input_audio_buffer.commit": _Connection.commit,
    "input_audio_buffer.clear": _Connection.clear,
}


async def realtime(websocket: WebSocket) -> None:
    """The WebSocket route ``/v1/realtime``."""
    state: ServerState = websocket.app.state.server
    if not state.key_matches(websocket.headers.get("authorization")):
        state.metrics.error("realtime", "invalid_api_key")
        await _deny(websocket, 401, "Incorrect API key provided.", "invalid_api_key")
        return
    query = websocket.query_params
    if query.get("intent") != "transcription":
        state.metrics.error("realtime", "invalid_intent")
        await _deny(websocket, 400, "this server holds transcription sessions: connect to "
                                    "/v1/realtime?intent=transcription", "invalid_intent")
        return
    latency = query.get("latency_ms", str(state.stream_latency_ms))
    if not latency.isdigit() or int(latency) not in state.model.latencies_ms:
        await _deny(websocket, 400, f"latency_ms must be one of {', '.join(map(str, state.model.latencies_ms))}, "
                                    f"not {latency!r}", "invalid_value")
        return
    await websocket.accept()
    connection = _Connection(state, websocket, int(latency))
    try:
        connection.open_session()
    except Refused as e:
        await connection.error("server_shutting_down" if isinstance(e, ServerClosing) else "too_many_sessions",
                               str(e), kind="server_error")
        await websocket.close(_CLOSE_RESTART if isinstance(e, ServerClosing) else _CLOSE_BUSY)
        return
    try:
        await connection.send({"type": "session.created", "session": connection.session_object(ga=True)})
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), state.limits.idle_timeout)
            except asyncio.TimeoutError:
                await connection.error("idle_timeout", f"no event for {state.limits.idle_timeout:g} s: the session "
                                                       f"is closed")
                await websocket.close(_CLOSE_POLICY)
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await connection.error("invalid_event", "events are JSON text frames, not binary")
                continue
            try:
                await connection.handle(text)
            except _EventError as e:
                client_id = _event_id(text)
                await connection.error(e.code, e.message, e.param, client_id)
            except Refused as e:  # a new session (after a format change) found the server full
                await connection.error("too_many_sessions", str(e), kind="server_error")
                await websocket.close(_CLOSE_BUSY)
                return
    except (WebSocketDisconnect, RuntimeError):
        # Gone mid-send (RuntimeError: Starlette's "after sending 'websocket.close'"): nothing to tell it.
        return
    finally:
        await connection.close_session()


def _event_id(text: str) -> Optional[str]:
    try:
        event = json.loads(text)
    except ValueError:
        return None
    value = event.get("event_id") if isinstance(event, dict) else None
    return value if isinstance(value, str) else None


async def _deny(websocket: WebSocket, status: int, message: str, code: str) -> None:
    """Refuses the WebSocket handshake with an HTTP answer (OpenAI's error object), or, where the ASGI
    server cannot send one, by closing it with a policy violation."""
    body = openai_error(status, message, code=code)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(body)
    else:
        await websocket.close(_CLOSE_POLICY)
