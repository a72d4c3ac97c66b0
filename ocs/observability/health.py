"""Liveness and readiness.

``/healthz`` (liveness): the process is alive and its event loop answers. ``/readyz``
(readiness): every check the running components registered passes: Redis reachable, a
catalogue loaded, the Diameter server listening, PostgreSQL reachable (the CDR drain). Each
component registers its checks on the process-wide :func:`default_health` when it starts and
removes them when it stops; a check answers ``None`` when fine, or the reason it is not
(raising counts as a failure too, and so does taking longer than ``timeout``).

Both are served on the HTTP API (``ocs.api.health``) and on the metrics port
(:mod:`ocs.observability.endpoint`), so a deployment without the HTTP API has them too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from asyncpg import Pool

    from ocs.redis_client import RedisClient

CHECK_TIMEOUT: Final = 2.0  # seconds per readiness check
UNPROVISIONED_TENANT: Final = "unprovisioned"  # ocs.charging.runtime's placeholder catalogue

Check = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, str]  # name -> "ok" or the reason it failed

    def as_json(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "not ready", "checks": self.checks}


@dataclass
class Health:
    timeout: float = CHECK_TIMEOUT
    _checks: dict[str, Check] = field(default_factory=dict)

    def add(self, name: str, check: Check) -> Callable[[], Awaitable[None]]:
        """Register ``check`` as ``name`` (replacing an older one); returns the closer that
        removes it again (only if it is still this check)."""
        self._checks[name] = check

        async def remove() -> None:
            if self._checks.get(name) is check:
                del self._checks[name]

        return remove

    @property
    def names(self) -> list[str]:
        return sorted(self._checks)

    async def ready(self, extra: dict[str, Check] | None = None) -> Readiness:
        """Run every check (and ``extra``) at once, each within ``timeout``."""
        checks = {**self._checks, **(extra or {})}
        names = sorted(checks)
        results = await asyncio.gather(*(self._run(checks[n]) for n in names))
        outcome = dict(zip(names, results, strict=True))
        return Readiness(all(r == "ok" for r in results), outcome)

    async def _run(self, check: Check) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                reason = await check()
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return "ok" if reason is None else reason


_default: Health | None = None


def default_health() -> Health:
    """The process-wide checks (one process serves one set of components)."""
    global _default  # noqa: PLW0603 - one set of checks per process
    if _default is None:
        _default = Health()
    return _default


# -- the standard checks ------------------------------------------------------------------
def redis_check(client: RedisClient) -> Check:
    async def check() -> str | None:
        await client.ping()
        return None

    return check


def postgres_check(pool: Pool[Any]) -> Check:
    async def check() -> str | None:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        return None

    return check


class _InForce(Protocol):
    """What the check reads: a catalogue in force (``ocs.charging.inforce.InForce``)."""

    @property
    def current(self) -> Any: ...


def catalogue_check(holder: _InForce) -> Check:
    async def check() -> str | None:
        if holder.current.tenant.id == UNPROVISIONED_TENANT:
            return "no catalogue applied (ocs catalog apply PATH)"
        return None

    return check


class _Listener(Protocol):
    """What the check reads of ``ocs.diameter.transport.DiameterServer`` (observability
    imports no feature package)."""

    _server: Any  # the asyncio.Server once started


def listening_check(server: _Listener) -> Check:
    async def check() -> str | None:
        listener = server._server  # the asyncio.Server once started, closed on stop
        if listener is None or not listener.is_serving():
            return "Diameter server not listening"
        return None

    return check
