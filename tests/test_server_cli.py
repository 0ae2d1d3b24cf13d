"""`nemotron-cpp serve` as a user runs it: a process that serves all three protocols and, on SIGTERM,
finishes the work under way, refuses new work and exits, never hanging."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any, Iterator, List

import numpy as np
import pytest
import soundfile

riva_client = pytest.importorskip("riva.client")
websockets = pytest.importorskip("websockets")
pytest.importorskip("nemotron_cpp.server")

import websockets.sync.client  # noqa: E402

from nemotron_cpp import NemotronModel  # noqa: E402
from nemotron_cpp.demo import demo_model_path, demo_sample  # noqa: E402


def start(*args: str) -> "tuple[subprocess.Popen[str], int, int]":
    process = subprocess.Popen([sys.executable, "-m", "nemotron_cpp", "serve", "--port", "0", "--grpc-port", "0",
                                *args], stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "NEMOTRON_API_KEY": "k"})
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/v1 .*Riva gRPC 127\.0\.0\.1:(\d+); API key required", line)
        if found:
            return process, int(found.group(1)), int(found.group(2))
        assert line, "the server exited before it listened"
    process.kill()
    raise AssertionError("the server did not say where it listens")


def test_sigterm_finishes_the_stream_under_way_and_exits() -> None:
    process, port, grpc_port = start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as response:
            assert json.loads(response.read())["status"] == "ok"
        audio, _ = soundfile.read(demo_sample()[0], dtype="int16")
        data = audio.tobytes()
        with NemotronModel(demo_model_path(log=False), n_threads=1) as model:
            with model.stream(160) as s:
                expected = [seg.text for seg in list(s.feed(audio).segments) + list(s.finalize().segments)]
        sent: List[int] = []

        def paced() -> Iterator[bytes]:  # 8 s of audio in real time
            for i in range(0, len(data), 3200):
                time.sleep(0.1)
                sent.append(i)
                yield data[i:i + 3200]

        auth = riva_client.Auth(uri=f"127.0.0.1:{grpc_port}", metadata_args=[["authorization", "Bearer k"]])
        config = riva_client.StreamingRecognitionConfig(config=riva_client.RecognitionConfig(
            encoding=riva_client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, language_code="en-US"),
            interim_results=False)
        finals: List[str] = []
        failure: List[Any] = []

        def run() -> None:
            try:
                for r in riva_client.ASRService(auth).streaming_response_generator(paced(), config):
                    finals.extend(res.alternatives[0].transcript for res in r.results if res.is_final)
            except Exception as e:  # noqa: BLE001 - reported below
                failure.append(e)

        client = threading.Thread(target=run)
        client.start()
        live = websockets.sync.client.connect(f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription",
                                              additional_headers={"Authorization": "Bearer k"})
        assert json.loads(live.recv())["type"] == "session.created"
        while len(sent) < 20:  # two seconds into the stream
            time.sleep(0.05)
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        # A Realtime session is told the service restarts; new connections are refused.
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            live.recv(timeout=10)
        assert closed.value.rcvd is None or closed.value.rcvd.code in (1012, 1000)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
        client.join(30)
        assert not failure and finals == expected  # the stream under way finished, whole
        process.wait(30)
        assert process.returncode in (0, -signal.SIGTERM)
        assert time.monotonic() - stopped_at < 15
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_without_the_server_extra_says_how_to_get_it() -> None:
    # As if uvicorn were not installed: an import of it fails.
    code = ("import sys; sys.modules['uvicorn'] = None; from nemotron_cpp.cli import main; "
            "sys.exit(main(['serve', '--port', '0']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "the server needs the server extra (uvicorn is missing): pip install \"nemotron-cpp[server]\"" in out.stderr
