"""A server for voice agents: OpenAI's transcription API (HTTP and Realtime WebSocket) and NVIDIA
Riva's gRPC speech recognition, every session batched through one model (``nemotron-cpp serve``).

Needs the ``server`` extra: ``pip install "nemotron-cpp[server]"``.
"""

from __future__ import annotations

try:
    import grpc  # noqa: F401
    import riva.client.proto.riva_asr_pb2  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on what is installed
    raise ImportError(f"the server needs the server extra ({e.name} is missing): "
                      f"pip install \"nemotron-cpp[server]\"") from e

from .app import ServerConfig, create_app, serve, serve_async
from .scheduler import BufferFull, Limits, Refused, Scheduler, ServerClosing, Session

__all__ = ["ServerConfig", "Limits", "Scheduler", "Session", "Refused", "ServerClosing", "BufferFull", "create_app",
           "serve", "serve_async"]
