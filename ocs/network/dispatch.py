"""The requesting side (the HTTP API, the lifecycle pass, any process): find a subscriber's
open sessions, Gy sessions and Nchf charging data resources alike, and ask each to
re-authorise (``op`` "rar") or to stop ("asr"), optionally waiting for the outcomes.

For a Gy session the command is published on the holding worker's channel; when nobody
listens there (the worker is gone) it goes to another worker with a connection from the same
peer, and when there is none the session is reported ``no_worker`` and its records are
dropped. For an Nchf resource this process POSTs the ChargingNotifyRequest to the consumer's
notifyUri itself (``ocs.network.notify``: REAUTHORIZATION for "rar", ABORT_CHARGING for
"asr"): the resource lives in Redis and the notifyUri is an HTTP address, so any worker can.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final

from ocs.balance.keys import nchf_key, nchf_subscriber_key
from ocs.network.keys import (
    BROADCAST,
    peer_workers_key,
    reply_key,
    session_key,
    subscriber_key,
    worker_channel,
)
from ocs.network.notify import DELIVERED, GONE, NOTIFICATION_OF, ChargingNotifier
from ocs.observability.metrics import sbi_metrics

Op = str  # "rar" | "asr"
REFRESH_WAIT: Final = 5.0  # seconds the API waits for workers to reload a changed catalogue
GY: Final = "gy"
NCHF: Final = "nchf"
NOTIFY_AT_ONCE: Final = 64  # notifications in flight at once from one process


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
    interface: str = GY  # "gy": a Diameter session; "nchf": a charging data resource
    notify_uri: str = ""  # nchf: the consumer's notifyUri ("" when it gave none)


class NetworkCommands:
    def __init__(self, redis: Any, *, notifier: Callable[[], ChargingNotifier] | None = None):
        self.redis = redis
        self.notifier = notifier or _default_notifier

    async def sessions(
        self, tenant: str, subscribers: Iterable[tuple[str, str | None]]
    ) -> list[SessionInfo]:
        """Open sessions of ``tenant``'s subscribers among the given (IMSI, MSISDN) pairs:
        only the tenant's index is read, and a record of another tenant is never returned.
        Stale index entries are dropped."""
        keys: list[tuple[str, str]] = []  # (index key, interface)
        for imsi, msisdn in subscribers:
            keys.append((subscriber_key(tenant, "imsi", imsi), GY))
            if msisdn:
                keys.append((subscriber_key(tenant, "msisdn", msisdn), GY))
            keys.append((nchf_subscriber_key(tenant, imsi), NCHF))
            if msisdn:  # a resource created with the GPSI only (no SUPI)
                keys.append((nchf_subscriber_key(tenant, msisdn, "msisdn"), NCHF))
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, _ in keys:
                pipe.smembers(key)
            members = await pipe.execute()
        owner: dict[tuple[str, str], str] = {}  # (interface, id) -> the index key naming it
        for (key, interface), found in zip(keys, members, strict=True):
            for raw in found:
                owner.setdefault((interface, _s(raw)), key)
        if not owner:
            return []
        ids = sorted(owner)
        async with self.redis.pipeline(transaction=False) as pipe:
            for interface, sid in ids:
                pipe.hgetall(session_key(sid) if interface == GY else nchf_key(tenant, sid))
            records = await pipe.execute()
        out: list[SessionInfo] = []
        stale: list[tuple[str, str]] = []
        for (interface, sid), raw in zip(ids, records, strict=True):
            f = {_s(k): _s(v) for k, v in raw.items()} if raw else {}
            if f.get("tenant") != tenant or f.get("closed") == "1":
                stale.append((owner[interface, sid], sid))  # gone, released, not the tenant's
                continue
            if interface == NCHF:
                out.append(
                    SessionInfo(
                        *(tenant, sid, "", "", f.get("consumer", ""), ""),
                        *(f.get("imsi", ""), f.get("msisdn", "")),
                        int(f.get("created", "0") or 0) // 1000,
                        NCHF,
                        f.get("notifyUri", ""),
                    )
                )
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
        """Ask for an RAR (``op`` "rar") or ASR ("asr") on each Gy session, and notify each
        Nchf resource (awaited here, each delivery bounded: ``ocs.network.notify``). With
        ``wait`` > 0, collect the Gy outcomes for up to that many seconds (missing ones:
        ``pending``)."""
        reply = uuid.uuid4().hex if wait > 0 else ""
        outcomes: dict[str, dict[str, Any]] = {}
        resources = [s for s in sessions if s.interface == NCHF]
        sessions_gy = [s for s in sessions if s.interface != NCHF]
        for info in sessions_gy:
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
        if resources:
            outcomes.update(await self._notify(op, resources))
        if wait > 0 and sessions_gy:
            await self._collect(reply, sessions_gy, outcomes, wait)
        return [
            outcomes.get(s.session_id, {"session": s.session_id, "op": op, "status": "pending"})
            for s in sessions
        ]

    async def _notify(self, op: Op, resources: list[SessionInfo]) -> dict[str, dict[str, Any]]:
        """POST the notification of ``op`` to each resource's notifyUri, at most
        :data:`NOTIFY_AT_ONCE` at a time; a consumer that no longer knows one leaves it."""
        kind = NOTIFICATION_OF[op]
        limit = asyncio.Semaphore(NOTIFY_AT_ONCE)

        async def one(notifier: ChargingNotifier, info: SessionInfo) -> dict[str, Any]:
            outcome: dict[str, Any] = {"session": info.session_id, "op": op}
            if not info.notify_uri:  # the consumer asked for no notifications
                return outcome | {"status": "no_notify_uri"}
            async with limit:
                result = await notifier.notify(info.notify_uri, kind)
            outcome["status"] = "answered" if result.status == DELIVERED else result.status
            if result.http_status:
                outcome["http_status"] = result.http_status
            if result.status == GONE:
                await self._forget(info)
            return outcome

        async with self.notifier() as notifier:
            done = await asyncio.gather(*(one(notifier, info) for info in resources))
        return {o["session"]: o for o in done}

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
        """Drop a session's records; an Nchf resource only leaves the index (it is the
        charging state: its release or its expiry ends it)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if info.interface == NCHF:
                if info.imsi:
                    pipe.srem(nchf_subscriber_key(info.tenant, info.imsi), info.session_id)
                elif info.msisdn:
                    index = nchf_subscriber_key(info.tenant, info.msisdn, "msisdn")
                    pipe.srem(index, info.session_id)
            else:
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


def _default_notifier() -> ChargingNotifier:
    return ChargingNotifier(metrics=sbi_metrics())


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
