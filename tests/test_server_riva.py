"""NVIDIA Riva's gRPC speech recognition, through `nvidia-riva-client`'s ASRService, against a real server
on loopback: streaming gives a stream's utterances (interim results, finals at endpoints, word times
and confidences), offline gives model.transcribe's; errors are gRPC status codes; nothing leaks."""

from __future__ import annotations

import io
import time
from typing import Any, Iterator, List, Optional

import numpy as np
import pytest
import soundfile

grpc = pytest.importorskip("grpc")
riva_client = pytest.importorskip("riva.client")
pytest.importorskip("nemotron_cpp.server")

from nemotron_cpp import Endpointing, NemotronModel  # noqa: E402
from nemotron_cpp.demo import demo_model_path, demo_sample  # noqa: E402
from nemotron_cpp.results import Segment  # noqa: E402
from nemotron_cpp.server import Limits  # noqa: E402

from server_harness import Running, running_server  # noqa: E402

KEY = "riva-key"


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with running_server(demo_model_path(log=False), api_key=KEY) as running:
        yield running


def asr(server: Running, key: str = KEY) -> Any:
    auth = riva_client.Auth(uri=f"127.0.0.1:{server.grpc_port}", use_ssl=False,
                            metadata_args=[["authorization", f"Bearer {key}"]])
    return riva_client.ASRService(auth)


def pcm16() -> bytes:
    audio, _ = soundfile.read(demo_sample()[0], dtype="int16")
    return audio.tobytes()


def config(**kwargs: Any) -> Any:
    fields = dict(encoding=riva_client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, language_code="en-US",
                  max_alternatives=1, enable_word_time_offsets=True)
    fields.update(kwargs)
    return riva_client.RecognitionConfig(**fields)


def stream_segments(latency: int = 160, endpointing: Any = True, audio: Optional[bytes] = None) -> List[Segment]:
    with NemotronModel(demo_model_path(log=False), n_threads=1) as model:
        with model.stream(latency, endpointing=endpointing) as s:
            update = s.feed(np.frombuffer(pcm16() if audio is None else audio, np.int16))
            return list(update.segments) + list(s.finalize().segments)


def check_alternative(alternative: Any, segment: Segment) -> None:
    assert alternative.transcript == segment.text
    assert [(w.word, w.start_time, w.end_time) for w in alternative.words] == [
        (w.text, int(round(w.start * 1000)), int(round(w.end * 1000))) for w in segment.words]
    assert [w.confidence for w in alternative.words] == pytest.approx([w.confidence for w in segment.words])
    assert alternative.confidence == pytest.approx(np.mean([w.confidence for w in segment.words]))


def test_streaming_recognize(server: Running) -> None:
    expected = stream_segments()
    assert len(expected) == 3
    audio = pcm16()
    chunks = [audio[i:i + 3200] for i in range(0, len(audio), 3200)]  # 100 ms pieces
    responses = list(asr(server).streaming_response_generator(
        chunks, riva_client.StreamingRecognitionConfig(config=config(), interim_results=True)))
    finals = [r.results[i] for r in responses for i in range(len(r.results)) if r.results[i].is_final]
    interims = [res for r in responses for res in r.results if not res.is_final]
    assert len(finals) == len(expected)
    for result, segment in zip(finals, expected):
        check_alternative(result.alternatives[0], segment)
    assert interims and all(res.alternatives[0].transcript for res in interims)
    # Each utterance's partials grow into its final text.
    assert any(expected[0].text.startswith(res.alternatives[0].transcript) for res in interims)
    assert finals[-1].audio_processed == pytest.approx(len(audio) / 2 / 16000, abs=0.2)


def test_streaming_without_interim_results_and_at_another_latency(server: Running) -> None:
    expected = stream_segments(1120)
    streaming = riva_client.StreamingRecognitionConfig(
        config=config(custom_configuration={"latency_ms": "1120"}), interim_results=False)
    responses = list(asr(server).streaming_response_generator([pcm16()], streaming))
    assert all(res.is_final for r in responses for res in r.results)
    assert [res.alternatives[0].transcript for r in responses for res in r.results] == [s.text for s in expected]


def test_endpointing_silence_from_the_client(server: Running) -> None:
    """Pipecat's NvidiaSTTService sends endpointing_config.stop_history=320: utterances end after 320 ms
    of silence, as a stream with that endpointing ends them."""
    from riva.client.proto import riva_asr_pb2 as rasr

    whole = pcm16()
    audio = whole[:2 * int(2.9 * 16000)] + whole[2 * int(4.0 * 16000):]  # a shorter pause after "afternoon"
    expected = stream_segments(endpointing=Endpointing(silence=0.32), audio=audio)
    assert len(expected) > len(stream_segments(audio=audio))  # the shorter pause ends an utterance too
    streaming = riva_client.StreamingRecognitionConfig(
        config=config(endpointing_config=rasr.EndpointingConfig(stop_history=320)), interim_results=False)
    responses = list(asr(server).streaming_response_generator([audio], streaming))
    assert [res.alternatives[0].transcript for r in responses for res in r.results] == [s.text for s in expected]


def test_offline_recognize_is_transcribe(server: Running) -> None:
    with NemotronModel(demo_model_path(log=False), n_threads=1) as model:
        expected = model.transcribe(demo_sample()[0]).segments
    wav = io.BytesIO()
    audio, _ = soundfile.read(demo_sample()[0], dtype="int16")
    soundfile.write(wav, audio, 16000, format="WAV", subtype="PCM_16")
    for data in (wav.getvalue(), pcm16(), demo_sample()[0].read_bytes()):  # WAV, raw samples, FLAC
        response = asr(server).offline_recognize(data, config())
        assert len(response.results) == len(expected)
        for result, segment in zip(response.results, expected):
            check_alternative(result.alternatives[0], segment)
    assert server.sessions()["riva"] == 0


@pytest.mark.parametrize("kwargs, code, message", [
    (dict(language_code="de-DE"), "INVALID_ARGUMENT", "English only"),
    (dict(encoding=riva_client.AudioEncoding.OGGOPUS), "INVALID_ARGUMENT", "LINEAR_PCM, MULAW or ALAW"),
    (dict(sample_rate_hertz=0), "INVALID_ARGUMENT", "sample_rate_hertz is needed"),
    (dict(sample_rate_hertz=1000), "INVALID_ARGUMENT", "at least"),
    (dict(custom_configuration={"latency_ms": "100"}), "INVALID_ARGUMENT", "latency_ms must be one of"),
])
def test_bad_configurations(server: Running, kwargs: Any, code: str, message: str) -> None:
    streaming = riva_client.StreamingRecognitionConfig(config=config(**kwargs), interim_results=True)
    with pytest.raises(grpc.RpcError) as caught:
        list(asr(server).streaming_response_generator([pcm16()], streaming))
    assert caught.value.code().name == code and message in caught.value.details()
    assert server.sessions()["riva"] == 0


def test_bad_requests_and_keys(server: Running) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        asr(server, "wrong").offline_recognize(pcm16(), config())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as caught:
        asr(server).offline_recognize(b"RIFF\x24\x00\x00\x00WAVEfmt ", config())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "cannot be read" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        asr(server).offline_recognize(b"\x01\x02\x03", config())  # an odd count of bytes
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Audio before the configuration: the raw stub, as a client that gets the order wrong.
    from riva.client.proto import riva_asr_pb2 as rasr

    service = asr(server)
    with pytest.raises(grpc.RpcError) as caught:
        list(service.stub.StreamingRecognize(iter([rasr.StreamingRecognizeRequest(audio_content=pcm16())]),
                                             metadata=service.auth.get_auth_metadata()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "first request" in caught.value.details()
    assert server.sessions()["riva"] == 0
    assert asr(server).offline_recognize(pcm16(), config()).results  # the server carries on


def test_limits_disconnects_and_silent_clients() -> None:
    with running_server(demo_model_path(log=False), limits=Limits(max_sessions=1, idle_timeout=2.0)) as server:
        service = asr(server)
        gate: List[bytes] = []

        def slow() -> Iterator[bytes]:
            yield pcm16()[:32000]
            while not gate:
                time.sleep(0.05)

        streaming = riva_client.StreamingRecognitionConfig(config=config(), interim_results=True)
        call = service.stub.StreamingRecognize(
            riva_client.asr.streaming_request_generator(slow(), streaming), metadata=service.auth.get_auth_metadata())
        deadline = time.monotonic() + 10
        while not server.sessions()["riva"] and time.monotonic() < deadline:  # it holds the one place
            time.sleep(0.02)
        with pytest.raises(grpc.RpcError) as caught:
            service.offline_recognize(pcm16(), config())
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        call.cancel()  # a client gone mid-utterance
        gate.append(b"")
        deadline = time.monotonic() + 10
        while server.sessions()["riva"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.sessions()["riva"] == 0
        # A client that sends its configuration and then nothing is cut off after the idle timeout.

        def silent() -> Iterator[bytes]:
            time.sleep(4)
            yield b""

        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            list(service.streaming_response_generator(silent(), streaming))
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - started < 3.9
        assert server.metrics()['nemotron_sessions_refused_total{protocol="riva"}'] == 1
