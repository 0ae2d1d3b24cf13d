"""Many sessions at once through one server: 16 Realtime sessions streaming in real time, then 16 Riva
streams, then every protocol at once. The scheduler batches their chunks (fewer steps than chunks),
and every session's transcript is exactly that of its audio run alone. Latencies are printed
(`pytest -s`); bench/serve.py measures them properly."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import soundfile
import soxr

openai = pytest.importorskip("openai")
websockets = pytest.importorskip("websockets")
riva_client = pytest.importorskip("riva.client")
pytest.importorskip("nemotron_cpp.server")

from nemotron_cpp import NemotronModel  # noqa: E402
from nemotron_cpp.demo import demo_model_path, demo_sample  # noqa: E402

from server_harness import Running, running_server  # noqa: E402

SESSIONS = 16
PIECE_SECONDS = 0.04


def audio_variants() -> List[np.ndarray]:
    """The demo sample with 0-0.75 s of silence before it: sessions whose chunks fall at different times."""
    audio, rate = soundfile.read(demo_sample()[0], dtype="float32")
    assert rate == 16000
    return [np.concatenate([np.zeros(int(rate * 0.05 * k), np.float32), audio]) for k in range(SESSIONS)]


def at_rate(audio: np.ndarray, rate: int) -> bytes:
    """16 kHz audio as 16-bit PCM at `rate`, as the clients send it."""
    return pcm16(audio if rate == 16000 else soxr.resample(audio, 16000, rate))


def alone(audio: np.ndarray, rate: int, latency: int = 160) -> List[str]:
    with NemotronModel(demo_model_path(log=False), n_threads=1) as model:
        with model.stream(latency, sample_rate=rate) as s:
            samples = np.frombuffer(at_rate(audio, rate), "<i2")
            return [seg.text for seg in list(s.feed(samples).segments) + list(s.finalize().segments)]


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def realtime_session(server: Running, audio: np.ndarray, latencies: List[float]) -> List[str]:
    """One client streaming 24 kHz PCM in real time; the completed transcripts. Appends to `latencies`
    the time from each utterance's first speech (as paced) to its first delta."""
    import websockets.asyncio.client

    rate = 24000
    data = at_rate(audio, rate)
    piece = int(rate * PIECE_SECONDS) * 2
    async with websockets.asyncio.client.connect(server.realtime_url) as ws:
        await ws.recv()
        started = time.monotonic()
        first_delta: Dict[str, float] = {}
        speech_ms: Dict[str, int] = {}
        transcripts: List[str] = []

        async def send() -> None:
            for k, i in enumerate(range(0, len(data), piece)):
                await asyncio.sleep(max(0.0, started + k * PIECE_SECONDS - time.monotonic()))
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(data[i:i + piece]).decode()}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))

        sender = asyncio.create_task(send())
        while not sender.done() or len(transcripts) < len(speech_ms) or not transcripts:
            event = json.loads(await asyncio.wait_for(ws.recv(), 30))
            kind = event["type"]
            assert kind != "error", event
            if kind == "input_audio_buffer.speech_started":
                speech_ms[event["item_id"]] = event["audio_start_ms"]
            elif kind.endswith("transcription.delta"):
                first_delta.setdefault(event["item_id"], time.monotonic())
            elif kind.endswith("transcription.completed"):
                transcripts.append(event["transcript"])
        await sender
        latencies += [first_delta[item] - (started + ms / 1000) for item, ms in speech_ms.items()]
        return transcripts


def riva_session(server: Running, audio: np.ndarray, out: List[Any], index: int, latencies: List[float]) -> None:
    data = at_rate(audio, 16000)
    piece = int(16000 * PIECE_SECONDS) * 2
    started = time.monotonic()

    def paced() -> Any:
        for k, i in enumerate(range(0, len(data), piece)):
            time.sleep(max(0.0, started + k * PIECE_SECONDS - time.monotonic()))
            yield data[i:i + piece]

    service = riva_client.ASRService(riva_client.Auth(uri=f"127.0.0.1:{server.grpc_port}"))
    config = riva_client.StreamingRecognitionConfig(config=riva_client.RecognitionConfig(
        encoding=riva_client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, language_code="en-US",
        enable_word_time_offsets=True), interim_results=True)
    finals = []
    for response in service.streaming_response_generator(paced(), config):
        for result in response.results:
            if result.is_final:
                finals.append(result.alternatives[0].transcript)
                # From the end of the utterance's last word (as paced) to its final result.
                latencies.append(time.monotonic() - (started + result.alternatives[0].words[-1].end_time / 1000))
    out[index] = finals


def percentiles(values: List[float]) -> Tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def test_sixteen_live_sessions_of_each_protocol() -> None:
    variants = audio_variants()
    expected = [alone(a, 24000) for a in variants]
    expected16 = [alone(a, 16000) for a in variants]
    with running_server(demo_model_path(log=False)) as server:
        latencies: List[float] = []

        async def all_realtime() -> List[List[str]]:
            return list(await asyncio.gather(*(realtime_session(server, a, latencies) for a in variants)))

        assert asyncio.run(all_realtime()) == expected
        rt = percentiles(latencies)

        riva_latencies: List[float] = []
        results: List[Any] = [None] * SESSIONS
        threads = [threading.Thread(target=riva_session, args=(server, a, results, k, riva_latencies))
                   for k, a in enumerate(variants)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == expected16
        metrics = server.metrics()
        assert metrics["nemotron_sessions_opened_total{protocol=\"realtime\"}"] == SESSIONS
        assert metrics["nemotron_sessions_opened_total{protocol=\"riva\"}"] == SESSIONS
        assert sum(v for k, v in metrics.items() if k.startswith("nemotron_sessions{")) == 0
        print(f"\n{SESSIONS} Realtime sessions, 160 ms, real time: speech to first delta p50 {rt[0] * 1000:.0f} ms, "
              f"p95 {rt[1] * 1000:.0f} ms; {SESSIONS} Riva streams: last word to final result p50 "
              f"{percentiles(riva_latencies)[0] * 1000:.0f} ms, p95 {percentiles(riva_latencies)[1] * 1000:.0f} ms; "
              f"chunks per step {metrics['nemotron_chunks_total'] / metrics['nemotron_steps_total']:.1f}")


def test_every_protocol_at_once_each_as_alone() -> None:
    """HTTP uploads (offline, 1120 ms), Realtime sessions (160 ms, 24 kHz) and Riva streams (160 ms,
    16 kHz) at once, their chunks batched (uploads arrive faster than real time): each result is its
    own audio's alone (the uploads' token ids, the streams' utterances)."""
    variants = audio_variants()[:4]
    with NemotronModel(demo_model_path(log=False), n_threads=1) as model:
        offline = [[[t.id for t in seg.tokens] for seg in model.transcribe(pcm16(a), sample_rate=16000).segments]
                   for a in variants]
    realtime = [alone(a, 24000) for a in variants]
    with running_server(demo_model_path(log=False)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        http: List[Any] = [None] * len(variants)

        def upload(k: int) -> None:
            wav = io.BytesIO()
            soundfile.write(wav, variants[k], 16000, format="WAV", subtype="PCM_16")
            result = client.audio.transcriptions.create(model="x", file=("a.wav", wav.getvalue()),
                                                        response_format="verbose_json")
            http[k] = [seg.tokens for seg in result.segments]

        uploads = [threading.Thread(target=upload, args=(k,)) for k in range(len(variants))]
        riva_out: List[Any] = [None] * len(variants)
        riva_threads = [threading.Thread(target=riva_session, args=(server, a, riva_out, k, []))
                        for k, a in enumerate(variants)]
        for t in uploads + riva_threads:
            t.start()

        async def all_realtime() -> List[List[str]]:
            return list(await asyncio.gather(*(realtime_session(server, a, []) for a in variants)))

        assert asyncio.run(all_realtime()) == realtime
        for t in uploads + riva_threads:
            t.join()
        assert http == offline
        assert riva_out == [alone(a, 16000) for a in variants]
        metrics = server.metrics()
        assert metrics["nemotron_chunks_total"] > metrics["nemotron_steps_total"]  # steps of several chunks
