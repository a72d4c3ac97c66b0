"""One tenant's rated usage records wherever they are, each read once: the records of the
open period still in the payers' Redis Streams (not drained yet) and the drained ones in
PostgreSQL's ``usage_records``.

The drain (:mod:`ocs.offline.drain`) commits a batch in PostgreSQL *before* it deletes the
entries from Redis (``XACK`` + ``XDEL``), so a record is always in at least one of the two
stores, and for a moment in both. Every read here therefore:

1. reads Redis first (the streams of the payers that can hold the subject's records), and
2. then opens one read-only ``REPEATABLE READ`` transaction (one snapshot) in which it reads
   the stored rows *and* asks which of the records read in step 1 are stored already.

A record drained before step 1 is in that snapshot (committed before its ``XDEL``); a record
read in step 1 and committed since is found stored in step 2 and counted from PostgreSQL
only, never twice. The other order (PostgreSQL first) would lose a record drained between
the two reads. Records are identified by ``record_key`` (``kind:id``, see
:func:`ocs.offline.drain.record_key`), the drain's own unique key.

Cost: a stream is read whole (records are filtered by their time stamp ``ts``, which the
stream's entry ids do not order), so a read costs the undrained backlog of the subject's
payers; at most :data:`MAX_OPEN` matching records are held (beyond it
:class:`OpenBacklog`: the drain is behind). Stored rows are found by index: a SIM's by the
IMSI's blind index (``usage_records_sim_ts``), a payer's by its tag (``usage_records_payer_ts``),
an account's by ``usage_records_account_ts``. Periods are calendar days or months in the
time zone the caller names (the tenant's).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Final, Literal, TypeVar
from zoneinfo import ZoneInfo

import asyncpg

from ocs.balance.keys import PAYERS
from ocs.balance.slots import locate
from ocs.offline.crypto import TenantCipher, stored_cipher
from ocs.offline.db import Connection, Database, enter_tenant
from ocs.offline.drain import record_key
from ocs.redis_client import RedisClient

STREAM_PAGE: Final = 5_000  # entries per XRANGE
MAX_OPEN: Final = 200_000  # matching undrained records one read holds
CHECK_CHUNK: Final = 10_000  # record keys per "stored already?" query
USAGE: Final = ("usage",)  # what SIMs used (level 0's record of each usage)
# what payers paid: level 0's records and the upper levels' of reseller chains (``level``,
# one per level whose payer paid, docs/charging.md); a usage is in one ``usage`` record
PAID: Final = ("usage", "level")
STATEMENT_TIMEOUT_MS: Final = 30_000  # a read's statement (an export's: EXPORT_TIMEOUT_MS)
EXPORT_TIMEOUT_MS: Final = 600_000  # an export's fetch (the first one sorts the period)
Granularity = Literal["day", "month"]
T = TypeVar("T")
_TS_MS: Final = "(extract(epoch FROM u.ts) * 1000)::bigint"
_CURRENCY: Final = "coalesce(u.ctx->'levels'->0->>'currency', '')"
_RATED: Final = "coalesce((u.ctx->'levels'->0->>'amount')::bigint, 0)"


class OpenBacklog(Exception):
    """More undrained records match than one read holds (the drain is behind)."""


@dataclass(frozen=True, slots=True)
class Subject:
    """Whose records: a payer (``payer``: its tag ``tenant:kind:id``), a SIM (``imsi``, all
    its twins), an account (``account``: the records of its SIMs) or, with none of them,
    the whole tenant. ``streams``: the payer tags whose streams can hold its open records."""

    tenant: str
    streams: tuple[str, ...]
    payer: str | None = None
    imsi: str | None = None
    account: str | None = None

    def holds(self, ctx: dict[str, Any]) -> bool:
        """Whether an open record of one of ``streams`` (with this context) is the subject's
        (a payer's records are those of its stream)."""
        if self.imsi is not None:
            return bool(ctx.get("imsi") == self.imsi)
        if self.account is not None:
            return bool(ctx.get("account") == self.account)
        return True


@dataclass(frozen=True, slots=True)
class Record:
    """One rated record as the stream holds it; ``stored``: read from PostgreSQL (its
    context then lacks ``imsi``, ``msisdn`` and ``subscription``, cut out by the drain)."""

    key: str
    entry: str  # the stream entry id (``<ms>-<seq>``)
    kind: str
    payer: str
    ts: int  # ms since the epoch
    unit: str
    units: int
    money: int
    overrun: int
    alloc: list[Any]
    ctx: dict[str, Any]
    stored: bool
    imsi: str | None = None

    @property
    def order(self) -> tuple[int, str]:
        return (self.ts, self.key)

    @property
    def currency(self) -> str:
        level = _level0(self.ctx)
        return str(level.get("currency") or "")

    @property
    def rated(self) -> int:
        return int(_level0(self.ctx).get("amount") or 0)


@dataclass(slots=True)
class Totals:
    records: int = 0
    units: int = 0
    money: int = 0
    overrun: int = 0
    rated: int = 0

    def add(self, records: int, units: int, money: int, overrun: int, rated: int) -> None:
        self.records += records
        self.units += units
        self.money += money
        self.overrun += overrun
        self.rated += rated


PeriodKey = tuple[date, str, str]  # period start (local date), unit, currency


def _summed(r: Record) -> tuple[str, int, str, str, int, int, int, int]:
    """What a sum needs of an open record."""
    return (r.key, r.ts, r.unit, r.currency, r.units, r.money, r.overrun, r.rated)


def _level0(ctx: dict[str, Any]) -> dict[str, Any]:
    levels = ctx.get("levels")
    if isinstance(levels, list) and levels and isinstance(levels[0], dict):
        return levels[0]
    return {}


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _field(raw: dict[Any, Any], name: str) -> Any:
    value = raw.get(name.encode())
    return raw.get(name) if value is None else value


def _b(value: bytes | str | None) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else value.encode()


def _json(text: str, empty: Any) -> Any:
    if not text:
        return empty
    try:
        value = json.loads(text)
    except ValueError:
        return empty
    return value if isinstance(value, type(empty)) else empty


def _int(text: str) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def entry_record(eid: bytes | str, raw: dict[Any, Any]) -> Record:
    """A stream entry as a :class:`Record` (a field missing or malformed reads as empty)."""
    f = {_s(k): _s(v) for k, v in raw.items()}
    kind, rid, ts = f.get("kind", ""), f.get("id", ""), f.get("ts", "") or "0"
    ctx = _json(f.get("ctx", ""), {})
    return Record(
        key=record_key(kind, rid, ts),
        entry=_s(eid),
        kind=kind,
        payer=f.get("payer", ""),
        ts=_int(ts),
        unit=f.get("unit", ""),
        units=_int(f.get("units", "")),
        money=_int(f.get("money", "")),
        overrun=_int(f.get("overrun", "")),
        alloc=_json(f.get("alloc", ""), []),
        ctx=ctx,
        stored=False,
        imsi=str(ctx["imsi"]) if ctx.get("imsi") else None,
    )


def local_start(day: date, tz: ZoneInfo) -> datetime:
    """Local midnight of ``day`` in ``tz``, in UTC."""
    return datetime.combine(day, time(0), tz).astimezone(UTC)


def period_of(ts_ms: int, by: Granularity, tz: ZoneInfo) -> date:
    local = datetime.fromtimestamp(ts_ms / 1000, tz).date()
    return local.replace(day=1) if by == "month" else local


def ms(at: datetime) -> int:
    return int(at.timestamp()) * 1000 + at.microsecond // 1000


async def tenant_streams(redis: RedisClient, tenant: str) -> tuple[str, ...]:
    """The payer tags of ``tenant`` in the payer registry (``ocs:payers``)."""
    members: Any = await redis.smembers(PAYERS)
    prefix = f"{tenant}:"
    return tuple(sorted(t for t in map(_s, members) if t.startswith(prefix)))


class UsageReader:
    """Reads :class:`Record` s of one subject from Redis and PostgreSQL (see the module).
    ``hook(point)`` is awaited at ``after_redis``, between the two reads (tests run the drain
    there)."""

    def __init__(
        self,
        redis: RedisClient,
        db: Database,
        master: bytes,
        *,
        max_open: int = MAX_OPEN,
        hook: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.redis = redis
        self.db = db
        self.master = master
        self.max_open = max_open
        self.hook = hook

    async def between(self) -> None:
        if self.hook is not None:
            await self.hook("after_redis")

    # -- Redis ------------------------------------------------------------------------------
    async def _open(
        self, subject: Subject, kinds: Sequence[str] | None, start_ms: int, end_ms: int
    ) -> AsyncIterator[Record]:
        """The subject's undrained records of ``kinds`` (None: all) with ``start_ms <= ts <
        end_ms``. An entry is decoded only when its kind, time stamp and (for a SIM or an
        account) the raw text of its context can match: a SIM's records are a few of its
        pool's stream."""
        needle = (subject.imsi or subject.account or "").encode()
        for tag in subject.streams:
            stream = (await locate(self.redis, tag)).stream  # chained: in its root's slot
            low = "-"
            while True:
                page: list[Any] = await self.redis.xrange(  # type: ignore[assignment]
                    stream, min=low, max="+", count=STREAM_PAGE
                )
                for eid, raw in page:
                    if not raw:
                        continue
                    if kinds is not None and _s(_field(raw, "kind")) not in kinds:
                        continue
                    if not start_ms <= _int(_s(_field(raw, "ts"))) < end_ms:
                        continue
                    if needle and needle not in _b(_field(raw, "ctx")):
                        continue
                    record = entry_record(eid, raw)
                    if start_ms <= record.ts < end_ms and subject.holds(record.ctx):
                        yield record
                if len(page) < STREAM_PAGE:
                    break
                low = "(" + _s(page[-1][0])

    async def open_list(
        self,
        subject: Subject,
        kinds: Sequence[str],
        start_ms: int,
        end_ms: int,
        convert: Callable[[Record], T],
    ) -> list[T]:
        """The subject's open records, each kept as ``convert`` makes it (small: the record's
        context is not kept), at most ``max_open`` (else :class:`OpenBacklog`)."""
        out: list[T] = []
        async for record in self._open(subject, kinds, start_ms, end_ms):
            if len(out) >= self.max_open:
                raise OpenBacklog(
                    f"more than {self.max_open} undrained records match: run the drain"
                    " (ocs cdr drain) and ask again"
                )
            out.append(convert(record))
        return out

    # -- PostgreSQL -------------------------------------------------------------------------
    async def where(self, conn: Connection, subject: Subject, args: list[Any]) -> str | None:
        """The SQL condition selecting the subject's stored rows (``args`` extended), or None
        when none can exist (a SIM of a tenant that has no key: nothing was drained)."""
        if subject.payer is not None:
            args.append(subject.payer)
            return f"u.payer = ${len(args)}"
        if subject.account is not None:
            args.append(subject.account)
            return f"u.account_id = ${len(args)}"
        if subject.imsi is not None:
            cipher: TenantCipher | None = await stored_cipher(conn, subject.tenant, self.master)
            if cipher is None:
                return None
            args.append(cipher.bidx(subject.imsi))
            return f"u.imsi_bidx = ${len(args)}"
        return "true"

    async def stored_keys(self, conn: Connection, tenant: str, keys: list[str]) -> set[str]:
        """Which of ``keys`` are in ``usage_records`` (in the transaction's snapshot)."""
        found: set[str] = set()
        for i in range(0, len(keys), CHECK_CHUNK):
            rows = await conn.fetch(
                "SELECT record_key FROM usage_records"
                " WHERE tenant_id = $1 AND record_key = ANY($2::text[])",
                tenant,
                keys[i : i + CHECK_CHUNK],
            )
            found.update(r["record_key"] for r in rows)
        return found

    # -- reads ------------------------------------------------------------------------------
    async def by_period(
        self,
        subject: Subject,
        by: Granularity,
        tz: ZoneInfo,
        start: date,
        end: date,
        kinds: Sequence[str] = USAGE,
    ) -> list[tuple[PeriodKey, Totals]]:
        """Usage per (period, unit, currency) for local days ``[start, end)``, in order."""
        lo, hi = local_start(start, tz), local_start(end, tz)
        opened = await self.open_list(subject, kinds, ms(lo), ms(hi), _summed)
        await self.between()
        out: dict[PeriodKey, Totals] = {}
        async with snapshot(self.db, subject.tenant) as conn:
            stored = await self.stored_keys(conn, subject.tenant, [r[0] for r in opened])
            args: list[Any] = [subject.tenant, list(kinds), lo, hi, by, tz.key]
            where = await self.where(conn, subject, args)
            rows = []
            if where is not None:
                rows = await conn.fetch(
                    "SELECT (date_trunc($5, u.ts AT TIME ZONE $6))::date AS period,"
                    f" u.unit, {_CURRENCY} AS currency, count(*) AS records,"
                    " sum(u.units)::bigint AS units, sum(u.money)::bigint AS money,"
                    f" sum(u.overrun)::bigint AS overrun, sum({_RATED})::bigint AS rated"
                    " FROM usage_records u WHERE u.tenant_id = $1 AND u.kind = ANY($2::text[])"
                    f" AND u.ts >= $3 AND u.ts < $4 AND {where} GROUP BY 1, 2, 3",
                    *args,
                )
        for row in rows:
            key = (row["period"], row["unit"], row["currency"])
            out.setdefault(key, Totals()).add(
                row["records"], row["units"], row["money"], row["overrun"], row["rated"]
            )
        for rkey, ts, unit, currency, units, money, overrun, rated in opened:
            if rkey not in stored:
                key = (period_of(ts, by, tz), unit, currency)
                out.setdefault(key, Totals()).add(1, units, money, overrun, rated)
        return sorted(out.items())

    async def page(
        self,
        subject: Subject,
        limit: int,
        before: tuple[int, str] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> list[Record]:
        """Up to ``limit`` records, newest first by (``ts``, key), below ``before``."""
        top: list[tuple[tuple[int, str], int, Record]] = []  # min-heap of the newest
        n = 0
        async for r in self._open(subject, kinds, -(2**63), 2**63):
            if before is not None and r.order >= before:
                continue
            n += 1
            item = (r.order, n, r)
            if len(top) <= limit:
                heapq.heappush(top, item)
            else:
                heapq.heappushpop(top, item)
        opened = [r for _, _, r in top]
        await self.between()
        async with snapshot(self.db, subject.tenant) as conn:
            stored = await self.stored_keys(conn, subject.tenant, [r.key for r in opened])
            args: list[Any] = [subject.tenant, limit + 1]
            cond = ["u.tenant_id = $1"]
            if kinds is not None:
                args.append(list(kinds))
                cond.append(f"u.kind = ANY(${len(args)}::text[])")
            if before is not None:
                args += [before[0], before[1]]
                n_ts, n_key = len(args) - 1, len(args)
                cond.append(
                    f"(u.ts, u.record_key) < ('epoch'::timestamptz + ${n_ts}::bigint"
                    f" * interval '1 millisecond', ${n_key}::text)"
                )
            where = await self.where(conn, subject, args)
            rows = []
            if where is not None:
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM usage_records u WHERE {' AND '.join(cond)}"
                    f" AND {where} ORDER BY u.ts DESC, u.record_key DESC LIMIT $2",
                    *args,
                )
        merged = [_row_record(r) for r in rows] + [r for r in opened if r.key not in stored]
        merged.sort(key=lambda r: r.order, reverse=True)
        return merged[:limit]


_COLUMNS: Final = (
    "u.record_key, u.stream_id, u.kind, u.payer, "
    + _TS_MS
    + " AS ts_ms, u.unit, u.units, u.money, u.overrun, u.alloc::text AS alloc, u.ctx::text AS ctx"
)


def _row_record(row: asyncpg.Record, imsi: str | None = None) -> Record:
    stream_id: str = row["stream_id"]
    return Record(
        key=row["record_key"],
        entry=stream_id.rpartition("/")[2],
        kind=row["kind"],
        payer=row["payer"],
        ts=int(row["ts_ms"]),
        unit=row["unit"],
        units=int(row["units"]),
        money=int(row["money"]),
        overrun=int(row["overrun"]),
        alloc=_json(row["alloc"] or "", []),
        ctx=_json(row["ctx"] or "", {}),
        stored=True,
        imsi=imsi,
    )


@asynccontextmanager
async def snapshot(
    db: Database, tenant: str, timeout_ms: int = STATEMENT_TIMEOUT_MS
) -> AsyncIterator[Connection]:
    """A read-only REPEATABLE READ transaction of ``tenant`` as the application role: every
    query in it sees one snapshot, and each statement ends after ``timeout_ms`` (cancelled:
    ``QueryCanceledError``)."""
    async with (
        db.pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        await enter_tenant(conn, tenant)
        await conn.execute("SELECT set_config('statement_timeout', $1, true)", str(int(timeout_ms)))
        yield conn
