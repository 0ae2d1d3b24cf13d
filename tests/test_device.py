"""The engine on devices other than the host CPU: NeMo's results on every reference clip and mode, and
batched streams identical to single ones, on each device this build and machine have.

- ``rpc``: ggml's RPC backend serving this machine's CPU over loopback (``nemotron-cpp rpc-server``,
  started here). To the engine it is what a GPU is: a device whose memory the host cannot touch, so
  the weights, caches and graphs all live in the server, and every result crosses the socket. It
  needs ggml-python built with ``CMAKE_ARGS="-DGGML_RPC=on"``; .ci/run builds that variant in a venv
  of its own and runs this file there on every commit.
- ``gpu``: the first GPU (CUDA, Vulkan, Metal) where the build has one and the machine too.

Elsewhere each test skips and says what the build has.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

import nemotron_cpp
from nemotron_cpp import BackendError, NemotronModel
from nemotron_cpp.gguf.quantize import quantize_gguf
from test_batch import check_batched_results
from test_parity import MANIFEST, check_against_nemo, model_path

SYSTEM = nemotron_cpp.system_info()
HAS_RPC = "RPC" in SYSTEM.backends
GPUS = [d for d in SYSTEM.devices if d.type in ("gpu", "igpu")]
# ggml 0.15.3's Vulkan backend uses VK_EXT_layer_settings (an extension of late 2023) unconditionally, which
# Debian 12's Vulkan headers (1.3.239) lack: there the Vulkan build stops at ggml-vulkan.cpp.
NO_GPU = (f"no GPU device (backends built: {', '.join(SYSTEM.backends)}; devices: "
          f"{', '.join(d.name for d in SYSTEM.devices)})" +
          ("" if "Vulkan" in SYSTEM.backends else "; ggml's Vulkan backend needs Vulkan headers with "
           "VK_EXT_layer_settings (Debian 13 has them; Debian 12's 1.3.239 do not)"))
NO_RPC = (f"this ggml build has no RPC backend (backends: {', '.join(SYSTEM.backends)}); build ggml-python with "
          f"CMAKE_ARGS=\"-DGGML_RPC=on\" (.ci/run does, for its device leg)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def rpc_server() -> Iterator[str]:
    if not HAS_RPC:
        pytest.skip(NO_RPC)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "nemotron_cpp", "rpc-server", "--port", str(port), "--threads", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"the RPC server exited: {server.stdout.read()}"  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the RPC server did not listen within 30 s"
                time.sleep(0.1)
        yield f"rpc://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


@pytest.fixture(scope="module", params=["rpc", "gpu"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "rpc":
        return str(request.getfixturevalue("rpc_server"))
    if not GPUS:
        pytest.skip(NO_GPU)
    return "gpu"


def _cases() -> list:
    return [(clip["name"], case) for clip in MANIFEST["clips"] for case in clip["cases"]]


def test_every_reference_case_matches_nemo(backend: str, fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    model = NemotronModel(model_path("tiny", fixtures_dir, tmp_path_factory.mktemp("device")), backend=backend,
                          n_threads=1)
    assert model.backend != "CPU" and model.repacked_bytes == 0
    if backend.startswith("rpc://"):  # the weights were copied to the device: it cannot read the mapped file
        assert not model.info.uses_mmap
    for clip_name, case in _cases():
        check_against_nemo(model, "tiny", clip_name, case)


@pytest.mark.parametrize("weights", ["layout-a-tiny.f32.gguf", "layout-a-tiny.q8_0.gguf", "layout-b-tiny.q8_0.gguf",
                                     "q4_0"])
def test_batched_streams_are_each_streams_own(backend: str, fixtures_dir: Path, tmp_path: Path, weights: str) -> None:
    path = (quantize_gguf(fixtures_dir / "layout-a-tiny.f32.gguf", tmp_path / "tiny.q4_0.gguf", weight_type="q4_0")
            if weights == "q4_0" else fixtures_dir / weights)
    check_batched_results(NemotronModel(path, backend=backend, n_threads=1))


def test_rpc_errors(fixtures_dir: Path) -> None:
    path = fixtures_dir / "layout-a-tiny.q8_0.gguf"
    for bad in ("rpc://", "rpc://127.0.0.1", "rpc://:50052", "rpc://127.0.0.1:0", "rpc://127.0.0.1:70000"):
        with pytest.raises(ValueError, match="an RPC backend is 'rpc://HOST:PORT'"):
            NemotronModel(path, backend=bad)
    # Nothing listens on port 1.
    with pytest.raises(BackendError, match="no ggml RPC server answers at 127.0.0.1:1" if HAS_RPC else "no RPC backend"):
        NemotronModel(path, backend="rpc://127.0.0.1:1")


def test_rpc_server_command_without_rpc() -> None:
    if HAS_RPC:
        pytest.skip("this build has the RPC backend: the rpc_server fixture runs the command")
    proc = subprocess.run([sys.executable, "-m", "nemotron_cpp", "rpc-server", "--port", str(_free_port())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "this build has no RPC backend" in proc.stderr and "-DGGML_RPC=on" in proc.stderr
