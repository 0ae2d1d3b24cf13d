"""The server: one ASGI app (OpenAI's HTTP and Realtime APIs, health, metrics) on uvicorn, and Riva's
gRPC service beside it in the same event loop, sharing one scheduler.

Why Starlette on uvicorn: the server needs routing, multipart uploads, server-sent events and
WebSockets, nothing more; Starlette is the small ASGI toolkit that FastAPI itself is built on
(without FastAPI's validation layer, which the protocols' own error formats would have to undo),
and uvicorn is the standard production ASGI server, with graceful shutdown and signal handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Optional

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from ..model import NemotronModel
from .openai_http import models, transcriptions
from .realtime import realtime
from .scheduler import Limits, Scheduler
from .state import ServerState

__all__ = ["ServerConfig", "create_app", "serve"]

log = logging.getLogger("nemotron_cpp.server")


@dataclass(frozen=True)
class ServerConfig:
    """Where and how the server listens; ``grpc_port=None`` serves no gRPC, ``port=0`` / ``grpc_port=0``
    take a free port (``on_ready`` is told which)."""

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: Optional[int] = 50051
    api_key: Optional[str] = None
    limits: Limits = field(default_factory=Limits)
    stream_latency_ms: int = 160  #: of Realtime and Riva streams that do not choose theirs
    language: Optional[str] = None  #: a multilingual model's language for sessions that name none
    grace: float = 10.0  #: seconds that work under way may take to finish at shutdown


def _health(request: Request) -> Response:
    state: ServerState = request.app.state.server
    if not state.scheduler.accepting:
        return JSONResponse({"status": "shutting down"}, 503)
    return JSONResponse({"status": "ok", "model": state.model_id, "sessions": state.scheduler.n_sessions})


def _metrics(request: Request) -> Response:
    state: ServerState = request.app.state.server
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")


def create_app(state: ServerState, lifespan: Optional[Callable[[Starlette], Any]] = None) -> Starlette:
    """The ASGI app of a server state."""
    app = Starlette(routes=[
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        WebSocketRoute("/v1/realtime", realtime),
        Route("/health", _health, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
    ], lifespan=lifespan)
    app.state.server = state
    return app


def serve(model: NemotronModel, config: ServerConfig = ServerConfig(),
          on_ready: Optional[Callable[[int, Optional[int]], None]] = None) -> None:
    """Serves ``model`` until SIGINT/SIGTERM (or, off the main thread, until the task is cancelled)."""
    asyncio.run(serve_async(model, config, on_ready))


async def serve_async(model: NemotronModel, config: ServerConfig = ServerConfig(),
                      on_ready: Optional[Callable[[int, Optional[int]], None]] = None,
                      stop: Optional[asyncio.Event] = None) -> None:
    """The server in the running loop; ``stop`` set ends it as a signal would."""
    import uvicorn

    scheduler = Scheduler(model, config.limits)
    try:
        state = ServerState(model, scheduler, config.limits, api_key=config.api_key,
                            stream_latency_ms=config.stream_latency_ms, language=config.language)
    except ValueError:
        scheduler.stop(0)
        raise
    server: Optional[uvicorn.Server] = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        grpc_server = None
        grpc_port: Optional[int] = None
        try:
            if config.grpc_port is not None:
                from .riva import start_grpc_server

                grpc_server, grpc_port = await start_grpc_server(state, config.host, config.grpc_port)
            assert server is not None
            if on_ready is not None:
                asyncio.get_running_loop().call_soon(_announce, server, on_ready, grpc_port)
            yield
        finally:
            # uvicorn has stopped taking connections and let the HTTP work under way finish (or
            # cancelled it after the grace); the gRPC calls and the scheduler get the same grace.
            scheduler.stop_accepting()
            if grpc_server is not None:
                await grpc_server.stop(config.grace)
            await asyncio.get_running_loop().run_in_executor(None, scheduler.stop, config.grace)

    app = create_app(state, lifespan)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                           timeout_graceful_shutdown=int(config.grace), ws_max_size=16 * 1024 * 1024,
                                           lifespan="on"))
    watcher = asyncio.create_task(_stop_on(stop, server)) if stop is not None else None
    try:
        await server.serve()
    finally:
        if watcher is not None:
            watcher.cancel()
        if not scheduler.stopped:
            scheduler.stop(0)


def _announce(server: Any, on_ready: Callable[[int, Optional[int]], None], grpc_port: Optional[int]) -> None:
    """Tells ``on_ready`` the HTTP port once uvicorn listens (after the lifespan's startup)."""
    if not server.started:
        asyncio.get_running_loop().call_later(0.01, _announce, server, on_ready, grpc_port)
        return
    port = server.servers[0].sockets[0].getsockname()[1]
    on_ready(port, grpc_port)


async def _stop_on(event: asyncio.Event, server: Any) -> None:
    await event.wait()
    server.should_exit = True
