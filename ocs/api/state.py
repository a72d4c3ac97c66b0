"""What every request handler reaches: the stores, the tenant catalogues, the network
commands, and the caller (tenant and scopes) from the bearer token."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import RedisError

from ocs.api.auth import PRINCIPAL, Principal, Scope, TokenCache
from ocs.balance import BalanceStore
from ocs.charging.pricing import CounterCache
from ocs.config import Settings
from ocs.network import NetworkCommands
from ocs.observability.metrics import api_metrics
from ocs.offline.db import LazyDatabase
from ocs.provisioning.catalogues import Compiled, TenantCatalogues
from ocs.redis_client import RedisClient

log = logging.getLogger("ocs.api")


@dataclass
class ApiState:
    settings: Settings
    redis: RedisClient
    store: BalanceStore
    catalogues: TenantCatalogues
    network: NetworkCommands
    tokens: TokenCache
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    hot_answers: int = 0  # requests answered by ocs.api.hot_routes (tests, benchmarks)
    counters: CounterCache = field(default_factory=CounterCache)  # wallet counters (events)
    database: LazyDatabase | None = None  # drained usage records (opened on first read)
    cursor_key: bytes | None = None  # signs pagination cursors (ocs.api.cursors)
    _signals: dict[tuple[str, str], list[tuple[str, str | None]]] = field(default_factory=dict)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, RedisError | TimeoutError):
                api_metrics().redis_errors.inc()
            log.warning("background network command failed: %s", exc)

    async def signal(
        self, tenant: str, sims: Iterable[tuple[str, str | None]], op: str
    ) -> list[dict[str, Any]]:
        """RAR (``op`` "rar") or ASR ("asr") to every open session of these SIMs of
        ``tenant`` (sessions are looked up in that tenant's index only)."""
        sessions = await self.network.sessions(tenant, list(sims))
        if not sessions:
            return []
        return await self.network.send(op, sessions)

    def signal_later(self, tenant: str, sims: Iterable[tuple[str, str | None]], op: str) -> None:
        """RAR/ASR in the background. The SIMs queued during one event-loop iteration are
        looked up together (one task, one pipeline): a session that several of those
        requests signal gets one RAR, sent after all of their changes."""
        if not self._signals:
            asyncio.get_running_loop().call_soon(self._send_signals)
        self._signals.setdefault((tenant, op), []).extend(sims)

    def _send_signals(self) -> None:
        pending, self._signals = self._signals, {}
        for (tenant, op), sims in pending.items():
            self.spawn(self.signal(tenant, list(dict.fromkeys(sims)), op))  # each SIM once

    def signal_payer(self, compiled: Compiled, tag: str, op: str) -> None:
        sims = compiled.payer_sims().get(tag)
        if sims:
            self.signal_later(compiled.catalogue.tenant.id, sims, op)

    async def drain(self, timeout: float = 5.0) -> None:
        """At shutdown: let the background network commands finish (bounded), then send
        what the store's command batcher holds and give its connection back."""
        self._send_signals()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)
        await self.store.batch.close()
        if self.database is not None:
            await self.database.close()


async def get_api(request: Request) -> ApiState:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, which
    cost about a fifth of the server's CPU per request (a thread hand-off each time)."""
    api: ApiState = request.app.state.api
    return api


_bearer = HTTPBearer(auto_error=False, description="a tenant token (`ocs token create`)")


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        principal: Principal | None = request.scope.get(PRINCIPAL)  # set by Authenticate
        if principal is None:
            api: ApiState = request.app.state.api
            header = f"Bearer {credentials.credentials}" if credentials is not None else None
            principal = await api.tokens.principal(header)
        principal.require(scope)
        return principal

    return dependency


Api = Annotated[ApiState, Depends(get_api)]
Reader = Annotated[Principal, Depends(require(Scope.READ))]
TopUp = Annotated[Principal, Depends(require(Scope.TOP_UP))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
