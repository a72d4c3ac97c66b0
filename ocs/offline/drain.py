"""Drain the per-payer rated-usage streams into PostgreSQL exactly once.

For every payer tag in ``ocs:payers`` the stream ``ocs:{tag}:cdr`` is read with the
consumer group ``offline``. One batch = the entries one ``XREADGROUP`` returned for many
streams at once (up to ``batch`` records in all):

1. in one PostgreSQL transaction, COPY the batch (text, as the streams hold it) into a
   temporary staging table and, per tenant, insert the rows into ``usage_records``: entries
   read for the first time (``XREADGROUP >``) with a plain ``INSERT ... SELECT`` in a
   savepoint (no sort, no conflict arbitration), entries delivered before (own pending,
   claimed) and fresh rows whose plain insert met a stored record (``unique_violation``)
   with ``INSERT ... SELECT ... ORDER BY record_key ON CONFLICT DO NOTHING``; commit;
2. then ``XACK`` and ``XDEL`` the entries (one pipelined round trip for all streams of the
   batch): a drained record lives in PostgreSQL only, so no IMSI or MSISDN of drained usage
   stays in Redis (``trim=False`` keeps them, acknowledged, as before).

While batch *k* is in its transaction, batch *k + 1* is read and converted (double
buffering): it is pending in the group but neither inserted nor acknowledged yet. An entry is
acknowledged only after the transaction holding it committed.

A crash after 1 and before 2 leaves the entries pending (with a read-ahead batch also the
next batch's entries): the next drain reads its own pending entries first and claims other
consumers' stale ones (``XAUTOCLAIM``); inserting them again does nothing (same
``record_key``). A crash before the commit inserts nothing. So no record is lost or counted
twice. ``record_key`` is ``<kind>:<id>`` (the request id is unique per usage); reclaim
records reuse the reservation member as id, so theirs also carries the time stamp.

Trimming deletes exactly the entries whose transaction committed, by id (``XDEL``), never
by position (``XTRIM MINID`` would also drop entries of the same stream another consumer
has read and not yet committed: lost if that consumer then dies). A redelivered entry (our
own pending after a crash, or claimed from a dead consumer) that another consumer already
committed and deleted comes back without fields (``XAUTOCLAIM`` drops it from the pending
list itself; our own pending read skips and acknowledges it); its row is in PostgreSQL.
Deleting an id twice is a no-op. A crash between the commit and the ``XACK``/``XDEL``
round trip leaves the entries pending: the next drain inserts nothing new for them and then
acknowledges and deletes them. The stream key stays (with its consumer group), empty.
Readers of usage (``ocs.offline.usage_reader``: transactions, usage API, export) read a
stream first and PostgreSQL after, so a record in both (committed, not yet deleted) is
counted once and none drained between the two reads is lost.

IMSI, MSISDN and subscription are removed from the context in Python before anything goes
to the server (plain IMSIs never travel to PostgreSQL); the IMSI is kept as its blind index.
The members are cut out of the context's text (``strip_identifiers``; decoded and encoded
again only when the text is not spelled the way the producers write it).
The other columns (session, rating group, twin, account, service) are read from the stored
context by the ``INSERT ... SELECT``.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final

from asyncpg.exceptions import DeadlockDetectedError, UniqueViolationError
from hiredis import pack_command
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from ocs.balance.keys import PAYERS
from ocs.balance.slots import locate_all
from ocs.observability.metrics import offline_metrics
from ocs.offline.crypto import TenantCipher, tenant_cipher
from ocs.offline.db import TENANT_SETTING, Connection, Database, enter_tenant
from ocs.redis_client import RedisClient

GROUP: Final = "offline"
BATCH: Final = 20_000  # records per transaction (read from many streams at once)
WRITERS: Final = 2  # batches in their transactions at once (one connection each)
MIN_COUNT: Final = 16  # entries per stream and XREADGROUP at least
DEADLOCK_RETRIES: Final = 3  # conflict-safe inserts chosen as a deadlock's victim
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
# the stream fields of a record (charge.lua, adjust.lua, lifecycle.lua, reclaim.lua)
FIELDS: Final = (
    b"kind",
    b"id",
    b"payer",
    b"ts",
    b"unit",
    b"units",
    b"money",
    b"overrun",
    b"alloc",
    b"ctx",
)
# The staging table: the stream fields as they arrive (COPY text format, '' = NULL).
STAGING: Final = (
    "CREATE TEMP TABLE IF NOT EXISTS drain_in ("
    " tenant_id text, record_key text, stream_id text, kind text, payer text, ts bigint,"
    " unit text, units bigint, money bigint, overrun bigint, bidx text, alloc jsonb, ctx jsonb)"
    " ON COMMIT DELETE ROWS"
)
STAGED: Final = (
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
    "bidx",
    "alloc",
    "ctx",
)
_TABS: Final = len(STAGED) - 1
_SELECT: Final = (
    f"INSERT INTO usage_records ({', '.join(COLUMNS)})"
    " SELECT tenant_id, record_key, stream_id, coalesce(kind, ''), coalesce(payer, ''),"
    " 'epoch'::timestamptz + coalesce(ts, 0) * interval '1 millisecond', coalesce(unit, ''),"
    " coalesce(units, 0), coalesce(money, 0), coalesce(overrun, 0), ctx->>'session',"
    " (ctx->>'rg')::integer, decode(bidx, 'hex'), ctx->>'twin', ctx->>'account',"
    " ctx->>'service', coalesce(alloc, '[]'), ctx"
    " FROM drain_in WHERE tenant_id = $1"
)
# Fresh entries (first delivery): a plain insert, no sort, no conflict arbitration; a record
# already stored makes it fail with unique_violation and the tenant's rows are redone with
# INSERT (replays: entries delivered before, and any batch whose fast insert failed).
INSERT_FRESH: Final = _SELECT
INSERT: Final = _SELECT + " ORDER BY record_key ON CONFLICT (tenant_id, record_key) DO NOTHING"
TENANT_LOCK: Final = "SELECT 1 FROM tenants WHERE tenant_id = $1 FOR KEY SHARE"

Entry = tuple[bytes, list[bytes] | None]  # (entry id, [field, value, ...]); None: deleted
Getter = Callable[[list[bytes]], tuple[bytes, ...]]
_decode: Final = json.JSONDecoder().decode
# a stripped member as the producers write it: key, string (no escapes) or null, the comma
# (and blank) before the next member
_MEMBER: Final = re.compile(rb'"(?:imsi|msisdn|subscription)": ?(?:"[^"\\]*"|null), ?')
_IMSI_VALUE: Final = re.compile(rb'"imsi": ?"([^"\\]*)"')
_KEYS: Final = tuple(f'"{name}"'.encode() for name in STRIPPED)
_dumps: Final = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
Hook = Callable[[str], Awaitable[None]]
_ESCAPES: Final = ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n"), (b"\r", b"\\r"))


class DrainError(Exception):
    """A batch cannot be stored (it stays pending)."""


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
    replays: int = 0  # fresh (batch, tenant) parts redone by the conflict-safe insert
    skipped: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class _Batch:
    """Entries of one or more streams, converted to COPY text lines."""

    lines: list[bytes] = field(default_factory=list)
    tenants: set[str] = field(default_factory=set)
    acks: dict[str, list[bytes]] = field(default_factory=dict)  # stream -> entry ids
    read: int = 0
    fresh: bool = False  # first delivery (XREADGROUP ">"): the plain insert is tried first


def _s(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw if isinstance(raw, str) else raw.decode()


def record_key(kind: str, rid: str, ts: str) -> str:
    if kind == "reclaim":
        return f"{kind}:{rid}:{ts}"
    return f"{kind}:{rid}"


def _escape(value: bytes) -> bytes:
    for raw, escaped in _ESCAPES:
        value = value.replace(raw, escaped)
    return value


def _raw(response: Any, **_: Any) -> Any:
    return response


def _raw_entries(reply: Any) -> list[tuple[str, list[Entry]]]:
    """(stream, entries) of an unparsed XREADGROUP reply (RESP2 list or RESP3 map); each
    entry's fields stay the flat list hiredis made (no dict per entry)."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    return [(_s(stream), entries) for stream, entries in items]


def _stream_entries(reply: Any) -> list[tuple[str, list[Entry]]]:
    """(stream, entries) of a reply parsed by redis-py (fields as dicts: XREADGROUP of own
    pending entries, XAUTOCLAIM), fields made flat lists again."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    return [(_s(stream), _flat(entries)) for stream, entries in items]


def _flat(entries: Any) -> list[Entry]:
    return [(eid, None if f is None else [x for kv in f.items() for x in kv]) for eid, f in entries]


def _layout(keys: tuple[bytes, ...]) -> tuple[Getter, bool]:
    """A getter of the ``FIELDS`` values, in that order, from a flat field list with these
    keys (the last of a repeated key wins, as in a dict), and whether a field is missing
    (read at index -1: the caller appends an empty value)."""
    pos = {k: 2 * i + 1 for i, k in enumerate(keys)}
    index = [pos.get(k, -1) for k in FIELDS]
    return itemgetter(*index), -1 in index


def _payer(flat: list[bytes]) -> bytes:
    for i in range(len(flat) - 2, -1, -2):
        if flat[i] == b"payer":
            return flat[i + 1]
    return b""


def strip_identifiers(raw: bytes) -> tuple[str | None, bytes]:
    """The IMSI of a record context (a JSON object) and the context without the
    ``STRIPPED`` members. Usually those members are cut out of the text as it is (what the
    producers write: each key once, a string without escapes or null, followed by another
    member); the server parses the rest as jsonb, so nothing is encoded again. Anything
    else (a key written twice or inside a string, a number, the last member) is decoded and
    encoded. Assumes, as every producer does, that the identifiers are top-level members: a
    nested member of the same name would be cut too."""
    present = 0
    for token in _KEYS:
        n = raw.count(token)
        if n > 1:
            return _strip_decoded(raw)
        present += n
    if not present:
        return None, raw
    out, cut = _MEMBER.subn(b"", raw)
    if cut != present:
        return _strip_decoded(raw)
    m = _IMSI_VALUE.search(raw)
    return (None if m is None else m[1].decode()), out


def _strip_decoded(raw: bytes) -> tuple[str | None, bytes]:
    body: dict[str, Any] = _decode(raw.decode())
    value = body.pop("imsi", None)
    for name in STRIPPED:
        body.pop(name, None)
    return (None if value is None else str(value)), _dumps(body).encode()


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
        writers: int = WRITERS,
        trim: bool = True,
    ) -> None:
        self.redis = redis
        self.db = db
        self.master = master
        self.consumer = consumer or f"{socket.gethostname()}-drain"
        self.batch = max(1, batch)
        self.claim_idle_ms = claim_idle_ms
        self.hook = hook
        self.writers = max(1, writers)
        self.trim = trim  # XDEL what was committed and acknowledged
        self.ciphers: dict[str, TenantCipher] = {}
        self.bidx_cache: dict[tuple[str, str], bytes] = {}
        self.layouts: dict[tuple[bytes, ...], tuple[Getter, bool]] = {}
        # Redis Cluster: the streams live in different slots, one key per XREADGROUP
        self.multi_key = not isinstance(redis, RedisCluster)
        # new entries are read through a client on the same pool that returns XREADGROUP's
        # reply unparsed: the field lists become dicts in C (dict(zip)), not pairs_to_dict
        self.reader: Any = None
        if isinstance(redis, Redis):
            self.reader = Redis(connection_pool=redis.connection_pool)
            self.reader.set_response_callback("XREADGROUP", _raw)

    async def _hook(self, point: str) -> None:
        if self.hook is not None:
            await self.hook(point)

    async def streams(self) -> list[str]:
        members: Any = await self.redis.smembers(PAYERS)
        tags = sorted(_s(t) for t in members)
        return [k.stream for k in await locate_all(self.redis, tags)]  # chained: root's slot

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
        streams = await self.streams()
        stats.streams = len(streams)
        for stream in streams:
            await self.ensure_group(stream)
        for stream in streams:
            await self._recover(stream, stats, progress)
        await self._drain_new(streams, stats, progress)
        stats.seconds = time.perf_counter() - started
        offline_metrics().drain_pass(stats.inserted, stats.duplicates)
        return stats

    async def _recover(
        self, stream: str, stats: DrainStats, progress: Callable[[int], None] | None
    ) -> None:
        # 1. our own pending entries (a crash of this consumer between commit and ack)
        last = "0"
        while True:
            reply: Any = await self.redis.xreadgroup(
                GROUP, self.consumer, {stream: last}, count=self.batch
            )
            got = _stream_entries(reply)
            entries = got[0][1] if got else []
            if not entries:
                break
            last = _s(entries[-1][0])
            await self._write(await self._convert([(stream, entries)]), stats, progress)
        # 2. stale entries of other (dead) consumers
        cursor = "0-0"
        while True:
            res: Any = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, self.claim_idle_ms, cursor, count=self.batch
            )
            cursor = _s(res[0])
            claimed = _flat(e for e in res[1] if e[1] is not None)
            if claimed:
                stats.claimed += len(claimed)
                await self._write(await self._convert([(stream, claimed)]), stats, progress)
            if cursor == "0-0":
                break

    async def _drain_new(
        self, streams: list[str], stats: DrainStats, progress: Callable[[int], None] | None
    ) -> None:
        """New entries, many streams per XREADGROUP; the next batch is read and converted
        while the previous one is in its transaction (acknowledged only after its commit)."""
        active = list(streams)
        writing: deque[asyncio.Task[None]] = deque()
        try:
            while True:
                batch = await self._read_new(active)
                while writing and (batch is None or len(writing) >= self.writers):
                    await writing.popleft()
                if batch is None:
                    break
                writing.append(asyncio.create_task(self._write(batch, stats, progress)))
        finally:
            if writing:  # a read or write failed: let the running transactions finish
                await asyncio.gather(*writing, return_exceptions=True)

    async def _read_new(self, active: list[str]) -> _Batch | None:
        """One XREADGROUP over (a share of) the active streams; a stream that returns fewer
        entries than asked is drained and leaves ``active``."""
        while active:
            count = max(MIN_COUNT, self.batch // len(active))
            width = max(1, self.batch // count) if self.multi_key else 1
            keys, rest = active[:width], active[width:]
            streams: dict[Any, Any] = dict.fromkeys(keys, ">")
            if self.reader is not None:
                reply: Any = await self.reader.xreadgroup(
                    GROUP, self.consumer, streams, count=count
                )
                got = [(s, e) for s, e in _raw_entries(reply) if e]
            else:
                reply = await self.redis.xreadgroup(GROUP, self.consumer, streams, count=count)
                got = [(s, e) for s, e in _stream_entries(reply) if e]
            full = {s for s, e in got if len(e) >= count}
            active[:] = rest + [s for s in keys if s in full]  # round robin
            if got:
                batch = await self._convert(got)
                batch.fresh = True
                return batch
        return None

    async def _cipher(self, tenant: str) -> TenantCipher:
        cipher = self.ciphers.get(tenant)
        if cipher is None:
            async with self.db.pool.acquire() as conn, conn.transaction():
                await enter_tenant(conn, tenant)
                cipher = await tenant_cipher(conn, tenant, self.master)
            self.ciphers[tenant] = cipher
        return cipher

    async def _convert(self, got: Sequence[tuple[str, Sequence[Entry]]]) -> _Batch:
        batch = _Batch()
        for stream, entries in got:
            ids = [eid for eid, _ in entries]
            batch.acks.setdefault(stream, []).extend(ids)
            batch.read += len(entries)
            live = [(eid, f) for eid, f in entries if f is not None]  # deleted: ack only
            if not live:
                continue
            tenant = _payer(live[0][1]).decode().split(":", 1)[0]
            batch.tenants.add(tenant)
            cipher = await self._cipher(tenant)
            self._lines(batch.lines, tenant, stream, live, cipher)
        return batch

    def _lines(
        self,
        out: list[bytes],
        tenant: str,
        stream: str,
        entries: Sequence[tuple[bytes, list[bytes]]],
        cipher: TenantCipher,
    ) -> None:
        """Append one COPY text line per entry. Fields are passed as bytes, picked from the
        flat field list by position (one layout per distinct field order); only the context
        is changed (the subscriber identifiers cut out, ``strip_identifiers``)."""
        tenant_b = tenant.encode()
        prefix = stream.encode() + b"/"
        cache = self.bidx_cache
        layouts = self.layouts
        append = out.append
        last: list[bytes] | None = None
        getter: Getter | None = None
        pad = False
        for eid, flat in entries:
            keys = flat[0::2]
            if keys != last:
                last = keys
                spec = layouts.get(tuple(keys))
                if spec is None:
                    spec = layouts[tuple(keys)] = _layout(tuple(keys))
                getter, pad = spec
            assert getter is not None
            kind, rid, payer, ts, unit, units, money, overrun, alloc, raw_ctx = getter(
                [*flat, b""] if pad else flat
            )
            if not ts:
                ts = b"0"
            key = kind + b":" + rid + b":" + ts if kind == b"reclaim" else kind + b":" + rid
            bidx = b""
            ctx = b""
            if raw_ctx:
                imsi, ctx = strip_identifiers(raw_ctx)
                if imsi:
                    ckey = (tenant, imsi)
                    hexed = cache.get(ckey)
                    if hexed is None:
                        hexed = cache[ckey] = cipher.bidx(imsi).hex().encode()
                    bidx = hexed
            fields = (
                tenant_b, key, prefix + eid, kind, payer, ts, unit, units, money, overrun, bidx,
                alloc, ctx,
            )  # fmt: skip
            line = b"\t".join(fields)
            if line.count(b"\t") != _TABS or b"\\" in line or b"\n" in line or b"\r" in line:
                line = b"\t".join(_escape(v) for v in fields)
            append(line)

    async def _insert(self, conn: Connection, tenant: str, fresh: bool, stats: DrainStats) -> int:
        """Insert the staged rows of ``tenant``; returns how many were new. A fresh batch
        tries the plain insert in a savepoint: a record already stored (a replayed script
        result, or the entries of a batch committed but never acknowledged) raises
        unique_violation, so does nothing, and the conflict-safe insert redoes the rows; a
        deadlock (plain inserts take keys in stream order) is redone the same way."""
        if fresh:
            try:
                async with conn.transaction():
                    result = await conn.execute(INSERT_FRESH, tenant)
                return int(result.rsplit(" ", 1)[1])
            except (UniqueViolationError, DeadlockDetectedError):
                stats.replays += 1
        for attempt in range(1, DEADLOCK_RETRIES + 1):
            try:  # sorted keys; a deadlock needs a plain insert on the other side: retry
                async with conn.transaction():
                    result = await conn.execute(INSERT, tenant)
                return int(result.rsplit(" ", 1)[1])
            except DeadlockDetectedError:
                if attempt == DEADLOCK_RETRIES:
                    raise
        raise AssertionError("unreachable")

    async def _ack(self, acks: dict[str, list[bytes]]) -> int:
        """XACK (and with ``trim`` XDEL) every stream's entries in one round trip; returns
        how many were pending. On a single Redis the commands are packed by hiredis
        (redis-py packs each of the 20,000 ids in Python) and sent on a connection of the
        pool."""
        per_stream = 2 if self.trim else 1
        if self.reader is None:
            pipe = self.redis.pipeline(transaction=False)
            for stream, ids in acks.items():
                pipe.xack(stream, GROUP, *ids)
                if self.trim:
                    pipe.xdel(stream, *ids)
            replies = await pipe.execute()
            return sum(int(n) for n in replies[::per_stream])
        group = GROUP.encode()
        # the stub types the argument as a 1-tuple; pack_command takes any tuple of args
        commands: list[bytes] = []
        for stream, ids in acks.items():
            key = stream.encode()
            commands.append(pack_command((b"XACK", key, group, *ids)))  # type: ignore[arg-type]
            if self.trim:
                commands.append(pack_command((b"XDEL", key, *ids)))  # type: ignore[arg-type]
        blob = b"".join(commands)
        pool = self.reader.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(blob)
            replies = [int(await conn.read_response()) for _ in commands]
            return sum(replies[::per_stream])
        except BaseException:
            await conn.disconnect()  # replies may be left unread
            raise
        finally:
            await pool.release(conn)

    async def _write(
        self, batch: _Batch, stats: DrainStats, progress: Callable[[int], None] | None
    ) -> None:
        """Insert the batch in one transaction; acknowledge its entries after the commit."""
        stats.read += batch.read
        inserted = 0
        if batch.lines:
            data = b"\n".join(batch.lines) + b"\n"
            began = time.perf_counter()
            async with self.db.pool.acquire() as conn, conn.transaction():
                tenants = sorted(batch.tenants)
                await enter_tenant(conn, tenants[0])
                await conn.execute(STAGING)
                await conn.copy_to_table(
                    "drain_in", source=io.BytesIO(data), columns=STAGED, format="text", null=""
                )
                for tenant in tenants:
                    if tenant != tenants[0]:
                        await conn.execute(
                            "SELECT set_config($1, $2, true)", TENANT_SETTING, tenant
                        )
                    # the tenant check the dropped foreign key made per row (migration 0004)
                    if await conn.fetchval(TENANT_LOCK, tenant) is None:
                        raise DrainError(f"unknown tenant {tenant!r}: batch not stored")
                    inserted += await self._insert(conn, tenant, batch.fresh, stats)
                await self._hook("before_commit")
            stats.db_seconds += time.perf_counter() - began
            await self._hook("after_commit")
        stats.inserted += inserted
        stats.duplicates += len(batch.lines) - inserted
        acked = await self._ack(batch.acks)
        stats.acked += acked  # not "+= await ...": the left side would be read before it
        await self._hook("after_ack")
        if progress is not None:
            progress(batch.read)
