"""The usage export of one tenant and period, as CSV or NDJSON, streamed. The HTTP API (``GET
/v1/usage/export``) and ``ocs usage export`` write the same bytes.

One row per usage record, counted once, read as :mod:`ocs.offline.usage_reader` reads (Redis
first, then one PostgreSQL snapshot that also tells which of the Redis records are stored
already). :func:`open_export` reads the records not drained yet (so a backlog is refused
before a byte is sent); :meth:`Export.batches` then streams the stored rows through a
server-side cursor, in (time, key) order, in batches of :data:`BATCH` rows, followed by the
open records not stored meanwhile. PostgreSQL computes the columns (time text, first-level
currency and amount); Python only decrypts the IMSI (a bounded cache) and encodes. Memory
holds one batch, the open records and the cache, never the stored rows.

Times are UTC (ISO 8601 with milliseconds); money is in minor units of ``currency``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from ocs.offline.crypto import TenantCipher, stored_cipher
from ocs.offline.usage_reader import (
    USAGE,
    Record,
    Subject,
    Totals,
    UsageReader,
    local_start,
    ms,
    snapshot,
)

Format = Literal["csv", "ndjson"]
FORMATS: Final = ("csv", "ndjson")
MEDIA_TYPES: Final = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}
COLUMNS: Final = (
    "record_key",
    "time",
    "kind",
    "payer",
    "imsi",
    "twin",
    "account",
    "service",
    "rating_group",
    "session",
    "unit",
    "units",
    "charged",
    "overrun",
    "currency",
    "rated",
    "source",
)
KEY: Final = COLUMNS.index("record_key")
TIME: Final = COLUMNS.index("time")
IMSI: Final = COLUMNS.index("imsi")
UNIT: Final = COLUMNS.index("unit")
CURRENCY: Final = COLUMNS.index("currency")
UNITS, CHARGED, OVERRUN, RATED = (
    COLUMNS.index(c) for c in ("units", "charged", "overrun", "rated")
)
BATCH: Final = 5_000  # stored rows per fetch of the cursor (and per encoded chunk)
IMSI_CACHE: Final = 100_000  # decrypted IMSIs kept (bounded: constant memory)
MAX_DAYS: Final = 366  # the longest period of one export
# the columns of COLUMNS but imsi (its ciphertext instead) and source, computed by PostgreSQL
_SELECT: Final = (
    "SELECT u.record_key,"
    " to_char(u.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"+00:00\"'),"
    " u.kind, u.payer, s.imsi_enc, u.twin, u.account_id, u.service, u.rating_group,"
    " u.session_id, u.unit, u.units, u.money, u.overrun,"
    " coalesce(u.ctx->'levels'->0->>'currency', ''),"
    " coalesce((u.ctx->'levels'->0->>'amount')::bigint, 0)"
    " FROM usage_records u LEFT JOIN subscriptions s ON s.tenant_id = u.tenant_id"
    " AND s.imsi_bidx = u.imsi_bidx AND s.twin = u.twin"
)
_dumps: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

Row = list[Any]


class ExportError(Exception):
    """The export cannot be made as asked (the message names the option and the reason)."""


@dataclass(slots=True)
class ExportCounts:
    stored: int = 0
    open: int = 0
    totals: dict[tuple[str, str], Totals] = field(default_factory=dict)  # (unit, currency)

    def add(self, rows: list[Row]) -> None:
        totals = self.totals
        for r in rows:
            key = (r[UNIT], r[CURRENCY])
            t = totals.get(key)
            if t is None:
                t = totals[key] = Totals()
            t.add(1, r[UNITS], r[CHARGED], r[OVERRUN], r[RATED])


def check_period(start: date | None, end: date | None, today: date) -> tuple[date, date]:
    """``[from, to)`` of an export: default this month up to today included."""
    start = start or today.replace(day=1)
    end = end or max(today, start) + timedelta(days=1)
    if end <= start:
        raise ExportError(f"--to {end} is not after --from {start}")
    if (end - start).days > MAX_DAYS:
        raise ExportError(f"--from {start} --to {end} is longer than {MAX_DAYS} days")
    return start, end


def open_row(r: Record) -> Row:
    ctx = r.ctx
    return [
        r.key,
        datetime.fromtimestamp(r.ts / 1000, UTC).isoformat(timespec="milliseconds"),
        r.kind,
        r.payer,
        r.imsi,
        ctx.get("twin"),
        ctx.get("account"),
        ctx.get("service"),
        ctx.get("rg"),
        ctx.get("session"),
        r.unit,
        r.units,
        r.money,
        r.overrun,
        r.currency,
        r.rated,
        "open",
    ]


async def open_export(
    reader: UsageReader, subject: Subject, tz: ZoneInfo, start: date, end: date
) -> Export:
    """The export of local days ``[start, end)``: the open records are read now."""
    lo, hi = local_start(start, tz), local_start(end, tz)
    opened = await reader.open_list(subject, USAGE, ms(lo), ms(hi), open_row)
    opened.sort(key=lambda row: (row[TIME], row[KEY]))
    await reader.between()
    return Export(reader, subject, lo, hi, opened)


@dataclass(slots=True)
class Export:
    """One export: the open records read, the stored ones still to stream."""

    reader: UsageReader
    subject: Subject
    lo: datetime
    hi: datetime
    opened: list[Row]  # the open records as rows

    async def batches(self, counts: ExportCounts) -> AsyncIterator[list[Row]]:
        """Rows in :data:`COLUMNS` order, each record once; ``counts`` filled as they go."""
        subject, reader = self.subject, self.reader
        async with snapshot(reader.db, subject.tenant) as conn:
            keys = [row[KEY] for row in self.opened]
            stored = await reader.stored_keys(conn, subject.tenant, keys)
            cipher = await stored_cipher(conn, subject.tenant, reader.master)
            args: list[Any] = [subject.tenant, list(USAGE), self.lo, self.hi]
            where = await reader.where(conn, subject, args)
            if where is not None:
                cursor = await conn.cursor(
                    f"{_SELECT} WHERE u.tenant_id = $1 AND u.kind = ANY($2::text[])"
                    f" AND u.ts >= $3 AND u.ts < $4 AND {where} ORDER BY u.ts, u.record_key",
                    *args,
                )
                imsis: dict[bytes, str] = {}
                while fetched := await cursor.fetch(BATCH):
                    rows = [_stored_row(row, cipher, imsis) for row in fetched]
                    counts.stored += len(rows)
                    counts.add(rows)
                    yield rows
        rest = [row for row in self.opened if row[KEY] not in stored]
        for i in range(0, len(rest), BATCH):
            rows = rest[i : i + BATCH]
            counts.open += len(rows)
            counts.add(rows)
            yield rows


def _stored_row(row: Any, cipher: TenantCipher | None, cache: dict[bytes, str]) -> Row:
    out = list(row)
    blob = out[IMSI]
    if blob is not None and cipher is not None:
        imsi = cache.get(blob)
        if imsi is None:
            if len(cache) >= IMSI_CACHE:
                cache.clear()
            imsi = cache[blob] = cipher.decrypt(blob)
        out[IMSI] = imsi
    out.append("stored")
    return out


async def encoded(batches: AsyncIterator[list[Row]], fmt: Format) -> AsyncIterator[bytes]:
    """The export's bytes, one chunk per batch (CSV: the header first)."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        yield buffer.getvalue().encode()
        async for rows in batches:
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(rows)  # None is written as an empty field
            yield buffer.getvalue().encode()
        return
    async for rows in batches:
        yield "".join(_dumps(dict(zip(COLUMNS, r, strict=True))) + "\n" for r in rows).encode()
