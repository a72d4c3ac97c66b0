"""The webhook dispatcher `ocs serve` runs (docs/webhooks.md): it reads the outboxes of the
tenants that have subscriptions and POSTs each matching event, signed, to each
subscription, at least once and in order per subject.

One dispatcher delivers at a time (a lease in Redis, renewed each pass): on a node with
several workers, or several nodes, the others stand by and take over within the lease time
when it stops. Each (subscription, outbox) pair is drained by one task, event after event:
a failed delivery stops that pair (later events of the same payer wait: order per subject)
until its backoff passed; after ``max_attempts`` the event goes to the subscription's dead
letters and the pair moves on. Progress is a cursor per pair in Redis, written after each
delivery, so a dispatcher killed at any point resends at most the event in flight.

Charging never waits for any of this: the scripts append to the outbox and return; the
dispatcher runs on its own task with bounded concurrency, and its HTTP requests have a
total time limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any, Final

import httpx

from ocs.balance.keys import PAYERS, PayerKeys
from ocs.balance.slots import roots
from ocs.events.keys import (
    LEASE,
    TENANTS,
    cursor_key,
    dead_key,
    log_key,
    redeliver_key,
    retry_key,
    tenant_outbox,
)
from ocs.events.metrics import WebhookMetrics
from ocs.events.model import Event, Subscription
from ocs.events.signing import EVENT_HEADER, HEADER, signature
from ocs.events.subscriptions import DEAD_MAXLEN, LOG_MAXLEN, Subscriptions
from ocs.redis_client import RedisClient

log = logging.getLogger(__name__)

BATCH: Final = 100  # outbox entries read at a time
TRIM_EVERY: Final = 60.0  # seconds between outbox trims
ATTEMPT_HEADER: Final = "Ocs-Delivery-Attempt"
REDELIVERED_HEADER: Final = "Ocs-Redelivered"  # "1" on a dead letter redelivered (ocs.events.dead)
CLOSE_TIMEOUT: Final = 2.0  # seconds a step of close() may take

# take the lease, or keep it if it is ours (PEXPIRE): 1 when we hold it
LEASE_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
RELEASE_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """From :class:`ocs.config.Settings` (``webhook_*``)."""

    interval: float = 1.0  # seconds between passes
    timeout: float = 5.0  # seconds for one request, in all (connect, send, answer)
    backoff: float = 5.0  # seconds before the first retry; doubles each attempt
    backoff_max: float = 3600.0
    max_attempts: int = 12  # then the event is dead-lettered
    max_body: int = 65_536  # bytes; a larger event is dead-lettered at once
    concurrency: int = 16  # requests in flight
    retention: float = 7 * 86_400.0  # seconds an outbox entry is kept when nobody needs it
    lease: float = 15.0  # seconds a dispatcher holds the lease without renewing it

    @classmethod
    def of(cls, settings: Any) -> DeliverySettings:
        return cls(
            interval=float(settings.webhook_interval),
            timeout=float(settings.webhook_timeout),
            backoff=float(settings.webhook_backoff),
            backoff_max=float(settings.webhook_backoff_max),
            max_attempts=int(settings.webhook_max_attempts),
            max_body=int(settings.webhook_max_body),
            retention=float(settings.webhook_retention),
        )

    def delay(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones."""
        return float(min(self.backoff * 2 ** (attempts - 1), self.backoff_max))


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class Attempt:
    ok: bool
    status: int  # HTTP status, 0: none (connection error, timeout)
    error: str
    ms: int  # how long it took
    final: bool = False  # no retry can succeed (the body is too large)


class Dispatcher:
    def __init__(
        self,
        redis: RedisClient,
        settings: DeliverySettings,
        metrics: WebhookMetrics | None = None,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.metrics = metrics
        self.subs = Subscriptions(redis)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._lease = redis.register_script(LEASE_LUA)
        self._release = redis.register_script(RELEASE_LUA)
        self._client = client or httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=settings.concurrency),
            trust_env=False,
        )
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._running: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._pending: dict[tuple[str, str, str], int] = {}  # pair -> ms of its oldest event
        self._task: asyncio.Task[None] | None = None
        self._trimmed = 0.0
        self.holding = False
        self._failing = False
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="ocs-webhooks")

    async def _loop(self) -> None:
        # the flag, not only the cancellation, ends the loop: a client may turn the
        # CancelledError of a command cut half-way into an error of its own (redis-py's
        # cluster client does), which the loop would take for an outage and go on
        while not self._closed:
            try:
                await self.run_once()
                self._failing = False
            except Exception as exc:  # Redis down or slow: the next pass tries again
                if not self._failing:  # once per outage (the outage itself is logged apart)
                    log.warning("webhook dispatcher pass failed: %s", exc)
                self._failing = True
            await asyncio.sleep(self.settings.interval)

    async def close(self) -> None:
        """Stop delivering, bounded in time (a shutdown never waits on a receiver or a
        command cut half-way): at most ``CLOSE_TIMEOUT`` seconds a step."""
        self._closed = True
        tasks = [t for t in (self._task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
        self._task = None
        with contextlib.suppress(Exception):  # ours or not: the script checks (a lease
            async with asyncio.timeout(CLOSE_TIMEOUT):  # taken by a cut pass too)
                await self._release(keys=[LEASE], args=[self.owner])
        self.holding = False
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._client.aclose()

    # -- one pass ----------------------------------------------------------------------------
    async def run_once(self, *, wait: bool = False) -> None:
        """Start a drain task for every (subscription, outbox) pair with new events; with
        ``wait``, wait for them (tests)."""
        tenants = sorted(_s(t) for t in await self.redis.smembers(TENANTS))
        if tenants:  # nobody subscribed: nothing to deliver, no lease written
            lease_ms = int(self.settings.lease * 1000)
            self.holding = bool(await self._lease(keys=[LEASE], args=[self.owner, lease_ms]))
            if not self.holding:
                return
        else:
            self.holding = False
        tags = sorted(_s(p) for p in await self.redis.smembers(PAYERS))
        placed = await roots(self.redis)  # a chained payer's keys are in its root's slot
        payers = [PayerKeys(t, placed.get(t, "")) for t in tags]
        now = time.time()
        for tenant in tenants:
            await self._tenant(tenant, payers)
        if now - self._trimmed >= TRIM_EVERY:
            self._trimmed = now
            await self._trim(payers, tenants, int(now * 1000))
        if self.metrics is not None:
            oldest = min(self._pending.values(), default=None)
            age = 0.0 if oldest is None else max(now - oldest / 1000, 0.0)
            self.metrics.backlog_age.set(age)
        if wait:
            while self._running:
                await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def _tenant(self, tenant: str, payers: list[PayerKeys]) -> None:
        subs = await self.subs.all(tenant)
        if not subs:
            return
        streams = _outboxes(tenant, payers)
        queues = [redeliver_key(tenant, sub.id) for sub in subs]
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in (*streams, *queues):
                pipe.xrevrange(stream, count=1)
            for sub in subs:
                pipe.hgetall(cursor_key(tenant, sub.id))
            replies = await pipe.execute()
        n, m = len(streams), len(streams) + len(queues)
        lasts, queued, cursors = replies[:n], replies[n:m], replies[m:]
        done = [{_s(k): _s(v) for k, v in raw.items()} for raw in cursors]
        for stream, last in zip(streams, lasts, strict=True):
            if last:
                for sub, cursor in zip(subs, done, strict=True):
                    self._start(sub, stream, _s(last[0][0]), cursor.get(stream, sub.start))
        # each subscription's own redelivery queue (dead letters an operator sent again)
        for sub, queue, last, cursor in zip(subs, queues, queued, done, strict=True):
            if last:
                self._start(sub, queue, _s(last[0][0]), cursor.get(queue, "0-0"))

    def _start(self, sub: Subscription, stream: str, last: str, cursor: str) -> None:
        key = (sub.tenant, sub.id, stream)
        if _id(last) > _id(cursor) and key not in self._running:
            task = asyncio.create_task(self._drain(sub, stream, cursor))
            self._running[key] = task
            task.add_done_callback(self._forget(key))

    def _forget(self, key: tuple[str, str, str]) -> Any:
        def done(_task: asyncio.Task[None]) -> None:
            self._running.pop(key, None)

        return done

    async def _trim(self, payers: list[PayerKeys], tenants: list[str], now_ms: int) -> None:
        """Drop outbox entries every subscription is done with, and those older than the
        retention (a tenant without subscriptions keeps its events that long)."""
        floor = f"{now_ms - int(self.settings.retention * 1000)}-0"
        by_tenant: dict[str, list[str]] = {}
        for p in payers:
            by_tenant.setdefault(p.tag.partition(":")[0], [])
        for t in tenants:
            by_tenant.setdefault(t, [])
        for tenant in by_tenant:
            streams = _outboxes(tenant, payers)
            subs = await self.subs.all(tenant) if tenant in tenants else []
            cursors = [
                {
                    _s(k): _s(v)
                    for k, v in (await self.redis.hgetall(cursor_key(tenant, s.id))).items()
                }
                for s in subs
            ]
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream in streams:
                    minid = floor
                    if subs:
                        done = min(
                            (c.get(stream, s.start) for s, c in zip(subs, cursors, strict=True)),
                            key=_id,
                        )
                        minid = max(done, floor, key=_id)
                    pipe.xtrim(stream, minid=minid)
                await pipe.execute()

    # -- one pair ----------------------------------------------------------------------------
    async def _drain(self, sub: Subscription, stream: str, cursor: str) -> None:
        key = (sub.tenant, sub.id, stream)
        async with self._slots:
            raw = await self.redis.hget(retry_key(sub.tenant, sub.id), stream)
            retry = json.loads(raw) if raw else None
            if retry is not None and retry["next"] > time.time() * 1000:
                return
            while True:
                entries: list[Any] = (
                    await self.redis.xrange(stream, min=f"({cursor}", count=BATCH) or []
                )
                if not entries:
                    self._pending.pop(key, None)
                    return
                self._pending[key] = _id(_s(entries[0][0]))[0]
                skipped = False
                for raw_id, fields in entries:
                    eid = _s(raw_id)
                    event = _event(fields)
                    if event is None or event.tenant != sub.tenant or not sub.matches(event):
                        cursor, skipped = eid, True
                        continue
                    attempts = 1
                    if retry is not None and retry.get("event") == event.id:
                        attempts = int(retry["attempts"]) + 1
                    retry = None
                    if not await self._deliver(sub, stream, eid, event, attempts):
                        if skipped:
                            await self.redis.hset(cursor_key(sub.tenant, sub.id), stream, cursor)
                        self._pending[key] = _id(eid)[0]
                        return
                    cursor, skipped = eid, False
                if skipped:
                    await self.redis.hset(cursor_key(sub.tenant, sub.id), stream, cursor)

    async def _deliver(
        self, sub: Subscription, stream: str, eid: str, event: Event, attempts: int
    ) -> bool:
        """One attempt; True when the pair may go on (delivered, or dead-lettered)."""
        redelivery = stream == redeliver_key(sub.tenant, sub.id)
        result = await self._post(sub, event, attempts, redelivery=redelivery)
        s = self.settings
        give_up = result.final or attempts >= s.max_attempts
        outcome = "delivered" if result.ok else ("failed" if give_up else "retried")
        entry: dict[Any, Any] = {
            "event_id": event.id,
            "type": event.type,
            "attempt": str(attempts),
            "outcome": outcome,
            "status": str(result.status),
            "error": result.error,
            "ms": str(result.ms),
            "at_ms": str(int(time.time() * 1000)),
        }
        cursors, retries = cursor_key(sub.tenant, sub.id), retry_key(sub.tenant, sub.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(log_key(sub.tenant, sub.id), entry, maxlen=LOG_MAXLEN, approximate=True)
            if result.ok or give_up:
                if not result.ok:
                    dead = {**entry, "event_body": event.body().decode()}
                    pipe.xadd(
                        dead_key(sub.tenant, sub.id), dead, maxlen=DEAD_MAXLEN, approximate=True
                    )
                pipe.hset(cursors, stream, eid)
                pipe.hdel(retries, stream)
                if redelivery:  # the queue holds what is still to redeliver, nothing else
                    pipe.xdel(stream, eid)
            else:
                due = int((time.time() + s.delay(attempts)) * 1000)
                state = {"event": event.id, "attempts": attempts, "next": due}
                pipe.hset(retries, stream, json.dumps(state))
            await pipe.execute()
        if self.metrics is not None:
            self.metrics.deliveries.labels(outcome).inc()
            if redelivery:
                self.metrics.redeliveries.labels(outcome).inc()
            if result.ok:
                self.metrics.lag.observe(max(time.time() - event.time_ms / 1000, 0.0))
        if not result.ok:
            log.info(
                "webhook %s: event %s attempt %d %s (%s)",
                sub.id,
                event.id,
                attempts,
                outcome,
                result.error or result.status,
            )
        return result.ok or give_up

    async def _post(
        self, sub: Subscription, event: Event, attempt: int, *, redelivery: bool = False
    ) -> Attempt:
        body = event.body()
        if len(body) > self.settings.max_body:
            return Attempt(False, 0, f"body of {len(body)} bytes over the limit", 0, final=True)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "ocs-webhooks/1",
            EVENT_HEADER: event.id,
            HEADER: signature(sub.secret, int(time.time()), body),
            ATTEMPT_HEADER: str(attempt),
        }
        if redelivery:
            headers[REDELIVERED_HEADER] = "1"
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.timeout):
                async with self._client.stream(
                    "POST", sub.url, content=body, headers=headers, timeout=self.settings.timeout
                ) as response:
                    status = response.status_code  # the answer's body is never read
        except TimeoutError:
            return Attempt(False, 0, "timeout", _ms(started))
        except httpx.HTTPError as exc:
            return Attempt(False, 0, f"{type(exc).__name__}: {exc}"[:200], _ms(started))
        ok = 200 <= status < 300
        return Attempt(ok, status, "" if ok else f"HTTP {status}", _ms(started))


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _outboxes(tenant: str, payers: list[PayerKeys]) -> list[str]:
    """The tenant's outbox streams: one per payer, and its own (API writes)."""
    prefix = tenant + ":"
    return [p.events for p in payers if p.tag.startswith(prefix)] + [tenant_outbox(tenant)]


def _event(fields: dict[Any, Any]) -> Event | None:
    try:
        return Event.from_fields(fields)
    except (KeyError, ValueError) as exc:
        log.error("outbox entry without a valid event skipped: %s", exc)
        return None
