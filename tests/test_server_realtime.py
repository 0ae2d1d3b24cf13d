"""OpenAI's Realtime API in transcription mode, through the `openai` SDK's Realtime client and a plain
`websockets` client speaking the documented events, against a real server on loopback: the items
are a stream's utterances of the same audio; malformed events get `error` events and the session
lives on; nothing leaks."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import pytest
import soundfile
import soxr

openai = pytest.importorskip("openai")
websockets = pytest.importorskip("websockets")
pytest.importorskip("nemotron_cpp.server")

import websockets.sync.client  # noqa: E402

from nemotron_cpp import Endpointing, NemotronModel  # noqa: E402
from nemotron_cpp.demo import demo_model_path, demo_sample  # noqa: E402
from nemotron_cpp.server import Limits  # noqa: E402

from server_harness import Running, running_server  # noqa: E402

KEY = "rt-key"
RATE = 24000


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with running_server(demo_model_path(log=False), grpc_port=None, api_key=KEY) as running:
        yield running


def pcm16(rate: int = RATE) -> bytes:
    """The demo sample as 16-bit PCM at `rate`."""
    audio, sr = soundfile.read(demo_sample()[0], dtype="float32")
    return (np.clip(soxr.resample(audio, sr, rate), -1, 1) * 32767).astype("<i2").tobytes()


def stream_segments(audio: bytes, rate: int, latency: int = 160, endpointing: Any = True,
                    coding: str = "pcm16") -> List[str]:
    """The utterances a stream of the model gives for the same samples, then finalized (the commit)."""
    with NemotronModel(demo_model_path(log=False), n_threads=1) as model:
        with model.stream(latency, sample_rate=rate, endpointing=endpointing) as s:
            samples = np.frombuffer(audio, "<i2") if coding == "pcm16" else audio
            segments = list(s.feed(samples).segments) + list(s.finalize().segments)
    return [seg.text for seg in segments]


def pieces(data: bytes, size: int = 3840) -> Iterator[str]:
    for i in range(0, len(data), size):
        yield base64.b64encode(data[i:i + size]).decode()


async def sdk_session(server: Running, session: Dict[str, Any], audio: bytes, n_items: int) -> List[Any]:
    """Streams `audio` through the SDK's Realtime client and commits; the events until `n_items` items
    have completed, and any that come in the half second after."""
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    events: List[Any] = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session=session)
        for piece in pieces(audio):
            await conn.input_audio_buffer.append(audio=piece)
        await conn.input_audio_buffer.commit()
        while sum(e.type == "conversation.item.input_audio_transcription.completed" for e in events) < n_items:
            events.append(await asyncio.wait_for(conn.recv(), 30))
            assert events[-1].type != "error", events[-1]
        try:
            while True:
                events.append(await asyncio.wait_for(conn.recv(), 0.5))
        except asyncio.TimeoutError:
            return events


def items(events: List[Any]) -> List[Tuple[str, str]]:
    """(transcript, the item's deltas joined) of each completed item, in order."""
    deltas: Dict[str, str] = {}
    out = []
    for e in events:
        if e.type == "conversation.item.input_audio_transcription.delta":
            deltas[e.item_id] = deltas.get(e.item_id, "") + e.delta
        elif e.type == "conversation.item.input_audio_transcription.completed":
            out.append((e.transcript, deltas.get(e.item_id, "")))
    return out


def test_sdk_items_are_the_streams_utterances(server: Running) -> None:
    audio = pcm16()
    expected = stream_segments(audio, RATE)
    assert len(expected) == 3 and "wake me up" in expected[0]
    session = {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": RATE},
        "transcription": {"model": "nemotron", "language": "en"},
        "turn_detection": {"type": "server_vad"}}}}
    events = asyncio.run(sdk_session(server, session, audio, len(expected)))
    assert events[0].type == "session.created" and events[1].type == "session.updated"
    got = items(events)
    assert [t for t, _ in got] == expected
    assert all(t == d for t, d in got)  # the deltas of each item add up to its transcript
    started = [e for e in events if e.type == "input_audio_buffer.speech_started"]
    stopped = [e for e in events if e.type == "input_audio_buffer.speech_stopped"]
    assert [e.item_id for e in started] == [e.item_id for e in stopped] == [
        e.item_id for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert all(a.audio_start_ms < b.audio_end_ms for a, b in zip(started, stopped))
    assert [e.audio_start_ms for e in started] == sorted(e.audio_start_ms for e in started)
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    assert [c.previous_item_id for c in committed] == [None] + [c.item_id for c in committed[:-1]]
    assert server.sessions()["realtime"] == 0


def test_latency_turn_detection_and_g711_per_session(server: Running) -> None:
    """The older event names (LiveKit's), mu-law at 8 kHz, 560 ms chunks, no turn detection: one item
    at the commit, the stream's whole text."""
    from nemotron_cpp.server.g711 import ulaw_to_pcm16

    audio16 = np.frombuffer(pcm16(8000), "<i2").astype(np.int32)
    # mu-law coded by the table's inverse: the code whose value is nearest each sample.
    table = ulaw_to_pcm16(bytes(range(256))).astype(np.int32)
    order = np.argsort(table)
    index = np.clip(np.searchsorted(table[order], audio16), 1, 255)
    nearer = np.where(np.abs(table[order][index - 1] - audio16) <= np.abs(table[order][index] - audio16),
                      index - 1, index)
    ulaw = order[nearer].astype(np.uint8).tobytes()
    expected = stream_segments(ulaw_to_pcm16(ulaw).tobytes(), 8000, latency=560, endpointing=False)
    with websockets.sync.client.connect(server.realtime_url,
                                        additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert json.loads(ws.recv())["type"] == "session.created"
        ws.send(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_format": "g711_ulaw", "turn_detection": None,
            "input_audio_transcription": {"model": "nemotron", "latency_ms": 560}}}))
        updated = json.loads(ws.recv())
        assert updated["type"] == "transcription_session.updated"
        assert updated["session"]["input_audio_transcription"]["latency_ms"] == 560
        send_and_commit(ws, ulaw)
        events = receive_until_completed(ws)
    assert not any(e["type"].startswith("input_audio_buffer.speech") for e in events)
    completed = [e for e in events if e["type"].endswith("transcription.completed")]
    assert len(expected) == 1 and [e["transcript"] for e in completed] == expected


def send_and_commit(ws: Any, audio: bytes, then: str = "input_audio_buffer.commit") -> None:
    """Appends the audio in pieces, then commits (or sends `then`)."""
    for piece in pieces(audio):
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
    ws.send(json.dumps({"type": then}))


def receive_until_completed(ws: Any, count: int = 1) -> List[Dict[str, Any]]:
    events = []
    while sum(e["type"].endswith("transcription.completed") for e in events) < count:
        events.append(json.loads(ws.recv(timeout=30)))
    return events


@pytest.mark.parametrize("event, code", [
    ("{not json", "invalid_json"),
    ('["a list"]', "invalid_event"),
    ('{"type": "response.create"}', "unknown_event"),
    ('{"type": "input_audio_buffer.append", "audio": "@@not base64@@"}', "invalid_audio"),
    ('{"type": "input_audio_buffer.append"}', "invalid_event"),
    ('{"type": "session.update", "session": {"type": "realtime"}}', "invalid_value"),
    ('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"format": '
     '{"type": "audio/opus"}}}}}', "invalid_value"),
    ('{"type": "transcription_session.update", "session": {"input_audio_transcription": {"language": "fr"}}}',
     "invalid_value"),
    ('{"type": "transcription_session.update", "session": {"input_audio_transcription": {"latency_ms": 100}}}',
     "invalid_value"),
    ('{"type": "transcription_session.update", "session": {"turn_detection": {"type": "magic"}}}', "invalid_value"),
    ('{"type": "input_audio_buffer.commit"}', "input_audio_buffer_commit_empty"),
])
def test_malformed_events_get_errors_and_the_session_lives_on(server: Running, event: str, code: str) -> None:
    audio = pcm16()
    with websockets.sync.client.connect(server.realtime_url,
                                        additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert json.loads(ws.recv())["type"] == "session.created"
        ws.send(json.dumps({"type": "input_audio_buffer.append", "event_id": "mine",
                            "audio": base64.b64encode(b"\x00").decode()}))
        odd = json.loads(ws.recv())
        assert odd["type"] == "error" and odd["error"]["code"] == "invalid_audio"
        assert odd["error"]["event_id"] == "mine"
        ws.send(event)
        error = json.loads(ws.recv())
        assert error["type"] == "error" and error["error"]["code"] == code, error
        # The session carries on: audio after the error is transcribed.
        send_and_commit(ws, audio)
        events = receive_until_completed(ws, 3)
    assert [e["transcript"] for e in events if e["type"].endswith("transcription.completed")] == \
        stream_segments(audio, RATE)


def test_clear_forgets_the_utterance_in_progress(server: Running) -> None:
    audio = pcm16()
    half = len(audio) // 2 // 2 * 2
    with websockets.sync.client.connect(server.realtime_url,
                                        additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        ws.recv()
        send_and_commit(ws, audio[:half], "input_audio_buffer.clear")
        events = []
        while not events or events[-1]["type"] != "input_audio_buffer.cleared":
            events.append(json.loads(ws.recv(timeout=30)))
        send_and_commit(ws, audio)
        after = receive_until_completed(ws, 3)
    assert [e["transcript"] for e in after if e["type"].endswith("transcription.completed")] == \
        stream_segments(audio, RATE)
    # Times go on counting from the start of the connection's audio.
    starts = [e["audio_start_ms"] for e in after if e["type"] == "input_audio_buffer.speech_started"]
    assert starts[0] >= 1000 * (half // 2) / RATE


def test_refusals_disconnects_and_idle_clients() -> None:
    with running_server(demo_model_path(log=False), grpc_port=None, api_key=KEY,
                        limits=Limits(max_sessions=2, idle_timeout=1.0)) as server:
        headers = {"Authorization": f"Bearer {KEY}"}
        with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
            websockets.sync.client.connect(server.realtime_url, additional_headers={"Authorization": "Bearer no"})
        assert caught.value.response.status_code == 401
        with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
            websockets.sync.client.connect(server.realtime_url.replace("intent=transcription", "model=gpt"),
                                           additional_headers=headers)
        assert caught.value.response.status_code == 400
        # A client gone mid-utterance, and one that sends nothing: both sessions end.
        gone = websockets.sync.client.connect(server.realtime_url, additional_headers=headers)
        gone.recv()
        for piece in list(pieces(pcm16()))[:40]:
            gone.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
        silent = websockets.sync.client.connect(server.realtime_url, additional_headers=headers)
        silent.recv()
        with websockets.sync.client.connect(server.realtime_url, additional_headers=headers) as third:
            busy = json.loads(third.recv())
            assert busy["type"] == "error" and busy["error"]["code"] == "too_many_sessions"
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                third.recv()
            assert closed.value.rcvd.code == 1013
        gone.close()
        idle = json.loads(silent.recv(timeout=10))
        assert idle["type"] == "error" and idle["error"]["code"] == "idle_timeout"
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            silent.recv(timeout=10)
        deadline = time.monotonic() + 10
        while server.sessions()["realtime"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.sessions()["realtime"] == 0
        metrics = server.metrics()
        assert metrics['nemotron_sessions_refused_total{protocol="realtime"}'] == 1
        assert metrics['nemotron_errors_total{protocol="realtime",code="idle_timeout"}'] == 1


def test_audio_faster_than_recognized_is_refused_beyond_the_buffer() -> None:
    """A client appending far faster than real time gets input_audio_buffer_full for the appends that
    would hold more than --max-buffer seconds waiting; those accepted are transcribed, and the session
    carries on."""
    with running_server(demo_model_path(log=False), grpc_port=None,
                        limits=Limits(max_buffer_seconds=0.5)) as server:
        audio = pcm16()
        with websockets.sync.client.connect(server.realtime_url) as ws:
            ws.recv()
            for _ in range(8):  # 8 s each, as fast as the socket takes them
                ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}))
            ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            events = [json.loads(ws.recv(timeout=60))]
            while not (events[-1]["type"].endswith("transcription.completed") and "wake" in events[-1]["transcript"]):
                events.append(json.loads(ws.recv(timeout=60)))
        full = [e for e in events if e["type"] == "error"]
        assert full and all(e["error"]["code"] == "input_audio_buffer_full" for e in full)
        assert len(full) < 8  # the first append, at least, was taken, and is transcribed


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_g711_tables_are_the_standards() -> None:
    """Every mu-law and A-law code decodes as Python's audioop (the ITU-T G.711 reference tables) does."""
    audioop = pytest.importorskip("audioop")  # gone from Python 3.13
    from nemotron_cpp.server.g711 import alaw_to_pcm16, ulaw_to_pcm16

    codes = bytes(range(256))
    np.testing.assert_array_equal(ulaw_to_pcm16(codes), np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2"))
    np.testing.assert_array_equal(alaw_to_pcm16(codes), np.frombuffer(audioop.alaw2lin(codes, 2), "<i2"))
