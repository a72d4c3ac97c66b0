"""A long-running offline command (``ocs cdr drain --follow N``): one step every ``interval``
seconds until SIGTERM/SIGINT, with the metrics port (``/metrics``, ``/healthz``,
``/readyz``) open meanwhile.

A failing step does not end the service: the error is counted (``ocs_postgres_errors_total``
or ``ocs_redis_errors_total{component="offline"}``), logged as one line, and the step runs
again after the interval, so an outage of PostgreSQL or Redis delays the work without losing
it (the drain acknowledges nothing it did not commit). The readiness checks say meanwhile
what is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from ocs.config import Settings
from ocs.observability.endpoint import OpsServer, start_ops_server
from ocs.observability.health import Check, default_health
from ocs.observability.metrics import offline_metrics
from ocs.offline.db import DatabaseError

log = logging.getLogger("ocs.service")


def _is_postgres(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | DatabaseError)


def count_failure(exc: BaseException) -> str:
    """Count ``exc`` against the store it came from; the store's name ("postgresql",
    "redis" or "other")."""
    if _is_postgres(exc):
        offline_metrics().postgres_errors.inc()
        return "postgresql"
    if isinstance(exc, RedisError):
        offline_metrics().redis_errors.inc()
        return "redis"
    return "other"


def open_ops_server(port: int, host: str) -> OpsServer | None:
    """The metrics port of an offline command, or None (``port`` 0, or the port is taken:
    the command's work matters more than its metrics, so that is a warning)."""
    if not port:
        return None
    try:
        ops = start_ops_server(port, host)
    except OSError as exc:
        log.warning("metrics port %s not opened: %s", port, exc.strerror or exc)
        return None
    log.info("metrics, health and readiness on http://%s:%s", host, ops.port)
    return ops


async def run_service(
    name: str,
    step: Callable[[], Awaitable[Any]],
    settings: Settings,
    *,
    interval: float,
    checks: Mapping[str, Check],
    stop: asyncio.Event | None = None,
) -> int:
    """Run ``step`` now and then every ``interval`` seconds until ``stop`` is set (SIGTERM
    and SIGINT set it); ``checks`` are the readiness checks while it runs. Returns 0."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    health = default_health()
    removers = [health.add(check_name, check) for check_name, check in checks.items()]
    ops = open_ops_server(settings.metrics_port, settings.host)
    try:
        while not stop.is_set():
            try:
                await step()
            except Exception as exc:
                store = count_failure(exc)
                log.warning("%s failed (%s): %s", name, store, exc, extra={"store": store})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        if ops is not None:
            await ops.close()
        for remove in removers:
            await remove()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    return 0
