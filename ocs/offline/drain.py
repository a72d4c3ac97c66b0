"""Drain the per-payer rated-usage streams into PostgreSQL exactly once.

For every payer tag in ``ocs:payers`` the stream ``ocs:{tag}:cdr`` is read with the
consumer group ``offline``. One batch = the entries of one stream read at once:

1. in one PostgreSQL transaction, COPY the batch into a temporary table and
   ``INSERT ... SELECT ... ON CONFLICT (tenant_id, record_key) DO NOTHING`` into
   ``usage_records``; commit;
2. then ``XACK`` the entries.

A crash after 1 and before 2 leaves the entries pending: the next drain reads its own
pending entries first and claims other consumers' stale ones (``XAUTOCLAIM``); inserting
them again does nothing (same ``record_key``). A crash before the commit inserts nothing.
So no record is lost or counted twice. ``record_key`` is ``<kind>:<id>`` (the request id is
unique per usage); reclaim records reuse the reservation member as id, so theirs also
carries the time stamp.

IMSI and MSISDN are removed from the stored context; the IMSI is kept as its blind index.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from redis.exceptions import ResponseError

from ocs.balance.keys import PAYERS, PayerKeys
from ocs.offline.crypto import TenantCipher, tenant_cipher
from ocs.offline.db import Database, enter_tenant
from ocs.store import RedisClient

GROUP: Final = "offline"
BATCH: Final = 5000
CLAIM_IDLE_MS: Final = 60_000  # a pending entry idle this long belongs to a dead consumer
COLUMNS: Final = (
    "tenant_id",
    "record_key",
    "stream_id",
    "kind",
    "payer",
    "ts",
    "unit",
    "units",
    "money",
    "overrun",
    "session_id",
    "rating_group",
    "imsi_bidx",
    "twin",
    "account_id",
    "service",
    "alloc",
    "ctx",
)
STRIPPED: Final = ("imsi", "msisdn", "subscription")

Entry = tuple[bytes, dict[bytes, bytes]]
_loads: Final = json.JSONDecoder().decode
_dumps: Final = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
Hook = Callable[[str], Awaitable[None]]


class DrainCrash(Exception):
    """Raised by test hooks to simulate a crash at a named point."""


@dataclass(slots=True)
class DrainStats:
    read: int = 0
    inserted: int = 0
    duplicates: int = 0
    acked: int = 0
    claimed: int = 0
    streams: int = 0
    seconds: float = 0.0
    db_seconds: float = 0.0  # inside the PostgreSQL transactions (COPY, INSERT, commit)
    skipped: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0


def _s(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode()


def record_key(kind: str, rid: str, ts: str) -> str:
    if kind == "reclaim":
        return f"{kind}:{rid}:{ts}"
    return f"{kind}:{rid}"


class Drainer:
    """Moves stream entries to ``usage_records``. ``hook(point)`` is awaited at the points
    ``before_commit``, ``after_commit`` and ``after_ack`` (tests inject crashes there)."""

    def __init__(
        self,
        redis: RedisClient,
        db: Database,
        master: bytes,
        *,
        consumer: str | None = None,
        batch: int = BATCH,
        claim_idle_ms: int = CLAIM_IDLE_MS,
        hook: Hook | None = None,
    ) -> None:
        self.redis = redis
        self.db = db
        self.master = master
        self.consumer = consumer or f"{socket.gethostname()}-drain"
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.hook = hook
        self.ciphers: dict[str, TenantCipher] = {}
        self.bidx_cache: dict[tuple[str, str], bytes] = {}

    async def _hook(self, point: str) -> None:
        if self.hook is not None:
            await self.hook(point)

    async def streams(self) -> list[str]:
        members: Any = await self.redis.smembers(PAYERS)
        tags = sorted(_s(t) for t in members)
        return [PayerKeys(t).stream for t in tags]

    async def ensure_group(self, stream: str) -> None:
        try:
            await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, *, progress: Callable[[int], None] | None = None) -> DrainStats:
        """Drain every stream until nothing is left; returns the counts."""
        stats = DrainStats()
        started = time.perf_counter()
        for stream in await self.streams():
            stats.streams += 1
            await self.ensure_group(stream)
            await self._drain_stream(stream, stats, progress)
        stats.seconds = time.perf_counter() - started
        return stats

    async def _drain_stream(
        self, stream: str, stats: DrainStats, progress: Callable[[int], None] | None
    ) -> None:
        # 1. our own pending entries (a crash of this consumer between commit and ack)
        last = "0"
        while True:
            reply: Any = await self.redis.xreadgroup(
                GROUP, self.consumer, {stream: last}, count=self.batch
            )
            entries: list[Entry] = reply[0][1] if reply else []
            if not entries:
                break
            await self._batch(stream, entries, stats, progress)
            last = _s(entries[-1][0])
        # 2. stale entries of other (dead) consumers
        cursor = "0-0"
        while True:
            res: Any = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, self.claim_idle_ms, cursor, count=self.batch
            )
            cursor = _s(res[0])
            claimed = [e for e in res[1] if e[1] is not None]
            if claimed:
                stats.claimed += len(claimed)
                await self._batch(stream, claimed, stats, progress)
            if cursor == "0-0":
                break
        # 3. new entries
        while True:
            reply = await self.redis.xreadgroup(
                GROUP, self.consumer, {stream: ">"}, count=self.batch
            )
            entries = reply[0][1] if reply else []
            if not entries:
                break
            await self._batch(stream, entries, stats, progress)

    async def _cipher(self, conn: Any, tenant: str) -> TenantCipher:
        cipher = self.ciphers.get(tenant)
        if cipher is None:
            cipher = await tenant_cipher(conn, tenant, self.master)
            self.ciphers[tenant] = cipher
        return cipher

    async def _batch(
        self,
        stream: str,
        entries: Sequence[Entry],
        stats: DrainStats,
        progress: Callable[[int], None] | None,
    ) -> None:
        stats.read += len(entries)
        tenant = _s(entries[0][1].get(b"payer")).split(":", 1)[0]
        cipher = self.ciphers.get(tenant)
        rows = None
        if cipher is not None:  # convert before the transaction: it holds a connection
            rows = [self._row(tenant, stream, eid, fields, cipher) for eid, fields in entries]
        began = time.perf_counter()
        async with self.db.pool.acquire() as conn, conn.transaction():
            await enter_tenant(conn, tenant)
            if rows is None:
                cipher = await self._cipher(conn, tenant)
                rows = [self._row(tenant, stream, eid, fields, cipher) for eid, fields in entries]
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS drain_in (LIKE usage_records INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS"
            )
            await conn.copy_records_to_table("drain_in", records=rows, columns=COLUMNS)
            cols = ", ".join(COLUMNS)
            result = await conn.execute(
                f"INSERT INTO usage_records ({cols}) SELECT {cols} FROM drain_in"
                " ON CONFLICT (tenant_id, record_key) DO NOTHING"
            )
            inserted = int(result.rsplit(" ", 1)[1])
            await self._hook("before_commit")
        stats.db_seconds += time.perf_counter() - began
        await self._hook("after_commit")
        stats.inserted += inserted
        stats.duplicates += len(rows) - inserted
        ids = [eid for eid, _ in entries]
        stats.acked += int(await self.redis.xack(stream, GROUP, *ids))
        await self._hook("after_ack")
        if progress is not None:
            progress(len(entries))

    def _row(
        self, tenant: str, stream: str, eid: bytes, f: dict[bytes, bytes], cipher: TenantCipher
    ) -> tuple[Any, ...]:
        get = f.get
        kind = (get(b"kind") or b"").decode()
        ts = (get(b"ts") or b"").decode() or "0"
        raw_ctx = get(b"ctx")
        ctx: dict[str, Any] = _loads(raw_ctx.decode()) if raw_ctx else {}
        imsi = ctx.get("imsi")
        bidx = None
        if imsi:
            key = (tenant, imsi)
            bidx = self.bidx_cache.get(key)
            if bidx is None:
                bidx = self.bidx_cache[key] = cipher.bidx(imsi)
        for name in STRIPPED:
            ctx.pop(name, None)
        rg = ctx.get("rg")
        return (
            tenant,
            record_key(kind, (get(b"id") or b"").decode(), ts),
            f"{stream}/{eid.decode()}",
            kind,
            (get(b"payer") or b"").decode(),
            datetime.fromtimestamp(int(ts) / 1000, UTC),
            (get(b"unit") or b"").decode(),
            int(get(b"units") or 0),
            int(get(b"money") or 0),
            int(get(b"overrun") or 0),
            ctx.get("session"),
            int(rg) if rg is not None else None,
            bidx,
            ctx.get("twin"),
            ctx.get("account"),
            ctx.get("service"),
            (get(b"alloc") or b"").decode() or "[]",
            _dumps(ctx) if raw_ctx else None,
        )
