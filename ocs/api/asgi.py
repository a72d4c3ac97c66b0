"""The ASGI application and its lifecycle: ``create_app`` builds it; ``start_api`` runs
uvicorn in the current event loop (next to the Diameter server in ``ocs serve``) and
returns a handle to stop it; ``serve_api`` runs it alone until SIGTERM/SIGINT (``ocs api``),
with the metrics port (``/metrics``, ``/healthz``, ``/readyz``) as ``ocs serve`` has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from redis.exceptions import RedisError

from ocs.api import (
    catalogue,
    events,
    imports,
    invoices,
    limits,
    operator,
    pools,
    sessions,
    sim_bulk,
    subscriptions,
    thresholds,
    tokens,
    usage,
    wallets,
    webhooks,
)
from ocs.api.auth import Authenticate, TokenCache
from ocs.api.health import router as health_router
from ocs.api.hot_routes import HotRoutes
from ocs.api.problems import PROBLEM_JSON, ProblemDocument, install
from ocs.api.state import ApiState
from ocs.balance import BalanceStore
from ocs.config import Settings
from ocs.errors import bind, naming_port
from ocs.network import NetworkCommands
from ocs.observability.endpoint import start_ops_server
from ocs.observability.health import default_health, redis_check
from ocs.observability.metrics import api_metrics
from ocs.offline.db import LazyDatabase
from ocs.provisioning.catalogues import TenantCatalogues
from ocs.redis_client import RedisClient, RedisHandle, client_for_url, open_redis

API_REDIS_TIMEOUT = 5.0  # seconds per Redis command (the API is not the real-time path)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemDocument, "description": text}
    for code, text in (
        (400, "malformed request"),
        (401, "missing or invalid token"),
        (403, "insufficient scope"),
        (404, "not found"),
        (409, "conflict"),
        (413, "body too large"),
        (422, "invalid request"),
        (503, "store unavailable"),
    )
}


async def _open(settings: Settings, redis_url: str | None) -> RedisHandle:
    url = redis_url or settings.redis_url
    if url:
        return RedisHandle(client_for_url(url, timeout=API_REDIS_TIMEOUT), url)
    return await open_redis(settings, timeout=API_REDIS_TIMEOUT)


def build_state(settings: Settings, redis: RedisClient) -> ApiState:
    store = BalanceStore(redis)
    network = NetworkCommands(redis)
    catalogues = TenantCatalogues(
        store, Path(settings.data_dir), on_change=network.broadcast_refresh
    )
    token_cache = TokenCache(redis, settings.token_cache_ttl)
    state = ApiState(settings, redis, store, catalogues, network, token_cache)
    state.database = LazyDatabase(settings)
    return state


def create_app(
    settings: Settings,
    *,
    redis: RedisClient | None = None,
    redis_url: str | None = None,
    hot_routes: bool = True,
) -> FastAPI:
    """The API. With ``redis`` the caller owns the client; otherwise one is opened at
    start-up (``redis_url``, else ``settings.redis_url``, else the embedded Redis).
    ``hot_routes`` False sends top-ups and wallet reads through FastAPI too (tests compare
    both ways; ``tools/bench_api.py --no-hot-routes``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        handle = None if redis is not None else await _open(settings, redis_url)
        client = redis if redis is not None else handle.client  # type: ignore[union-attr]
        api = build_state(settings, client)
        app.state.api = api
        # the journal of a catalogue change that died (ocs.provisioning.journal); the next
        # change of the tenant completes it too, so a store outage here is no reason to stop
        with contextlib.suppress(RedisError):
            await api.catalogues.complete_pending()
        # The modules, the app and its routes live as long as the process (~80,000 objects,
        # ~50 ms of CPU per full collection on the benchmark machine): move them out of the
        # collector's sight, as the charging runtime does, so full collections stay short.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await api.drain()
            if handle is not None:
                await handle.close()

    # /docs (Swagger UI) and /redoc (ReDoc) load their scripts, styles and icon from the
    # fastapi-offline package's copies under /static-offline-docs, not from a CDN: the pages
    # work without internet access. No online validator badge either.
    app = FastAPIOffline(
        swagger_ui_parameters={"validatorUrl": None},
        title="ocs API",
        version="1",
        description="Wallets, pools, subscriptions, catalogue and events of one tenant "
        "(by bearer token). Amounts are integers in minor units. Errors are RFC 9457 "
        "problem documents.",
        lifespan=lifespan,
        responses=ERRORS,
        # No OpenTelemetry: metrics are Prometheus (ocs.observability). With it on, FastAPI
        # asks the global tracer, meter and logger providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install(app)
    api_metrics()  # its series (top-ups, Redis errors) exported from the start, at 0
    routers = (
        wallets,
        pools,
        sim_bulk,  # before subscriptions: /bulk/state is not /{imsi}/state
        subscriptions,
        limits,
        sessions,
        catalogue,
        events,
        imports,
        tokens,
        operator,
        usage,
        invoices,
        thresholds,
        webhooks,
    )
    for module in routers:
        app.include_router(module.router)
    app.include_router(health_router)  # /healthz, /readyz (no token)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if hot_routes:
        app.add_middleware(HotRoutes)  # added first: innermost, behind every other middleware
    app.add_middleware(imports.ImportBodyLimit)  # BodyLimit, larger for /v1/imports
    app.add_middleware(Authenticate)  # outermost: the token before a byte of the body
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with every error response documented as a problem document."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    problem = {"$ref": "#/components/schemas/ProblemDocument"}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for code, response in operation.get("responses", {}).items():
                if code[:1] in ("4", "5"):
                    response["content"] = {PROBLEM_JSON: {"schema": problem}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ProblemDocument", ProblemDocument.model_json_schema())
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process lifecycle owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class ApiServer:
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int
    app: FastAPI

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def start_api(
    settings: Settings,
    *,
    redis_url: str | None = None,
    host: str | None = None,
    port: int | None = None,
    sock: socket.socket | None = None,
    hot_routes: bool = True,
) -> ApiServer:
    """Serve the API on ``host`` (default ``settings.host``) and ``port`` (default
    ``settings.http_port``; 0 picks a free one) in this event loop, or on ``sock``, a bound
    socket (a worker of ``ocs serve --workers N`` passes one with SO_REUSEPORT)."""
    app = create_app(settings, redis_url=redis_url, hot_routes=hot_routes)
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=settings.http_port if port is None else port,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,  # uvicorn logs through the process handlers (--log-format json)
        lifespan="on",
        server_header=False,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(
        server.serve(sockets=[sock] if sock is not None else None), name="ocs-api"
    )
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the API server stopped during start-up")
        await asyncio.sleep(0.01)
    sockets = server.servers[0].sockets
    return ApiServer(server, task, int(sockets[0].getsockname()[1]), app)


async def serve_api(
    settings: Settings, *, redis_url: str | None = None, stop: asyncio.Event | None = None
) -> None:
    """``ocs api``: serve until SIGTERM or SIGINT (or ``stop`` is set), with the metrics
    port (``settings.metrics_port``, 0: none) as ``ocs serve`` has it: ``/metrics``,
    ``/healthz`` and ``/readyz``, whose check is the API's Redis connection (``api_redis``).
    A taken HTTP or metrics port is :class:`~ocs.errors.PortInUse` naming it."""
    sock = bind("HTTP", "--http-port", settings.host, settings.http_port)
    api = await start_api(settings, redis_url=redis_url, sock=sock)
    closers: list[Callable[[], Awaitable[None]]] = [api.stop]
    try:
        state: ApiState = api.app.state.api  # set by the lifespan, which has run
        closers.append(default_health().add("api_redis", redis_check(state.redis)))
        if settings.metrics_port:
            with naming_port("metrics", "--metrics-port", settings.host, settings.metrics_port):
                ops = start_ops_server(settings.metrics_port, settings.host)
            closers.append(ops.close)
        stop = stop if stop is not None else asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, stop.set)
        print(f"ocs: HTTP API listening on {settings.host}:{api.port}", flush=True)
        await stop.wait()
    finally:
        for close in reversed(closers):
            await close()
