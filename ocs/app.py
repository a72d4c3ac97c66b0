"""Wiring: which applications `ocs serve` attaches to the Diameter node, and the CLI actions
that need the stores. Kept apart from ``cli.py`` (argument parsing) and ``server.py``
(lifecycle).

`ocs serve` runs, in one event loop: the Diameter server with the Gy/Ro application, the
RAR/ASR dispatcher (Redis pub/sub, so commands reach the worker holding the session), the HTTP
API (``--http-port``, 0 disables it) and Prometheus ``/metrics`` (``--metrics-port``, 0
disables it).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from redis.exceptions import RedisError

from .balance import BalanceStore
from .charging import (
    ChargingRuntime,
    NoCatalogue,
    apply_catalog,
    create_charging,
    show_balance,
)
from .config import Settings
from .diameter.constants import Application, Command
from .diameter.node import Node
from .observability.endpoint import start_ops_server
from .observability.health import catalogue_check, default_health, redis_check
from .observability.metrics import DiameterMetrics
from .provisioning.folder import apply_folder
from .rating.errors import CatalogueError
from .server import Closer, serve
from .store import open_redis

log = logging.getLogger("ocs.app")


DEMO_TOKEN_HINT = "ocs token create --tenant {tenant} --scope admin"


def _metrics_server(settings: Settings, *, announce: bool) -> Closer | None:
    if not settings.metrics_port:
        return None
    ops = start_ops_server(settings.metrics_port, settings.host)  # /metrics, /healthz, /readyz
    log.info("Prometheus metrics on http://%s:%s/metrics", settings.host, ops.port)
    if announce:
        print(f"ocs: metrics on http://{settings.host}:{ops.port}/metrics", flush=True)
    return ops.close


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

                sock = None
                if self.reuse_port:
                    from .workers import reuse_port_socket  # noqa: PLC0415

                    sock = reuse_port_socket(settings.host, settings.http_port)
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
            if (
                self.with_http
                and (close_metrics := _metrics_server(settings, announce=announce)) is not None
            ):
                closers.append(close_metrics)
        except BaseException:
            for close in reversed(closers):
                await close()
            raise
        self.runtime = runtime
        return closers


def charging_attacher(catalog_path: str | None, *, with_http: bool = True) -> ChargingAttacher:
    return ChargingAttacher(catalog_path, with_http=with_http)


async def run_server(settings: Settings, demo_catalog: str | None = None) -> int:
    try:
        await serve(settings, charging_attacher(demo_catalog))
    except (NoCatalogue, CatalogueError, OSError) as exc:
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 2
    except RedisError as exc:  # unreachable at start-up: say so, as the workers do
        print(f"ocs: error: Redis: {exc}", file=sys.stderr)
        return 2
    return 0


async def apply_catalog_cli(settings: Settings, path: str) -> int:
    try:
        summary = await apply_catalog(path, settings)
    except CatalogueError as exc:
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


async def show_balance_cli(settings: Settings, msisdn: str, *, as_json: bool) -> int:
    try:
        balance = await show_balance(msisdn, settings)
    except LookupError as exc:
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(balance, indent=2, default=str))
        return 0
    for payer in balance.get("payers", []):
        print(f"{payer.get('payer', payer.get('id', '?'))}:")
        life = payer.get("lifecycle")
        if life:  # docs/lifecycle.md
            tier = f" tier={life['tier']} ({life['tier_size']})" if "tier" in life else ""
            held = " SUSPENDED" if life.get("suspended") else ""
            print(f"  period {life['period']} top-offs={life['top_offs']}{tier}{held}")
        for bucket in payer.get("buckets", []):
            print(
                "  {id}: {unit} available={available} reserved={reserved} used={used}".format(
                    id=bucket.get("id", "?"),
                    unit=bucket.get("unit", "?"),
                    available=bucket.get("available"),
                    reserved=bucket.get("reserved"),
                    used=bucket.get("used"),
                )
            )
    return 0
