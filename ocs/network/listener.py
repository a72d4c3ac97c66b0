"""The worker side: each process running a Diameter node listens on its own pub/sub channel
(and the broadcast channel) and sends the RAR/ASR it is asked for on the connection that
holds the session, then pushes the outcome to the requester's reply list.

Outcomes: ``answered`` (with the peer's Result-Code), ``peer_gone`` (no open connection to
the peer), ``timeout``; the session's records are dropped when the peer is gone or answers
5002 (unknown session).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ocs.diameter.answers import Identity
from ocs.diameter.codec import Message
from ocs.diameter.node import Node, PeerInfo
from ocs.network.keys import BROADCAST, reply_key, worker_channel
from ocs.network.messages import (
    abort_session_request,
    re_auth_request,
    result_code,
    session_is_gone,
)
from ocs.network.tracker import Handler, SessionTracker, TenantOf
from ocs.observability.outage import outage_log

log = logging.getLogger("ocs.network")

ANSWER_TIMEOUT: Final = 5.0  # seconds for an RAA/ASA
REPLY_TTL: Final = 60

Refresh = Callable[[], Awaitable[object]]


class NetworkAttachment:
    """What :func:`ocs.network.attach_network` returns: ``track`` wraps the CCR handler,
    awaiting the object itself (or ``close()``) detaches."""

    def __init__(
        self,
        node: Node,
        redis: Any,
        listener: Redis,
        *,
        refresh: Refresh | None = None,
        worker: str | None = None,
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self.node = node
        self.redis = redis
        self.listener = listener
        self.refresh = refresh
        self.worker = worker or uuid.uuid4().hex
        self.answer_timeout = answer_timeout
        self.tracker = SessionTracker(redis, self.worker)
        self.delivered = 0
        self._pubsub = listener.pubsub(ignore_subscribe_messages=True)
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()

    @property
    def identity(self) -> Identity:
        return self.node.identity

    def track(self, handler: Handler, tenant_of: TenantOf) -> Handler:
        """Wrap the CCR handler; ``tenant_of`` names the tenant of a session's subscriber
        (its sessions are indexed under that tenant only)."""
        return self.tracker.wrap(handler, tenant_of)

    async def start(self) -> None:
        await self._pubsub.subscribe(worker_channel(self.worker), BROADCAST)
        self._task = asyncio.create_task(self._listen(), name="ocs-network-listener")

    async def _listen(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as exc:
                outage_log().failed(exc)  # one line per outage, not one a second
                await asyncio.sleep(1.0)
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                command = json.loads(message["data"])
            except (ValueError, TypeError):
                continue
            if not isinstance(command, dict):
                continue
            op = command.get("op")
            if op == "refresh":
                # in order: a plan change is in force here before its RAR is sent
                if self.refresh is not None:
                    try:
                        await self.refresh()
                    except Exception:
                        log.exception("catalogue refresh failed")
                await self._reply(command.get("reply"), {"op": "refresh", "worker": self.worker})
            elif op in ("rar", "asr"):
                job = asyncio.create_task(self._deliver(command))
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)

    def _connection(self, sid: str, peer: str) -> PeerInfo | None:
        held = self.tracker.connections.get(sid)
        if held is not None and held in self.node.peers.get(held.origin_host, []):
            return held
        conns = self.node.peers.get(peer)
        return conns[-1] if conns else None

    async def _deliver(self, command: dict[str, Any]) -> None:
        sid = str(command.get("session", ""))
        host = str(command.get("host", ""))
        realm = str(command.get("realm", ""))
        peer = str(command.get("peer", "") or host)
        build = re_auth_request if command["op"] == "rar" else abort_session_request
        request: Message = build(self.identity, sid, host, realm)
        outcome: dict[str, Any] = {"session": sid, "op": command["op"], "worker": self.worker}
        conn = self._connection(sid, peer)
        if conn is None:
            outcome["status"] = "peer_gone"
        else:
            try:
                answer = await asyncio.wait_for(conn.send_request(request), self.answer_timeout)
            except (ConnectionError, LookupError):
                outcome["status"] = "peer_gone"
            except TimeoutError:
                outcome["status"] = "timeout"
            else:
                code = result_code(answer)
                outcome.update(status="answered", result_code=code)
                self.delivered += 1
        try:
            if outcome["status"] == "peer_gone" or session_is_gone(outcome.get("result_code", 0)):
                self.tracker.connections.pop(sid, None)
                await self.tracker.forget(sid)
            await self._reply(command.get("reply"), outcome)
        except RedisError as exc:
            log.warning("RAR/ASR outcome of %s not recorded: %s", sid, exc)

    async def _reply(self, reply: object, outcome: dict[str, Any]) -> None:
        if not reply:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(reply_key(str(reply)), json.dumps(outcome))
                pipe.expire(reply_key(str(reply)), REPLY_TTL)
                await pipe.execute()
        except RedisError as exc:
            log.warning("reply to %s not sent: %s", reply, exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._jobs:
            await asyncio.wait(set(self._jobs), timeout=self.answer_timeout)
        with contextlib.suppress(RedisError, OSError):
            await self.tracker.close()
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()
        await self.listener.aclose()
        await self.redis.aclose()

    async def __call__(self) -> None:
        await self.close()
