"""OpenAI's HTTP transcription API, through the official `openai` SDK, against a real server on loopback:
every format gives what model.transcribe gives; bad requests get OpenAI's errors; nothing leaks."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile

openai = pytest.importorskip("openai")
pytest.importorskip("nemotron_cpp.server")

from nemotron_cpp import NemotronModel  # noqa: E402
from nemotron_cpp.demo import demo_model_path, demo_sample  # noqa: E402
from nemotron_cpp.formats import to_srt, to_vtt  # noqa: E402
from nemotron_cpp.results import Transcript  # noqa: E402

from server_harness import Running, running_server  # noqa: E402

KEY = "test-key"


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with running_server(demo_model_path(log=False), api_key=KEY) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Running) -> "openai.OpenAI":
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def expected() -> Transcript:
    with NemotronModel(demo_model_path(log=False), n_threads=1) as model:
        return model.transcribe(demo_sample()[0])


def sample_bytes() -> bytes:
    return demo_sample()[0].read_bytes()


def transcribe(client: "openai.OpenAI", **kwargs: object) -> object:
    return client.audio.transcriptions.create(model="nemotron", file=("sample.flac", sample_bytes()), **kwargs)


def test_json_and_text_are_transcribe(client: "openai.OpenAI", expected: Transcript) -> None:
    assert "wake me up" in expected.text  # the demo model recognizes its sample
    result = transcribe(client)
    assert result.text == expected.text
    assert result.usage.type == "duration" and result.usage.seconds == int(np.ceil(expected.duration))
    assert transcribe(client, response_format="text") == expected.text + "\n"


def test_subtitles_are_transcribe(client: "openai.OpenAI", expected: Transcript) -> None:
    assert len(expected.segments) == 3
    assert transcribe(client, response_format="srt") == to_srt(expected)
    assert transcribe(client, response_format="vtt") == to_vtt(expected)


def test_verbose_json_segments_and_words(client: "openai.OpenAI", expected: Transcript) -> None:
    result = transcribe(client, response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert result.text == expected.text and result.duration == expected.duration and result.language == "english"
    assert [(s.text, s.start, s.end, s.tokens) for s in result.segments] == [
        (s.text, s.start, s.end, [t.id for t in s.tokens]) for s in expected.segments]
    assert [(w.word, w.start, w.end) for w in result.words] == [(w.text, w.start, w.end) for w in expected.words]
    mean_log = [float(np.mean(np.log([t.confidence for t in s.tokens]))) for s in expected.segments]
    assert [s.avg_logprob for s in result.segments] == pytest.approx(mean_log, rel=1e-6)
    words_only = transcribe(client, response_format="verbose_json", timestamp_granularities=["word"])
    assert words_only.segments is None and len(words_only.words) == len(expected.words)
    segments_only = transcribe(client, response_format="verbose_json")
    assert segments_only.words is None and len(segments_only.segments) == len(expected.segments)


def test_streamed_events(client: "openai.OpenAI", expected: Transcript) -> None:
    events = list(transcribe(client, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) > 1  # the text arrives as it is recognized, not at the end
    assert "".join(deltas) == expected.text
    assert events[-1].type == "transcript.text.done" and events[-1].text == expected.text
    assert sum(e.type == "transcript.text.done" for e in events) == 1


def test_any_rate_and_format_and_latency(client: "openai.OpenAI") -> None:
    audio, rate = soundfile.read(demo_sample()[0], dtype="float32")
    wav = io.BytesIO()
    soundfile.write(wav, np.stack([audio, audio], axis=1), rate, format="WAV", subtype="PCM_16")
    with NemotronModel(demo_model_path(log=False), n_threads=1) as model:
        want = model.transcribe(wav.getvalue(), latency_ms=160).text
    got = client.audio.transcriptions.create(model="nemotron", file=("a.wav", wav.getvalue()),
                                             extra_body={"latency_ms": "160"})
    assert got.text == want


def test_models_health_and_metrics(client: "openai.OpenAI", server: Running) -> None:
    assert [m.id for m in client.models.list()] == ["demo.q8_0"]
    health = json.loads(server.get("/health"))
    assert health["status"] == "ok" and health["model"] == "demo.q8_0"
    metrics = server.metrics()
    assert metrics["nemotron_chunks_total"] > 0 and metrics["nemotron_audio_seconds_total"] > 0
    assert metrics['nemotron_chunk_compute_seconds_bucket{le="+Inf"}'] == metrics["nemotron_chunks_total"]
    assert "nemotron_realtime_margin_seconds" in metrics and "nemotron_queue_sessions" in metrics


@pytest.mark.parametrize("kwargs, status, message", [
    (dict(response_format="xml"), 400, "response_format must be one of json, text, srt, vtt, verbose_json"),
    (dict(language="de"), 400, "English only"),
    (dict(timestamp_granularities=["word"]), 400, "needs response_format=verbose_json"),
    (dict(response_format="srt", stream=True), 400, "response_format must be json or text"),
    (dict(extra_body={"latency_ms": "100"}), 400, "multiple of 80 ms"),
])
def test_bad_requests(client: "openai.OpenAI", server: Running, kwargs: dict, status: int, message: str) -> None:
    with pytest.raises(openai.BadRequestError, match=message) as caught:
        transcribe(client, **kwargs)
    assert caught.value.status_code == status
    assert server.sessions()["http"] == 0


@pytest.mark.parametrize("content, message", [
    (b"this is not audio at all, just some text in a file", "the audio cannot be read"),
    (b"", "the audio cannot be read"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "the audio cannot be read"),
])
def test_unreadable_audio(client: "openai.OpenAI", server: Running, content: bytes, message: str) -> None:
    for stream in (False, True):
        with pytest.raises(openai.APIError, match=message):
            result = client.audio.transcriptions.create(model="nemotron", file=("x.wav", content), stream=stream)
            list(result)  # a stream raises at its error event
    assert server.sessions()["http"] == 0
    assert transcribe(client).text  # the server carries on


def test_missing_file_and_wrong_key(client: "openai.OpenAI", server: Running) -> None:
    form = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nx\r\n--b--\r\n'
    status, body = server.post("/v1/audio/transcriptions", form, {
        "Authorization": f"Bearer {KEY}", "Content-Type": "multipart/form-data; boundary=b"})
    assert status == 400 and "no audio" in body["error"]["message"]
    status, body = server.post("/v1/audio/transcriptions", b"{]", {
        "Authorization": f"Bearer {KEY}", "Content-Type": "multipart/form-data"})
    assert status == 400 and "multipart" in body["error"]["message"]
    wrong = openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.audio.transcriptions.create(model="x", file=("a.flac", sample_bytes()))
    assert caught.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert server.metrics()['nemotron_errors_total{protocol="http",code="401"}'] >= 2


def test_body_over_the_limit_and_idle_client(tmp_path: Path) -> None:
    from nemotron_cpp.server import Limits

    with running_server(demo_model_path(log=False), grpc_port=None,
                        limits=Limits(max_upload_bytes=50_000, idle_timeout=1.0)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.audio.transcriptions.create(model="x", file=("a.flac", sample_bytes()))  # 109 kB
        assert caught.value.status_code == 413 and "limit of 50000 bytes" in caught.value.message
        # A client that sends its headers and then nothing.
        import socket

        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                         b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b")
            sock.settimeout(10)
            reply = b""
            while b"timed out" not in reply and (piece := sock.recv(4096)):
                reply += piece
        assert reply.startswith(b"HTTP/1.1 408") and b"timed out" in reply
        assert server.sessions()["http"] == 0
        # The server is still up.
        with NemotronModel(demo_model_path(log=False), n_threads=1) as model:
            small = io.BytesIO()
            soundfile.write(small, soundfile.read(demo_sample()[0])[0][:16000], 16000, format="FLAC")
            assert client.audio.transcriptions.create(model="x", file=("s.flac", small.getvalue())).text == \
                model.transcribe(small.getvalue()).text


def test_session_limit_is_429() -> None:
    from nemotron_cpp.server import Limits

    with running_server(demo_model_path(log=False), grpc_port=None, limits=Limits(max_sessions=1)) as server:
        import websockets.sync.client

        with websockets.sync.client.connect(server.realtime_url) as ws:  # holds the one session
            assert json.loads(ws.recv())["type"] == "session.created"
            client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
            with pytest.raises(openai.RateLimitError, match="limit of 1 sessions"):
                transcribe(client)
        assert server.metrics()['nemotron_sessions_refused_total{protocol="http"}'] == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_sessions=0), "max_sessions must be a positive integer"),
    (dict(max_buffer_seconds=float("inf")), "max_buffer_seconds must be a positive number of seconds"),
    (dict(idle_timeout=-1), "idle_timeout must be a positive number of seconds"),
    (dict(max_upload_bytes=0), "max_upload_bytes must be a positive integer"),
])
def test_limits_are_checked(kwargs: dict, message: str) -> None:
    from nemotron_cpp.server import Limits

    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)
