"""Which connection holds which Gy session: a wrapper around the CCR handler records, after
a successful CCR-Initial, the session's peer, Origin-Host/Realm, subscriber and worker in
Redis (and the connection in this worker's memory); a CCR-Terminate forgets it.

The records are written by background tasks so the CCA is never delayed by them; a record
is at most one CCR behind. CCR-Update costs nothing here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Message
from ocs.diameter.constants import CcRequestType, Command, ResultCode
from ocs.diameter.dcca import CreditControlRequest
from ocs.diameter.errors import DiameterError
from ocs.diameter.node import PeerInfo
from ocs.network.keys import SESSION_TTL, peer_workers_key, session_key, subscriber_key
from ocs.network.messages import result_code

log = logging.getLogger("ocs.network")

Handler = Callable[[Message, PeerInfo], Awaitable[Message]]
SUCCESS = int(ResultCode.DIAMETER_SUCCESS)
_TRACKED = (int(CcRequestType.INITIAL_REQUEST), int(CcRequestType.TERMINATION_REQUEST))


class SessionTracker:
    def __init__(self, redis: Any, worker: str, *, ttl: int = SESSION_TTL) -> None:
        self.redis = redis
        self.worker = worker
        self.ttl = ttl
        self.connections: dict[str, PeerInfo] = {}  # session id -> connection (this worker)
        self._peers_registered: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def wrap(self, handler: Handler) -> Handler:
        async def tracked(request: Message, peer: PeerInfo) -> Message:
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
                "host": _text(request, "origin_host") or peer.origin_host,
                "realm": _text(request, "origin_realm") or peer.origin_realm,
                "peer": peer.origin_host,
                "worker": self.worker,
                "imsi": view.imsi or "",
                "msisdn": view.msisdn or "",
                "started": str(int(time.time() * 1000)),
            }
            self._spawn(self._record(sid, fields, peer.origin_host))
        elif rtype == CcRequestType.TERMINATION_REQUEST:
            sid = view.session_id
            self.connections.pop(sid, None)
            self._spawn(self.forget(sid, view.imsi, view.msisdn))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("session record not written: %s", exc)

    async def _record(self, sid: str, fields: dict[str, str], peer: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(session_key(sid), mapping=fields)
            pipe.expire(session_key(sid), self.ttl)
            for kind in ("imsi", "msisdn"):
                if fields[kind]:
                    pipe.sadd(subscriber_key(kind, fields[kind]), sid)
                    pipe.expire(subscriber_key(kind, fields[kind]), self.ttl)
            if peer not in self._peers_registered:
                pipe.sadd(peer_workers_key(peer), self.worker)
            await pipe.execute()
        self._peers_registered.add(peer)

    async def forget(self, sid: str, imsi: str | None = None, msisdn: str | None = None) -> None:
        """Drop a session's records (CCR-T, an unknown session in an RAA, a gone peer)."""
        if imsi is None and msisdn is None:
            raw = await self.redis.hmget(session_key(sid), "imsi", "msisdn")
            imsi, msisdn = (_s(v) if v else None for v in raw)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(session_key(sid))
            if imsi:
                pipe.srem(subscriber_key("imsi", imsi), sid)
            if msisdn:
                pipe.srem(subscriber_key("msisdn", msisdn), sid)
            await pipe.execute()

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
        if self._peers_registered:
            async with self.redis.pipeline(transaction=False) as pipe:
                for peer in self._peers_registered:
                    pipe.srem(peer_workers_key(peer), self.worker)
                await pipe.execute()


def _text(request: Message, which: str) -> str | None:
    key = A.AVP_ORIGIN_HOST if which == "origin_host" else A.AVP_ORIGIN_REALM
    found = request.find(key)
    if found is None or found.data is None:
        return None
    return bytes(found.data).decode("utf-8", "replace")


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
