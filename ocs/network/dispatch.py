"""The requesting side (the HTTP API, any process): find a subscriber's open sessions and
ask the worker holding each one to send an RAR or ASR, optionally waiting for the outcomes.

A command is published on the holding worker's channel; when nobody listens there (the
worker is gone) it goes to another worker with a connection from the same peer, and when
there is none the session is reported ``no_worker`` and its records are dropped.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final

from ocs.network.keys import (
    BROADCAST,
    peer_workers_key,
    reply_key,
    session_key,
    subscriber_key,
    worker_channel,
)

Op = str  # "rar" | "asr"
REFRESH_WAIT: Final = 5.0  # seconds the API waits for workers to reload a changed catalogue


@dataclass(frozen=True, slots=True)
class SessionInfo:
    tenant: str
    session_id: str
    host: str
    realm: str
    peer: str
    worker: str
    imsi: str
    msisdn: str
    started: int


class NetworkCommands:
    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def sessions(
        self, tenant: str, subscribers: Iterable[tuple[str, str | None]]
    ) -> list[SessionInfo]:
        """Open sessions of ``tenant``'s subscribers among the given (IMSI, MSISDN) pairs:
        only the tenant's index is read, and a record of another tenant is never returned.
        Stale index entries are dropped."""
        keys: list[str] = []
        for imsi, msisdn in subscribers:
            keys.append(subscriber_key(tenant, "imsi", imsi))
            if msisdn:
                keys.append(subscriber_key(tenant, "msisdn", msisdn))
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.smembers(key)
            members = await pipe.execute()
        owner: dict[str, str] = {}
        for key, found in zip(keys, members, strict=True):
            for raw in found:
                owner.setdefault(_s(raw), key)
        if not owner:
            return []
        sids = sorted(owner)
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hgetall(session_key(sid))
            records = await pipe.execute()
        out: list[SessionInfo] = []
        stale: list[tuple[str, str]] = []
        for sid, raw in zip(sids, records, strict=True):
            f = {_s(k): _s(v) for k, v in raw.items()} if raw else {}
            if f.get("tenant") != tenant:  # gone, or (never expected) another tenant's
                stale.append((owner[sid], sid))
                continue
            out.append(
                SessionInfo(
                    tenant,
                    sid,
                    f.get("host", ""),
                    f.get("realm", ""),
                    f.get("peer", ""),
                    f.get("worker", ""),
                    f.get("imsi", ""),
                    f.get("msisdn", ""),
                    int(f.get("started", "0") or 0),
                )
            )
        if stale:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, sid in stale:
                    pipe.srem(key, sid)
                await pipe.execute()
        return out

    async def broadcast_refresh(self, wait: float = REFRESH_WAIT) -> int:
        """Every worker reloads the catalogue (before any RAR published after this); waits
        up to ``wait`` seconds for each listening worker to confirm. Returns how many did."""
        reply = uuid.uuid4().hex
        command = json.dumps({"op": "refresh", "reply": reply})
        listeners = int(await self.redis.publish(BROADCAST, command))
        confirmed = 0
        deadline = time.monotonic() + wait
        key = reply_key(reply)
        while confirmed < listeners and time.monotonic() < deadline:
            if await self.redis.lpop(key) is None:
                await asyncio.sleep(0.005)
            else:
                confirmed += 1
        await self.redis.delete(key)
        return confirmed

    async def send(
        self, op: Op, sessions: list[SessionInfo], *, wait: float = 0.0
    ) -> list[dict[str, Any]]:
        """Ask for an RAR (``op`` "rar") or ASR ("asr") on each session. With ``wait`` > 0,
        collect the outcomes for up to that many seconds (missing ones: ``pending``)."""
        reply = uuid.uuid4().hex if wait > 0 else ""
        outcomes: dict[str, dict[str, Any]] = {}
        for info in sessions:
            command = json.dumps(
                {
                    "op": op,
                    "session": info.session_id,
                    "host": info.host,
                    "realm": info.realm,
                    "peer": info.peer,
                    "reply": reply,
                }
            )
            if not await self._publish(info, command):
                outcomes[info.session_id] = {
                    "session": info.session_id,
                    "op": op,
                    "status": "no_worker",
                }
                await self._forget(info)
        if wait > 0:
            await self._collect(reply, sessions, outcomes, wait)
        return [
            outcomes.get(s.session_id, {"session": s.session_id, "op": op, "status": "pending"})
            for s in sessions
        ]

    async def _publish(self, info: SessionInfo, command: str) -> bool:
        if info.worker and await self.redis.publish(worker_channel(info.worker), command):
            return True
        for raw in await self.redis.smembers(peer_workers_key(info.peer)):
            worker = _s(raw)
            if worker == info.worker:
                continue
            if await self.redis.publish(worker_channel(worker), command):
                return True
            await self.redis.srem(peer_workers_key(info.peer), worker)  # a dead worker
        return False

    async def _collect(
        self,
        reply: str,
        sessions: list[SessionInfo],
        outcomes: dict[str, dict[str, Any]],
        wait: float,
    ) -> None:
        expected = {s.session_id for s in sessions} - set(outcomes)
        deadline = time.monotonic() + wait
        key = reply_key(reply)
        while expected and time.monotonic() < deadline:
            raw = await self.redis.lpop(key)
            if raw is None:
                await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
                continue
            outcome = json.loads(raw)
            sid = str(outcome.get("session"))
            outcomes[sid] = outcome
            expected.discard(sid)
        await self.redis.delete(key)

    async def _forget(self, info: SessionInfo) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(session_key(info.session_id))
            if info.imsi:
                pipe.srem(subscriber_key(info.tenant, "imsi", info.imsi), info.session_id)
            if info.msisdn:
                pipe.srem(subscriber_key(info.tenant, "msisdn", info.msisdn), info.session_id)
            await pipe.execute()

    @staticmethod
    def describe(info: SessionInfo) -> dict[str, Any]:
        """The session as the API shows it (to its own tenant)."""
        out = asdict(info)
        del out["tenant"]
        return out


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
