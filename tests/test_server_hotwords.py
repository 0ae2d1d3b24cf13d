"""Phrase boosting through the server: OpenAI's `prompt` (HTTP and Realtime) and Riva's `speech_contexts`
boost their phrases as the model's hotwords do, with each protocol's own errors for phrases it cannot use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, List

import grpc
import pytest
import soundfile

openai = pytest.importorskip("openai")
riva_client = pytest.importorskip("riva.client")
websockets = pytest.importorskip("websockets")
pytest.importorskip("nemotron_cpp.server")

import websockets.sync.client  # noqa: E402

from nemotron_cpp import Boosting, NemotronModel  # noqa: E402
from nemotron_cpp.server.riva import RIVA_BOOST_PER_WEIGHT  # noqa: E402
from nemotron_cpp.server.state import prompt_hotwords  # noqa: E402

from server_harness import Running, commit_recording, running_server  # noqa: E402

CLIP = Path(__file__).resolve().parent / "reference" / "tiny" / "speech_b.wav"
PROMPT = "birch canoe, sea shells;stella\nlighthouse"
PHRASES = ["birch canoe", "sea shells", "stella", "lighthouse"]


@pytest.fixture(scope="module")
def tiny(fixtures_dir: Path) -> Path:
    return fixtures_dir / "layout-a-tiny.f32.gguf"


@pytest.fixture(scope="module")
def server(tiny: Path) -> Iterator[Running]:
    with running_server(tiny) as running:
        yield running


@pytest.fixture(scope="module")
def model(tiny: Path) -> Iterator[NemotronModel]:
    with NemotronModel(tiny, n_threads=1) as m:
        yield m


def test_prompt_phrases() -> None:
    assert prompt_hotwords(PROMPT) == PHRASES
    assert prompt_hotwords(" , \n") == []


def test_http_prompt(server: Running, model: NemotronModel) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    want = model.transcribe(CLIP, hotwords=PHRASES)
    assert want.text != model.transcribe(CLIP).text
    got = client.audio.transcriptions.create(model="x", file=("a.wav", CLIP.read_bytes()), prompt=PROMPT,
                                             response_format="verbose_json")
    assert [s.tokens for s in got.segments] == [[t.id for t in s.tokens] for s in want.segments]
    with pytest.raises(openai.BadRequestError, match="cannot spell: 'q'") as caught:
        client.audio.transcriptions.create(model="x", file=("a.wav", CLIP.read_bytes()), prompt="stella, quartz")
    assert caught.value.body["param"] == "prompt"  # type: ignore[index]


def test_realtime_prompt(server: Running, model: NemotronModel) -> None:
    audio, _ = soundfile.read(CLIP, dtype="int16")
    with model.stream(160, endpointing=False, hotwords=PHRASES) as s:
        s.feed(audio)
        expected = [seg.text for seg in s.finalize().segments]
    with websockets.sync.client.connect(server.realtime_url + "&latency_ms=160") as ws:
        ws.recv()
        ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None,
            "transcription": {"prompt": PROMPT}}}}}))
        updated = json.loads(ws.recv())
        assert updated["session"]["audio"]["input"]["transcription"]["prompt"] == PROMPT
        events = commit_recording(ws, audio.tobytes())
        ws.send(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_transcription": {"prompt": "日本"}}}))
        error = json.loads(ws.recv(timeout=30))
        ws.send(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_transcription": {"prompt": 7}}}))
        wrong_type = json.loads(ws.recv(timeout=30))
    assert [e["transcript"] for e in events if e["type"].endswith("completed")] == expected
    assert error["type"] == "error" and error["error"]["code"] == "invalid_value"
    assert error["error"]["param"] == "prompt" and "cannot spell" in error["error"]["message"]
    assert wrong_type["error"]["code"] == "invalid_value"


def riva_config(contexts: List[tuple]) -> "riva_client.RecognitionConfig":
    config = riva_client.RecognitionConfig(encoding=riva_client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000,
                                           language_code="en-US", audio_channel_count=1)
    for phrases, boost in contexts:
        riva_client.add_word_boosting_to_config(config, phrases, boost)
    return config


def test_riva_speech_contexts(server: Running, model: NemotronModel) -> None:
    audio, _ = soundfile.read(CLIP, dtype="int16")
    asr = riva_client.ASRService(riva_client.Auth(uri=f"127.0.0.1:{server.grpc_port}"))
    contexts = [(["stella", "sea shells"], 2 * RIVA_BOOST_PER_WEIGHT), (["birch canoe"], 0.0)]
    hotwords = [("stella", 2.0), ("sea shells", 2.0), "birch canoe"]
    want = model.transcribe(audio, hotwords=hotwords)
    assert want.text != model.transcribe(audio).text
    got = asr.offline_recognize(audio.tobytes(), riva_config(contexts))
    assert [r.alternatives[0].transcript for r in got.results] == [s.text for s in want.segments]

    with model.stream(160, hotwords=hotwords, boosting=Boosting()) as s:
        s.feed(audio)
        streamed = [seg.text for seg in s.finalize().segments]
    streaming = riva_client.StreamingRecognitionConfig(config=riva_config(contexts), interim_results=False)
    chunks = (audio[i:i + 1600].tobytes() for i in range(0, len(audio), 1600))
    finals = [r.alternatives[0].transcript for response in asr.streaming_response_generator(chunks, streaming)
              for r in response.results if r.is_final]
    assert finals == streamed

    for contexts, message in (([(["stella"], -10.0)], "negative boosts"), ([(["日本"], 20.0)], "cannot spell")):
        with pytest.raises(grpc.RpcError) as caught:
            asr.offline_recognize(audio.tobytes(), riva_config(contexts))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in caught.value.details()
