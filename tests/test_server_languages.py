"""A multilingual model through the server and the command line: the language each client asks for (a
locale, or a language alone) is the stream's, and what it recognizes is what the model gives alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import soundfile

openai = pytest.importorskip("openai")
riva_client = pytest.importorskip("riva.client")
websockets = pytest.importorskip("websockets")
pytest.importorskip("nemotron_cpp.server")

import websockets.sync.client  # noqa: E402

from nemotron_cpp import NemotronModel  # noqa: E402
from nemotron_cpp.gguf.convert import convert_nemo  # noqa: E402

from server_harness import Running, commit_recording, running_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO / "tests" / "reference" / "tiny-multilingual"


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_nemo(REPO / "tests" / "fixtures" / "tiny-multilingual.nemo",
                        tmp_path_factory.mktemp("multilingual") / "tiny-multilingual.gguf")


@pytest.fixture(scope="module")
def server(multilingual: Path) -> Iterator[Running]:
    with running_server(multilingual) as running:
        yield running


def clip(language: str) -> Path:
    return next((CLIPS / language).glob("*.wav"))


def test_http_language(server: Running, multilingual: Path) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    with NemotronModel(multilingual, n_threads=1) as model:
        for asked, code in (("de", "de-DE"), ("fr_FR", "fr-FR"), ("", "auto")):
            want = model.transcribe(clip(code), language=code)
            got = client.audio.transcriptions.create(model="x", file=("a.wav", clip(code).read_bytes()),
                                                     language=asked, response_format="verbose_json")
            assert [s.tokens for s in got.segments] == [[t.id for t in s.tokens] for s in want.segments], asked
            assert got.language == (code if asked else "auto")
    with pytest.raises(openai.BadRequestError, match="knows the languages auto, de-DE, en-US, es-ES, fr-FR, it-IT"):
        client.audio.transcriptions.create(model="x", file=("a.wav", clip("de-DE").read_bytes()), language="ja")


def test_riva_language(server: Running, multilingual: Path) -> None:
    audio, _ = soundfile.read(clip("es-ES"), dtype="int16")
    with NemotronModel(multilingual, n_threads=1) as model, model.stream(320, language="es-ES") as s:
        expected = [seg.text for seg in list(s.feed(audio).segments) + list(s.finalize().segments)]
    service = riva_client.ASRService(riva_client.Auth(uri=f"127.0.0.1:{server.grpc_port}"))
    config = riva_client.StreamingRecognitionConfig(config=riva_client.RecognitionConfig(
        encoding=riva_client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, language_code="es-ES",
        custom_configuration={"latency_ms": "320"}), interim_results=False)
    results = [r for response in service.streaming_response_generator([audio.tobytes()], config)
               for r in response.results]
    assert [r.alternatives[0].transcript for r in results] == expected
    assert [list(r.alternatives[0].language_code) for r in results] == [["es-ES"]] * len(results)
    with pytest.raises(Exception, match="knows the languages"):
        list(service.streaming_response_generator([audio.tobytes()], riva_client.StreamingRecognitionConfig(
            config=riva_client.RecognitionConfig(encoding=riva_client.AudioEncoding.LINEAR_PCM,
                                                 sample_rate_hertz=16000, language_code="ja-JP"))))


def test_realtime_language(server: Running, multilingual: Path) -> None:
    audio, _ = soundfile.read(clip("it-IT"), dtype="int16")
    with NemotronModel(multilingual, n_threads=1) as model, model.stream(320, language="it-IT",
                                                                          endpointing=False) as s:
        s.feed(audio)
        expected = [seg.text for seg in s.finalize().segments]
    with websockets.sync.client.connect(server.realtime_url + "&latency_ms=320") as ws:
        ws.recv()
        ws.send(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "turn_detection": None,
            "input_audio_transcription": {"language": "it"}}}))
        assert json.loads(ws.recv())["type"] == "transcription_session.updated"
        ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}))
        assert json.loads(ws.recv())["type"] == "session.updated"
        events = commit_recording(ws, audio.tobytes())
        ws.send(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_transcription": {"language": "xx"}}}))
        error = json.loads(ws.recv(timeout=30))
    assert [e["transcript"] for e in events if e["type"].endswith("completed")] == expected
    assert error["type"] == "error" and error["error"]["code"] == "invalid_value"


def test_command_line_language(multilingual: Path) -> None:
    run = [sys.executable, "-m", "nemotron_cpp"]
    info = subprocess.run(run + ["info", str(multilingual)], capture_output=True, text=True, timeout=120)
    assert "languages    auto, de-DE, en-US, es-ES, fr-FR, it-IT (default auto; 128 prompts)" in info.stdout
    out = subprocess.run(run + ["transcribe", str(clip("de-DE")), "-m", str(multilingual), "--language", "de-DE",
                                "--format", "json", "-q"], capture_output=True, text=True, timeout=120)
    with NemotronModel(multilingual, n_threads=1) as model:
        want = model.transcribe(clip("de-DE"), language="de-DE")
    assert out.returncode == 0, out.stderr
    assert [t["id"] for t in json.loads(out.stdout)["tokens"]] == [t.id for t in want.tokens]
    bad = subprocess.run(run + ["transcribe", str(clip("de-DE")), "-m", str(multilingual), "--language", "xx"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "unknown language 'xx'" in bad.stderr


def test_the_servers_default_language(multilingual: Path) -> None:
    """`serve --language fr` (ServerConfig.language): sessions that name no language hear French."""
    with running_server(multilingual, grpc_port=None, language="fr") as fr_server:
        client = openai.OpenAI(base_url=fr_server.base_url, api_key="none", max_retries=0)
        got = client.audio.transcriptions.create(model="x", file=("a.wav", clip("fr-FR").read_bytes()),
                                                 response_format="verbose_json")
    with NemotronModel(multilingual, n_threads=1) as model:
        want = model.transcribe(clip("fr-FR"), language="fr-FR")
    assert got.language == "fr-FR" and [s.tokens for s in got.segments] == [[t.id for t in s.tokens]
                                                                            for s in want.segments]
    with pytest.raises(ValueError, match="knows the languages"):
        with running_server(multilingual, grpc_port=None, language="xx"):
            pass


def test_converted_to_nvidias_layout(tmp_path: Path) -> None:
    """The converter writes the prompt dictionary as NVIDIA's `code:index` strings, in the checkpoint's
    order, and the kernel in f32 whatever the weight type."""
    path = convert_nemo(REPO / "tests" / "fixtures" / "tiny-multilingual.nemo", tmp_path / "asr.gguf", layout="asr",
                        weight_type="q8_0")
    with NemotronModel(path, n_threads=1) as model:
        assert model.languages == ("en-US", "es-ES", "fr-FR", "de-DE", "it-IT", "auto")
        assert model.info.default_language == "auto" and model.hparams.att_left_context == 56
        assert model.latencies_ms == (320, 80, 560, 1120)
        assert next(g for g in model.tensor_groups if g.name == "prompt").type == "f32"
        assert model.transcribe(clip("it-IT"), language="it-IT").text
