"""A real server (uvicorn and grpc.aio, as `nemotron-cpp serve` runs them) on loopback, in a thread of
the test process, on free ports."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from nemotron_cpp import NemotronModel
from nemotron_cpp.server import ServerConfig, serve_async


@dataclass
class Running:
    port: int
    grpc_port: Optional[int]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def realtime_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime?intent=transcription"

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as response:
            return str(response.read().decode("utf-8"))

    def post(self, path: str, body: bytes, headers: Dict[str, str]) -> Tuple[int, Dict[str, Any]]:
        """A raw POST: (status, JSON body)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def metrics(self) -> Dict[str, float]:
        """/metrics as {name{labels}: value}."""
        text = self.get("/metrics")
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def sessions(self) -> Dict[str, float]:
        return {re.search(r'"(\w+)"', k).group(1): v for k, v in self.metrics().items()  # type: ignore[union-attr]
                if k.startswith("nemotron_sessions{")}


@contextlib.contextmanager
def running_server(model_path: Path, **config: Any) -> Iterator[Running]:
    """Serves the model file until the block ends, then stops the server as a signal would and waits."""
    model = NemotronModel(model_path, n_threads=1)
    ready = threading.Event()
    ports: Dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: Dict[str, BaseException] = {}

    def on_ready(port: int, grpc_port: Optional[int]) -> None:
        ports.update(port=port, grpc_port=grpc_port)
        ready.set()

    def run() -> None:
        try:
            loop.run_until_complete(serve_async(model, ServerConfig(**{"port": 0, "grpc_port": 0, **config}),
                                                on_ready, stop))
        except BaseException as e:  # noqa: BLE001 - reported to the test
            failure["error"] = e
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "the server did not start"
    if "error" in failure:
        raise failure["error"]
    try:
        yield Running(ports["port"], ports["grpc_port"])
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        assert not thread.is_alive(), "the server did not stop"
        model.close()


def commit_recording(ws: Any, pcm16: bytes) -> List[Dict[str, Any]]:
    """Appends 16-bit PCM to a Realtime session (whose format takes it) in 100 ms pieces, commits it,
    and returns the events up to the last item's completed transcription."""
    for i in range(0, len(pcm16), 3200):
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm16[i:i + 3200]).decode()}))
    ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    events: List[Dict[str, Any]] = []
    while not events or not events[-1]["type"].endswith("transcription.completed"):
        events.append(json.loads(ws.recv(timeout=30)))
    return events
