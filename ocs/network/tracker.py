"""Which connection holds which Gy session: a wrapper around the CCR handler records, after
a successful CCR-Initial, the session's peer, Origin-Host/Realm, subscriber and worker in
Redis (and the connection in this worker's memory); a CCR-Terminate forgets it.

The records are written behind the answer, so the CCA is never delayed by them: the commands
are queued on the tracker's own :class:`~ocs.balance.batch.CommandBatcher` and go to Redis
with the next batch (one write for the records of every CCR of an event-loop iteration, on
one connection, in order: a CCR-T's delete never overtakes its CCR-I's record). No task and no
pooled connection per CCR, so a burst of new sessions cannot exhaust the client's pool. A
record is at most one CCR behind. CCR-Update costs nothing here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ocs.balance.batch import Command as RedisCommand
from ocs.balance.batch import CommandBatcher
from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Message
from ocs.diameter.constants import CcRequestType, Command, ResultCode
from ocs.diameter.dcca import CreditControlRequest
from ocs.diameter.errors import DiameterError
from ocs.diameter.node import PeerInfo
from ocs.network.keys import SESSION_TTL, peer_workers_key, session_key, subscriber_key
from ocs.network.messages import result_code, session_is_gone
from ocs.observability.outage import outage_log

log = logging.getLogger("ocs.network")

Handler = Callable[[Message, PeerInfo], Awaitable[Message]]
TenantOf = Callable[[str | None, str | None], str | None]
"""The tenant whose SIM has this IMSI / MSISDN (the charging side's identity index)."""
SUCCESS = int(ResultCode.DIAMETER_SUCCESS)
_TRACKED = (int(CcRequestType.INITIAL_REQUEST), int(CcRequestType.TERMINATION_REQUEST))


class SessionTracker:
    def __init__(self, redis: Any, worker: str, *, ttl: int = SESSION_TTL) -> None:
        self.redis = redis
        self.worker = worker
        self.ttl = ttl
        self.connections: dict[str, PeerInfo] = {}  # session id -> connection (this worker)
        self.batch = CommandBatcher(redis)
        self._peers_registered: set[str] = set()
        self._writes: set[asyncio.Future[list[Any]]] = set()
        self._warm = False
        self.tenant_of: TenantOf = _nobody

    def wrap(self, handler: Handler, tenant_of: TenantOf) -> Handler:
        self.tenant_of = tenant_of

        async def tracked(request: Message, peer: PeerInfo) -> Message:
            if not self._warm:  # connect while the first request is answered
                self._warm = True
                self.batch.warm_up()
            answer = await handler(request, peer)
            # only CCR-I and CCR-T change what is tracked: a CCR-U costs one AVP lookup
            if request.command == Command.CREDIT_CONTROL and (
                request.get(A.AVP_CC_REQUEST_TYPE) in _TRACKED
            ):
                # a malformed CCR was answered with an error: nothing to track
                with contextlib.suppress(DiameterError):
                    self.observe(request, answer, peer)
            return answer

        return tracked

    def observe(self, request: Message, answer: Message, peer: PeerInfo) -> None:
        view = CreditControlRequest(request)
        rtype = view.request_type
        if rtype == CcRequestType.INITIAL_REQUEST and result_code(answer) == SUCCESS:
            sid = view.session_id
            self.connections[sid] = peer
            fields = {
                "tenant": self.tenant_of(view.imsi, view.msisdn) or "",
                "host": _text(request, "origin_host") or peer.origin_host,
                "realm": _text(request, "origin_realm") or peer.origin_realm,
                "peer": peer.origin_host,
                "worker": self.worker,
                "imsi": view.imsi or "",
                "msisdn": view.msisdn or "",
                "started": str(int(time.time() * 1000)),
            }
            self._write(self._record(sid, fields, peer.origin_host))
        elif rtype == CcRequestType.TERMINATION_REQUEST and not session_is_gone(
            result_code(answer)
        ):  # 5002: the session is another peer's (ocs.charging.sessions), it stays tracked
            sid = view.session_id
            self.connections.pop(sid, None)
            tenant = self.tenant_of(view.imsi, view.msisdn)
            self._write(self._forget(sid, tenant, view.imsi, view.msisdn))

    def _write(self, commands: list[RedisCommand]) -> None:
        """Queue ``commands`` without waiting for them (write-behind)."""
        fut = self.batch.submit(commands)
        self._writes.add(fut)
        fut.add_done_callback(self._written)

    def _written(self, fut: asyncio.Future[list[Any]]) -> None:
        self._writes.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            exc = next((r for r in fut.result() if isinstance(r, Exception)), None)
        if exc is not None:
            self._peers_registered.clear()  # registered again with the next record
            outage_log().failed(exc)  # one line per outage, not one per record

    def _record(self, sid: str, fields: dict[str, str], peer: str) -> list[RedisCommand]:
        key = session_key(sid)
        flat: list[str] = []
        for name, value in fields.items():
            flat += (name, value)
        commands: list[RedisCommand] = [("HSET", key, *flat), ("EXPIRE", key, self.ttl)]
        tenant = fields["tenant"]
        for kind in ("imsi", "msisdn"):
            if fields[kind] and tenant:  # no tenant: reachable by no API caller
                commands.append(("SADD", subscriber_key(tenant, kind, fields[kind]), sid))
                commands.append(("EXPIRE", subscriber_key(tenant, kind, fields[kind]), self.ttl))
        if peer not in self._peers_registered:
            commands.append(("SADD", peer_workers_key(peer), self.worker))
            self._peers_registered.add(peer)
        return commands

    @staticmethod
    def _forget(
        sid: str, tenant: str | None, imsi: str | None, msisdn: str | None
    ) -> list[RedisCommand]:
        commands: list[RedisCommand] = [("DEL", session_key(sid))]
        if tenant and imsi:
            commands.append(("SREM", subscriber_key(tenant, "imsi", imsi), sid))
        if tenant and msisdn:
            commands.append(("SREM", subscriber_key(tenant, "msisdn", msisdn), sid))
        return commands

    async def forget(self, sid: str) -> None:
        """Drop a session's records (an unknown session in an RAA, a gone peer)."""
        raw = await self.batch.execute("HMGET", session_key(sid), "tenant", "imsi", "msisdn")
        tenant, imsi, msisdn = (_s(v) if v else None for v in raw)
        await self.batch.execute_many(self._forget(sid, tenant, imsi, msisdn))

    async def close(self) -> None:
        """Wait for the records queued (at most 2 s), unregister this worker, give the
        connection back."""
        try:
            if self._writes:
                await asyncio.wait(set(self._writes), timeout=2.0)
            if self._peers_registered:
                await self.batch.execute_many(
                    [("SREM", peer_workers_key(p), self.worker) for p in self._peers_registered]
                )
        finally:
            await self.batch.close()


def _nobody(imsi: str | None, msisdn: str | None) -> str | None:
    return None


def _text(request: Message, which: str) -> str | None:
    key = A.AVP_ORIGIN_HOST if which == "origin_host" else A.AVP_ORIGIN_REALM
    found = request.find(key)
    if found is None or found.data is None:
        return None
    return bytes(found.data).decode("utf-8", "replace")


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
