"""NVIDIA Riva's speech recognition service over gRPC: ``RivaSpeechRecognition.StreamingRecognize``
and ``Recognize``, with the protocol buffers that ``nvidia-riva-client`` ships, so Riva's own
clients (``riva.client.ASRService``, Pipecat's ``NvidiaSTTService``, LiveKit's NVIDIA plugin) talk
to this server as they would to Riva.

Streaming: the first request carries the configuration, the rest audio; interim results carry
the utterance in progress, a final result (``is_final``) each utterance as our endpointing ends
it, with word times and confidences (``endpointing_config.stop_history`` sets the silence, in ms,
that ends one). ``custom_configuration`` may set ``latency_ms`` (80, 160, 560 or 1120; default: the
server's, 160 unless ``serve --latency`` says otherwise). ``speech_contexts`` (Riva's word boosting)
boost their phrases as hotwords. ``Recognize`` gives what ``NemotronModel.transcribe`` gives, one result
per utterance.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, AsyncIterator, List, Optional, Sequence, Tuple

import grpc
import numpy as np
from riva.client.proto import riva_asr_pb2 as rasr
from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc
from riva.client.proto import riva_audio_pb2 as raudio

from ..audio import check_sample_rate, is_container
from ..boosting import Hotword
from ..errors import AudioError
from ..results import Segment
from ..segmenter import Endpointing
from .g711 import alaw_to_pcm16, ulaw_to_pcm16
from .scheduler import Refused, ServerClosing, Session, deliveries, feed_recording, settle
from .state import ServerState

__all__ = ["RivaASR", "start_grpc_server", "RIVA_BOOST_PER_WEIGHT"]

#: Riva's word boost that counts as a phrase weight of 1.0 (see RivaASR._hotwords).
RIVA_BOOST_PER_WEIGHT = 20.0


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class RivaASR(rasr_grpc.RivaSpeechRecognitionServicer):  # type: ignore[misc]
    """The servicer, on a ``grpc.aio`` server in the same event loop as the HTTP server."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def Recognize(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's method name)
        try:
            self._authorize(context)
            config = request.config
            language = self._check_config(config)
            if not request.audio:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "the request holds no audio")
            session = self._open(chunking="offline", latency_ms=None, language=language, hotwords=self._hotwords(config))
            feeding = asyncio.create_task(self._feed_whole(session, config, request.audio))
            segments: List[Segment] = []
            duration = 0.0
            try:
                async for delivery in deliveries(session, feeding):
                    segments.extend(delivery.update.segments)
                    duration = delivery.seconds
            except (AudioError, ValueError, TypeError) as e:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"the audio cannot be read: {e}") from None
            except ServerClosing as e:
                raise _Abort(grpc.StatusCode.UNAVAILABLE, str(e)) from None
            finally:
                session.close()
                await settle(feeding)
        except _Abort as e:
            await self._abort(context, e)
        return rasr.RecognizeResponse(results=[
            rasr.SpeechRecognitionResult(alternatives=[self._alternative(s, config)], channel_tag=1,
                                         audio_processed=duration) for s in segments])

    async def StreamingRecognize(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        session: Optional[Session] = None
        feeding: "Optional[asyncio.Task[None]]" = None
        try:
            self._authorize(context)
            first = await self._next(request_iterator)
            if first is None or not first.HasField("streaming_config"):
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                             "the first request must carry streaming_config, and the audio follow it")
            streaming = first.streaming_config
            config = streaming.config
            language = self._check_config(config)
            coding, rate = self._stream_coding(config)
            session = self._open(chunking="stream", latency_ms=self._latency(config), language=language,
                                 sample_rate=rate, endpointing=self._endpointing(config),
                                 hotwords=self._hotwords(config))
            feeding = asyncio.create_task(self._feed_stream(session, request_iterator, coding))
            try:
                async for delivery in deliveries(session, feeding):
                    update = delivery.update
                    processed = delivery.offset + delivery.seconds
                    results = [rasr.StreamingRecognitionResult(
                        alternatives=[self._alternative(s, config)], is_final=True, stability=1.0, channel_tag=1,
                        audio_processed=processed) for s in update.segments]
                    if streaming.interim_results and update.partial.strip() and not delivery.ended:
                        results.append(rasr.StreamingRecognitionResult(
                            alternatives=[rasr.SpeechRecognitionAlternative(transcript=update.partial.strip())],
                            is_final=False, stability=0.0, channel_tag=1, audio_processed=processed))
                    if results:
                        yield rasr.StreamingRecognizeResponse(results=results)
            except (AudioError, ValueError, TypeError) as e:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
            except _Abort:
                raise
            except ServerClosing as e:
                raise _Abort(grpc.StatusCode.UNAVAILABLE, str(e)) from None
        except _Abort as e:
            await self._abort(context, e)
        finally:
            if session is not None:
                session.close()
            if feeding is not None:
                await settle(feeding)

    # ---- pieces ------------------------------------------------------------------------------

    def _authorize(self, context: Any) -> None:
        metadata = dict(context.invocation_metadata() or ())
        if not self.state.key_matches(metadata.get("authorization")):
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong API key: send the metadata "
                                                          "'authorization: Bearer KEY'")

    async def _abort(self, context: Any, error: _Abort) -> None:
        self.state.metrics.error("riva", error.code.name)
        await context.abort(error.code, error.message)

    def _open(self, chunking: str, latency_ms: Optional[int], language: Optional[str], sample_rate: Optional[int] = None,
              endpointing: Any = True, hotwords: Optional[Sequence[Hotword]] = None) -> Session:
        try:
            return self.state.scheduler.open("riva", latency_ms=latency_ms, sample_rate=sample_rate,
                                             chunking=chunking, endpointing=endpointing, language=language,
                                             hotwords=hotwords)
        except ServerClosing as e:
            raise _Abort(grpc.StatusCode.UNAVAILABLE, str(e)) from None
        except Refused as e:
            raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)) from None
        except ValueError as e:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None

    def _check_config(self, config: Any) -> Optional[str]:
        """The configuration's language (see ServerState.language_for), after checking the rest."""
        if config.audio_channel_count > 1 and config.encoding != raudio.AudioEncoding.FLAC:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "raw audio must be one channel (audio_channel_count 1)")
        try:
            return self.state.language_for(config.language_code)
        except ValueError as e:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None

    @staticmethod
    def _hotwords(config: Any) -> List[Hotword]:
        """Riva's word boosting (``speech_contexts``: phrases and a boost each) as hotwords. Riva's boosts
        run to the tens (20 is a typical one), ours are a phrase's per-token score (1.0 by default): a
        boost counts as boost / RIVA_BOOST_PER_WEIGHT, and no boost (0) as the default. Negative
        boosts, which Riva uses to suppress words, are refused."""
        hotwords: List[Hotword] = []
        for context in config.speech_contexts:
            if not math.isfinite(context.boost) or context.boost < 0:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"speech_contexts boost must be >= 0 (negative "
                                                               f"boosts are not supported), not {context.boost}")
            for phrase in context.phrases:
                hotwords.append((phrase, context.boost / RIVA_BOOST_PER_WEIGHT) if context.boost else phrase)
        return hotwords

    @staticmethod
    def _endpointing(config: Any) -> Any:
        """Riva's ``endpointing_config.stop_history`` (ms of silence that end an utterance) as our
        endpointing's silence; without it, our default."""
        stop = config.endpointing_config.stop_history if config.HasField("endpointing_config") else 0
        return Endpointing(silence=stop / 1000) if stop > 0 else True

    def _latency(self, config: Any) -> int:
        text = config.custom_configuration.get("latency_ms", str(self.state.stream_latency_ms))
        if not text.isdigit() or int(text) not in self.state.model.latencies_ms:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"custom_configuration latency_ms must be one of "
                                                           f"{', '.join(map(str, self.state.model.latencies_ms))}, "
                                                           f"not {text!r}")
        return int(text)

    def _stream_coding(self, config: Any) -> Tuple[int, int]:
        """The coding and rate of a stream's audio: raw samples only (a stream has no file header)."""
        encoding = config.encoding
        if encoding not in (raudio.AudioEncoding.LINEAR_PCM, raudio.AudioEncoding.MULAW, raudio.AudioEncoding.ALAW):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"streams take LINEAR_PCM, MULAW or ALAW audio, not {raudio.AudioEncoding.Name(encoding)}")
        return encoding, self._rate(config)

    def _rate(self, config: Any) -> int:
        if config.sample_rate_hertz == 0:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "sample_rate_hertz is needed for raw audio")
        try:
            return check_sample_rate(config.sample_rate_hertz)
        except ValueError as e:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None

    @staticmethod
    def _samples(coding: int, data: bytes) -> np.ndarray:
        if coding == raudio.AudioEncoding.MULAW:
            return ulaw_to_pcm16(data)
        if coding == raudio.AudioEncoding.ALAW:
            return alaw_to_pcm16(data)
        if len(data) % 2:
            raise ValueError(f"LINEAR_PCM audio is 16-bit samples, but {len(data)} bytes came")
        return np.frombuffer(data, "<i2").astype(np.int16)

    async def _feed_whole(self, session: Session, config: Any, audio: bytes) -> None:
        """A recording, as ``transcribe`` reads one: a file (WAV, FLAC, Ogg) with its header, or raw
        samples at ``sample_rate_hertz``."""
        if is_container(audio[:4]):
            await feed_recording(session, audio)
        else:
            coding, source_rate = self._stream_coding(config)
            await feed_recording(session, self._samples(coding, audio), source_rate)

    async def _feed_stream(self, session: Session, requests: Any, coding: int) -> None:
        while True:
            request = await self._next(requests)
            if request is None:
                break
            if request.HasField("streaming_config"):
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "streaming_config comes once, in the first request")
            if request.audio_content:
                await session.write(self._samples(coding, request.audio_content))
        session.end()

    async def _next(self, requests: Any) -> Any:
        """The next request, or None at the end; a client silent for the idle timeout is cut off."""
        timeout = self.state.limits.idle_timeout
        try:
            return await asyncio.wait_for(requests.__anext__(), timeout)
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"no request for {timeout:g} s: the call is closed") \
                from None

    def _alternative(self, segment: Segment, config: Any) -> Any:
        words = segment.words
        # The language the model said it heard (a multilingual model's tag), else the one asked for.
        spoken = segment.language or config.language_code or "en-US"
        alternative = rasr.SpeechRecognitionAlternative(
            transcript=segment.text, language_code=[spoken],
            # Riva's confidence of an utterance: here the mean of its words' (each its least certain token's).
            confidence=sum(w.confidence for w in words) / len(words) if words else 0.0)
        if config.enable_word_time_offsets:
            alternative.words.extend(rasr.WordInfo(word=w.text, start_time=int(round(w.start * 1000)),
                                                   end_time=int(round(w.end * 1000)), confidence=w.confidence,
                                                   language_code=spoken) for w in words)
        return alternative


async def start_grpc_server(state: ServerState, host: str, port: int) -> Tuple[Any, int]:
    """Starts the gRPC server in the running loop; returns it and the port it listens on."""
    server = grpc.aio.server()
    rasr_grpc.add_RivaSpeechRecognitionServicer_to_server(RivaASR(state), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    await server.start()
    return server, bound
