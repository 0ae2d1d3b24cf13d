"""OpenAI's HTTP speech-to-text API: ``POST /v1/audio/transcriptions`` and ``GET /v1/models``.

A transcription is NeMo's full-utterance recognition, as :meth:`NemotronModel.transcribe` gives
it (the same tokens, segments and times), computed through the scheduler beside the live
sessions. ``stream=true`` sends the text as it is recognized, as server-sent events the way
OpenAI's streaming transcription sends them. ``prompt`` names words and phrases to expect, separated
by commas (OpenAI's advice for vocabulary): they are boosted as ``hotwords``.
"""

from __future__ import annotations

import asyncio
import json
import math
import zlib
from typing import Any, AsyncIterator, Dict, List, Optional

from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.types import Message

from ..errors import AudioError
from ..formats import to_srt, to_vtt
from ..results import Segment, Transcript
from ..segmenter import transcript_of
from .scheduler import Refused, ServerClosing, Session, deliveries, feed_recording, settle
from .state import ServerState, openai_error, prompt_hotwords

__all__ = ["transcriptions", "models", "error_response", "RESPONSE_FORMATS"]

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
_GRANULARITIES = ("word", "segment")
#: How much of a body over the limit is still read (and dropped) so that the client, still sending,
#: reads the 413 instead of a reset connection.
_DRAIN_FACTOR = 4


class _TooLarge(Exception):
    pass


class _Idle(Exception):
    pass


def error_response(state: ServerState, status: int, message: str, *, kind: str = "invalid_request_error",
                   param: Optional[str] = None, code: Optional[str] = None) -> JSONResponse:
    """An error as OpenAI sends one, counted in the metrics."""
    state.metrics.error("http", str(status))
    return openai_error(status, message, kind=kind, param=param, code=code)


def models(request: Request) -> Response:
    state: ServerState = request.app.state.server
    if (denied := state.check_http_key(request)) is not None:
        return denied
    return JSONResponse({"object": "list", "data": [state.model_card()]})


async def transcriptions(request: Request) -> Response:
    state: ServerState = request.app.state.server
    if (denied := state.check_http_key(request)) is not None:
        return denied
    limit = state.limits.max_upload_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit * _DRAIN_FACTOR:
        return _too_large(state)
    request = Request(request.scope, _limited(request, limit, state.limits.idle_timeout))
    try:
        form = await request.form(max_files=1, max_fields=64)
    except _TooLarge:
        return _too_large(state)
    except _Idle:
        return error_response(state, 408, f"no data for {state.limits.idle_timeout:g} s: the request timed out",
                              code="request_timeout")
    except ClientDisconnect:
        state.metrics.error("http", "disconnect")
        return Response(status_code=400)
    except (ValueError, KeyError, HTTPException) as e:  # a malformed multipart body
        detail = e.detail if isinstance(e, HTTPException) else str(e)
        return error_response(state, 400, f"the request body is not valid multipart/form-data: {detail}")
    try:
        response = await _transcribe(state, form)
    except BaseException:
        await form.close()
        raise
    # The upload's spooled file is read until the response is sent (all of a streamed one).
    response.background = BackgroundTask(form.close)
    return response


def _too_large(state: ServerState) -> Response:
    return error_response(state, 413, f"the request body is larger than this server's limit of "
                                      f"{state.limits.max_upload_bytes} bytes", code="request_too_large")


def _limited(request: Request, limit: int, idle: float) -> Any:
    """The request's ``receive``, counting the body against ``limit`` and timing out when the client
    sends nothing for ``idle`` seconds. A body over the limit is read on to a bound and dropped."""
    received = 0
    receive = request.receive

    async def limited() -> Message:
        nonlocal received
        try:
            message = await asyncio.wait_for(receive(), idle)
        except asyncio.TimeoutError:
            raise _Idle() from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                while message.get("more_body") and received <= limit * _DRAIN_FACTOR:
                    message = await asyncio.wait_for(receive(), idle)
                    received += len(message.get("body", b""))
                raise _TooLarge()
        return message

    return limited


async def _transcribe(state: ServerState, form: Any) -> Response:
    def field(name: str, default: str = "") -> str:
        value = form.get(name, default)
        if not isinstance(value, str):
            raise _BadField(name, f"{name} must be a form field, not a file")
        return value

    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _BadField("file", "the request has no audio: send it as the multipart file field 'file'")
        response_format = field("response_format", "json")
        if response_format not in RESPONSE_FORMATS:
            raise _BadField("response_format", f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, "
                                               f"not {response_format!r}")
        granularities = [g for g in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")]
        for g in granularities:
            if g not in _GRANULARITIES:
                raise _BadField("timestamp_granularities", f"timestamp_granularities must be word or segment, "
                                                           f"not {g!r}")
        if granularities and response_format != "verbose_json":
            raise _BadField("timestamp_granularities", "timestamp_granularities needs response_format=verbose_json")
        stream = _boolean(field("stream", "false"), "stream")
        if stream and response_format not in ("json", "text"):
            raise _BadField("stream", f"stream=true sends json events: response_format must be json or text, "
                                      f"not {response_format!r}")
        language = state.language_for(field("language"))
        latency = field("latency_ms")
        latency_ms = int(latency) if latency.isdigit() else None
        if latency and latency_ms is None:
            raise _BadField("latency_ms", f"latency_ms must be a whole number of milliseconds, not {latency!r}")
        hotwords = prompt_hotwords(field("prompt"))
        try:
            state.model.check_hotwords(hotwords)
        except ValueError as e:
            raise _BadField("prompt", f"prompt: {e}") from None
        session = state.scheduler.open("http", latency_ms=latency_ms, chunking="offline", endpointing=True,
                                       language=language, hotwords=hotwords)
    except _BadField as e:
        return error_response(state, 400, e.message, param=e.param)
    except ServerClosing as e:
        return error_response(state, 503, str(e), kind="server_error", code="server_shutting_down")
    except Refused as e:
        return error_response(state, 429, str(e), kind="rate_limit_error", code="too_many_sessions")
    except ValueError as e:
        return error_response(state, 400, str(e))
    feeding = asyncio.create_task(feed_recording(session, upload.file))
    if stream:
        return StreamingResponse(_events(state, session, feeding), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    try:
        segments: List[Segment] = []
        duration = 0.0
        async for delivery in deliveries(session, feeding):
            segments.extend(delivery.update.segments)
            duration = delivery.seconds
        transcript = transcript_of(state.model.vocabulary, segments, duration)
    except (AudioError, ValueError, TypeError) as e:
        return error_response(state, 400, f"the audio cannot be read: {e}", param="file", code="invalid_audio")
    except ServerClosing as e:
        return error_response(state, 503, str(e), kind="server_error", code="server_shutting_down")
    finally:
        session.close()
        await settle(feeding)
    return _formatted(transcript, response_format, granularities, language, state.model.default_language)


class _BadField(Exception):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param, self.message = param, message


def _boolean(text: str, name: str) -> bool:
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0", ""):
        return False
    raise _BadField(name, f"{name} must be true or false, not {text!r}")


async def _events(state: ServerState, session: Session, feeding: "asyncio.Task[None]") -> AsyncIterator[bytes]:
    """OpenAI's streaming transcription events: ``transcript.text.delta`` as text is recognized, then
    ``transcript.text.done`` with the whole text; an error as an ``error`` object (the SDK raises it)."""
    text = ""
    duration = 0.0
    try:
        async for delivery in deliveries(session, feeding):
            update = delivery.update
            if update.new_text:
                text += update.new_text
                yield _sse({"type": "transcript.text.delta", "delta": update.new_text, "logprobs": []})
            duration = delivery.seconds
        yield _sse({"type": "transcript.text.done", "text": text, "logprobs": [], "usage": _usage(duration)})
    except (AudioError, ValueError, TypeError, ServerClosing) as e:
        state.metrics.error("http", "stream_error")
        yield _sse({"error": {"message": f"the audio cannot be read: {e}" if not isinstance(e, ServerClosing)
                              else str(e), "type": "invalid_request_error", "param": "file", "code": None}})
    finally:
        session.close()
        await settle(feeding)


def _sse(data: Dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode("utf-8")


def _usage(duration: float) -> Dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(duration)}


def _formatted(transcript: Transcript, response_format: str, granularities: List[str],
               language: Optional[str], default_language: Optional[str]) -> Response:
    if response_format == "json":
        return JSONResponse({"text": transcript.text, "usage": _usage(transcript.duration)})
    if response_format == "text":
        return PlainTextResponse(transcript.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_srt(transcript))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript), media_type="text/vtt")
    # The language Whisper names; a multilingual model's own (detected or asked) code.
    spoken = transcript.language or language or default_language or "english"
    body: Dict[str, Any] = {"task": "transcribe", "language": spoken, "duration": transcript.duration,
                            "text": transcript.text}
    if not granularities or "segment" in granularities:
        body["segments"] = [_segment(i, s) for i, s in enumerate(transcript.segments)]
    if "word" in granularities:
        body["words"] = [{"word": w.text, "start": w.start, "end": w.end} for w in transcript.words]
    body["usage"] = _usage(transcript.duration)
    return JSONResponse(body)


def _segment(index: int, segment: Segment) -> Dict[str, Any]:
    """A segment with Whisper's fields: the log-probability is the mean of the tokens' (their softmax
    probabilities at emission); there is no sampling temperature and no no-speech detector."""
    raw = segment.text.encode("utf-8")
    return {"id": index, "seek": int(round(segment.start * 100)), "start": segment.start, "end": segment.end,
            "text": segment.text, "tokens": [t.id for t in segment.tokens], "temperature": 0.0,
            "avg_logprob": sum(math.log(max(t.confidence, 1e-30)) for t in segment.tokens) / len(segment.tokens),
            "compression_ratio": len(raw) / len(zlib.compress(raw)) if raw else 0.0, "no_speech_prob": 0.0}
