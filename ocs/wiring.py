"""Wiring: which applications `ocs serve` attaches to the Diameter node, and the CLI actions
that need the stores. Kept apart from ``ocs.commands`` (argument parsing) and ``server.py``
(lifecycle).

`ocs serve` runs, in one event loop: the Diameter server with the Gy/Ro application, the
RAR/ASR dispatcher (Redis pub/sub, so commands reach the worker holding the session), the HTTP
API (``--http-port``, 0 disables it), Prometheus ``/metrics`` (``--metrics-port``, 0
disables it) and the webhook dispatcher (``webhooks``, docs/webhooks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from .balance import BalanceStore
from .charging import (
    ChargingRuntime,
    create_charging,
)
from .config import Settings
from .diameter.constants import Application, Command
from .diameter.node import Node
from .errors import bind, naming_port
from .observability.endpoint import start_ops_server
from .observability.health import catalogue_check, default_health, redis_check
from .observability.metrics import DiameterMetrics
from .process import Closer, serve
from .provisioning.folder import apply_folder
from .redis_client import open_redis

log = logging.getLogger("ocs.wiring")


DEMO_TOKEN_HINT = "ocs token create --tenant {tenant} --scope admin"
WEBHOOK_REDIS_TIMEOUT = 10.0  # seconds per command of the webhook dispatcher's own client


def _metrics_server(settings: Settings, *, announce: bool) -> Closer | None:
    if not settings.metrics_port:
        return None
    with naming_port("metrics", "--metrics-port", settings.host, settings.metrics_port):
        ops = start_ops_server(settings.metrics_port, settings.host)  # /metrics, /healthz, /readyz
    log.info("Prometheus metrics on http://%s:%s/metrics", settings.host, ops.port)
    if announce:
        print(f"ocs: metrics on http://{settings.host}:{ops.port}/metrics", flush=True)
    return ops.close


def _start_webhooks(settings: Settings, url: str) -> Closer:
    """The webhook dispatcher (docs/webhooks.md): one process delivers at a time (a lease in
    Redis), the others stand by. Its own Redis client, with room for its longer reads: the
    charging client's pool and half-second budget stay the CCRs' alone."""
    from .events.dispatcher import DeliverySettings, Dispatcher  # noqa: PLC0415
    from .events.metrics import webhook_metrics  # noqa: PLC0415
    from .redis_client import client_for_url  # noqa: PLC0415

    client = client_for_url(url, timeout=WEBHOOK_REDIS_TIMEOUT)
    dispatcher = Dispatcher(client, DeliverySettings.of(settings), webhook_metrics())
    dispatcher.start()

    async def close() -> None:
        await dispatcher.close()
        with contextlib.suppress(Exception):  # bounded: a shutdown never hangs on it
            async with asyncio.timeout(2.0):
                await client.aclose()

    return close


async def put_demo_in_force(store: BalanceStore, data_dir: Path, path: str | Path) -> str:
    """``ocs demo``: put the catalogue folder ``path`` in force the way ``ocs catalog apply``
    does (:func:`ocs.provisioning.folder.apply_folder`: merged into the tenant's state, so
    the HTTP API and the Diameter side serve the same revision and SIMs created over the API
    survive a restart of the demo). Returns the tenant. Raises ``CatalogueError``."""
    _, catalogue, _ = await apply_folder(store, path, data_dir, source="ocs demo")
    return catalogue.tenant.id


async def apply_demo(settings: Settings, path: str | Path) -> str:
    """``ocs demo --workers N``: :func:`put_demo_in_force` on its own Redis connection."""
    handle = await open_redis(settings, timeout=10.0)
    try:
        return await put_demo_in_force(BalanceStore(handle.client), settings.data_dir, path)
    finally:
        await handle.close()


async def start_nchf(
    settings: Settings, runtime: ChargingRuntime, *, reuse_port: bool, announce: bool
) -> Closer:
    """Nchf_ConvergedCharging (docs/nchf.md) on ``settings.nchf_port`` over the runtime's
    charging core: HTTP/2 (h2c with prior knowledge, or TLS with ALPN h2) and HTTP/1.1."""
    from .charging.nchf import COLLECTION, NchfService  # noqa: PLC0415
    from .http2 import HttpServer, Limits, Tls  # noqa: PLC0415

    port = settings.nchf_port or 0
    if not reuse_port:  # a taken port is an error naming it (a worker's is held for it)
        bind("Nchf", "--nchf-port", settings.host, port).close()
    tls = None
    if settings.nchf_tls_cert and settings.nchf_tls_key:
        tls = Tls(settings.nchf_tls_cert, settings.nchf_tls_key, settings.nchf_tls_ca)
    service = NchfService(
        runtime.application.core,
        runtime.store.batch,
        quota_holding_time=settings.quota_holding_time,
    )
    limits = Limits(max_body=settings.nchf_max_body, request_timeout=settings.nchf_timeout)
    server = HttpServer(service.handle, limits, tls)
    with naming_port("Nchf", "--nchf-port", settings.host, port):
        await server.start(settings.host, port)
    scheme = "https" if tls is not None else "http"
    where = f"{scheme}://{settings.host}:{server.port}{COLLECTION}"
    log.info("Nchf_ConvergedCharging on %s", where)
    if announce:
        kind = "HTTP/2 over TLS" if tls is not None else "HTTP/2 h2c"
        print(f"ocs: Nchf_ConvergedCharging ({kind} and HTTP/1.1) on {where}", flush=True)

    # NRF registration once per node: here when this process is the node, by the supervisor
    # when it is one of N workers (ocs.supervisor)
    deregister = None
    if not reuse_port:
        from .network.nrf import register_node  # noqa: PLC0415
        from .observability.metrics import nrf_metrics  # noqa: PLC0415

        deregister = register_node(
            settings, nchf_port=server.port, tls=tls is not None, metrics=nrf_metrics()
        )

    async def stop() -> None:
        if deregister is not None:  # SMFs stop choosing us before we stop answering
            await deregister()
        await server.stop(settings.shutdown_timeout)

    return stop


class ChargingAttacher:
    """Attaches the Gy/Ro application (``catalog_path`` is applied first, for ``ocs demo``),
    the network command dispatcher and, ``with_http``, the HTTP API and /metrics. After the
    server started, ``runtime`` is the charging runtime (tests and tools reach it here)."""

    def __init__(
        self, catalog_path: str | None, *, with_http: bool = True, reuse_port: bool = False
    ) -> None:
        self.catalog_path = catalog_path
        self.with_http = with_http
        self.reuse_port = reuse_port  # a worker: the HTTP port is shared (SO_REUSEPORT)
        self.runtime: ChargingRuntime | None = None

    async def __call__(self, settings: Settings, node: Node) -> list[Closer]:
        from .network import attach_network  # noqa: PLC0415
        from .network.tenancy import peer_tenants  # noqa: PLC0415

        closers: list[Closer] = []
        # with catalog_path (ocs demo), create_charging puts the folder in force first
        runtime = await create_charging(settings, catalog_path=self.catalog_path)
        closers.append(runtime.close)
        tenant = runtime.demo_tenant
        health = default_health()
        closers.append(health.add("redis", redis_check(runtime.redis.client)))
        closers.append(health.add("catalogue", catalogue_check(runtime.catalogue)))
        if settings.audit_interval > 0:
            from .audit.service import AuditService  # noqa: PLC0415
            from .observability.metrics import audit_metrics  # noqa: PLC0415

            audit = AuditService(
                settings, runtime.redis.client, audit_metrics(), settings.audit_interval
            )
            audit.start()
            closers.append(audit.close)
        try:
            net = await attach_network(
                settings, node, redis_url=runtime.redis.url, refresh=runtime.reload_if_applied
            )
            closers.append(net.close)
            charge = peer_tenants(  # a peer configured with tenants charges only theirs
                runtime.application.handle_ccr,
                runtime.tenant_of,
                node.identity,
                DiameterMetrics.default().count_refusal,
            )
            node.register(
                Application.CREDIT_CONTROL,
                Command.CREDIT_CONTROL,
                net.track(charge, runtime.tenant_of),
            )
            # `ocs demo` prints where its HTTP API and metrics are before the listening line;
            # `ocs serve` prints that one line only (scripts wait for it) and logs the rest.
            # A worker of `--workers N` says nothing: its supervisor does.
            announce = tenant is not None and not self.reuse_port
            if self.with_http and settings.http_port:
                from .api import start_api  # noqa: PLC0415

                # bound here, so that a taken port is an error naming it (uvicorn would
                # log and exit); a worker shares it with the others (SO_REUSEPORT)
                sock = bind(
                    "HTTP",
                    "--http-port",
                    settings.host,
                    settings.http_port,
                    reuse_port=self.reuse_port,
                )
                api = await start_api(settings, redis_url=runtime.redis.url, sock=sock)
                closers.append(api.stop)
                log.info("HTTP API on http://%s:%s", settings.host, api.port)
                if announce:
                    print(f"ocs: HTTP API on http://{settings.host}:{api.port}", flush=True)
                    hint = DEMO_TOKEN_HINT.format(tenant=tenant)
                    print(
                        f"ocs: demo tenant {tenant!r} in force for Diameter and the HTTP "
                        f"API; a token: {hint}; API docs at "
                        f"http://{settings.host}:{api.port}/docs",
                        flush=True,
                    )
            if self.with_http and settings.nchf_port:
                closers.append(
                    await start_nchf(
                        settings, runtime, reuse_port=self.reuse_port, announce=announce
                    )
                )
            if (
                self.with_http
                and (close_metrics := _metrics_server(settings, announce=announce)) is not None
            ):
                closers.append(close_metrics)
            if settings.webhooks:  # last: a start-up that fails above never delivers
                closers.append(_start_webhooks(settings, runtime.redis.url))
        except BaseException:
            for close in reversed(closers):
                await close()
            raise
        self.runtime = runtime
        return closers


def charging_attacher(catalog_path: str | None, *, with_http: bool = True) -> ChargingAttacher:
    return ChargingAttacher(catalog_path, with_http=with_http)


async def run_server(settings: Settings, demo_catalog: str | None = None) -> int:
    """``ocs serve`` / ``ocs demo`` until SIGTERM/SIGINT; errors are raised (``ocs.cli``
    reports them: a taken port, an unreachable Redis, an invalid catalogue)."""
    await serve(settings, charging_attacher(demo_catalog))
    return 0
