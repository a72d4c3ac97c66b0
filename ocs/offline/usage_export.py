"""The usage export of one tenant and period, as CSV or NDJSON, streamed. The HTTP API (``GET
/v1/usage/export``) and ``ocs usage export`` write the same bytes.

One row per rated record of kind ``usage`` (what a SIM used, level 0) or ``level`` (what an
upper level of a reseller chain paid for the same usage), counted once, read as
:mod:`ocs.offline.usage_reader` reads (Redis first, then one PostgreSQL snapshot that also
tells which of the Redis records are stored already). :func:`open_export` reads the records
not drained yet (so a backlog is refused before a byte is sent); :meth:`Export.chunks` then
streams the stored rows through a server-side cursor, in (time, key) order, in batches of
:data:`BATCH` rows, followed by the open records not stored meanwhile. PostgreSQL computes
the columns (and for NDJSON the line's text around the IMSI); Python decrypts the IMSI (a
bounded cache) and writes CSV. Memory holds one batch, the open records and the cache, never
the stored rows.

Times are UTC (ISO 8601 with milliseconds); money is in minor units of ``currency``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from ocs.offline.crypto import TenantCipher, stored_cipher
from ocs.offline.usage_reader import (
    EXPORT_TIMEOUT_MS,
    PAID,
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
# Each column but ``source`` as PostgreSQL computes it (``imsi``: its ciphertext, decrypted here).
_EXPR: Final = {
    "record_key": "u.record_key",
    "time": "to_char(u.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"+00:00\"')",
    "kind": "u.kind",
    "payer": "u.payer",
    "imsi": "s.imsi_enc",
    "twin": "u.twin",
    "account": "u.account_id",
    "service": "u.service",
    "rating_group": "u.rating_group",
    "session": "u.session_id",
    "unit": "u.unit",
    "units": "u.units",
    "charged": "u.money",
    "overrun": "u.overrun",
    "currency": "coalesce(u.ctx->'levels'->0->>'currency', '')",
    "rated": "coalesce((u.ctx->'levels'->0->>'amount')::bigint, 0)",
}
_MEASURES: Final = ("unit", "currency", "units", "charged", "overrun", "rated", "imsi")
_FROM: Final = (
    " FROM usage_records u LEFT JOIN subscriptions s ON s.tenant_id = u.tenant_id"
    " AND s.imsi_bidx = u.imsi_bidx AND s.twin = u.twin"
)


def _members(columns: tuple[str, ...]) -> str:
    """SQL text of the NDJSON members of ``columns`` (``"name":value``, comma separated)."""
    return " || ',' || ".join(
        f"'\"{c}\":' || coalesce(to_json({_EXPR[c]})::text, 'null')" for c in columns
    )


# CSV: the columns themselves. NDJSON: PostgreSQL writes each line's text around the IMSI
# (the members before it, ending in '"imsi":', and the ones after it); Python puts the
# decrypted IMSI between. Both also select the measures the counts sum.
_SQL: Final = {
    "csv": "SELECT " + ", ".join(_EXPR[c] for c in COLUMNS[:-1]),
    "ndjson": "SELECT "
    + ", ".join(_EXPR[c] for c in _MEASURES)
    + ", '{' || "
    + _members(COLUMNS[: COLUMNS.index("imsi")])
    + " || ',\"imsi\":', ',' || "
    + _members(COLUMNS[COLUMNS.index("imsi") + 1 : -1])
    + ' || \',"source":"stored"}\'',
}
_dumps: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

Row = list[Any]


class ExportError(Exception):
    """The export cannot be made as asked (the message names the option and the reason)."""


@dataclass(slots=True)
class ExportCounts:
    stored: int = 0
    open: int = 0
    totals: dict[tuple[str, str], Totals] = field(default_factory=dict)  # (unit, currency)

    def add(self, measures: Iterable[Sequence[Any]]) -> None:
        """Sum (unit, currency, units, charged, overrun, rated) tuples."""
        totals = self.totals
        for unit, currency, units, charged, overrun, rated in measures:
            t = totals.get((unit, currency))
            if t is None:
                t = totals[unit, currency] = Totals()
            t.add(1, units, charged, overrun, rated)


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
    opened = await reader.open_list(subject, PAID, ms(lo), ms(hi), open_row)
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

    async def chunks(self, fmt: Format, counts: ExportCounts) -> AsyncIterator[bytes]:
        """The export's bytes, a chunk per :data:`BATCH` rows (CSV: the header first), each
        record once; ``counts`` filled as they go."""
        encode = _csv_encoder() if fmt == "csv" else _ndjson_lines
        if fmt == "csv":
            yield encode([list(COLUMNS)])
        subject, reader = self.subject, self.reader
        async with snapshot(reader.db, subject.tenant, EXPORT_TIMEOUT_MS) as conn:
            keys = [row[KEY] for row in self.opened]
            stored = await reader.stored_keys(conn, subject.tenant, keys)
            cipher = await stored_cipher(conn, subject.tenant, reader.master)
            args: list[Any] = [subject.tenant, list(PAID), self.lo, self.hi]
            where = await reader.where(conn, subject, args)
            if where is not None:
                cursor = await conn.cursor(
                    f"{_SQL[fmt]}{_FROM} WHERE u.tenant_id = $1 AND u.kind = ANY($2::text[])"
                    f" AND u.ts >= $3 AND u.ts < $4 AND {where} ORDER BY u.ts, u.record_key",
                    *args,
                )
                imsis = _Imsis(cipher)
                while fetched := await cursor.fetch(BATCH):
                    counts.stored += len(fetched)
                    if fmt == "csv":
                        rows = [_csv_row(row, imsis) for row in fetched]
                        counts.add(_measures(rows))
                        yield encode(rows)
                    else:
                        counts.add(row[:6] for row in fetched)
                        yield "".join(
                            f"{row[7]}{imsis.json(row[6])}{row[8]}\n" for row in fetched
                        ).encode()
        rest = [row for row in self.opened if row[KEY] not in stored]
        for i in range(0, len(rest), BATCH):
            rows = rest[i : i + BATCH]
            counts.open += len(rows)
            counts.add(_measures(rows))
            yield encode(rows)


def _measures(rows: list[Row]) -> Iterable[Sequence[Any]]:
    return ((r[UNIT], r[CURRENCY], r[UNITS], r[CHARGED], r[OVERRUN], r[RATED]) for r in rows)


class _Imsis:
    """Decrypted IMSIs by ciphertext, at most :data:`IMSI_CACHE` (then forgotten at once)."""

    def __init__(self, cipher: TenantCipher | None) -> None:
        self.cipher = cipher
        self.cache: dict[bytes, str] = {}

    def get(self, blob: bytes | None) -> str | None:
        if blob is None or self.cipher is None:
            return None
        imsi = self.cache.get(blob)
        if imsi is None:
            if len(self.cache) >= IMSI_CACHE:
                self.cache.clear()
            imsi = self.cache[blob] = self.cipher.decrypt(blob)
        return imsi

    def json(self, blob: bytes | None) -> str:
        imsi = self.get(blob)
        return "null" if imsi is None else _dumps(imsi)


def _csv_row(row: Any, imsis: _Imsis) -> Row:
    out = list(row)
    out[IMSI] = imsis.get(out[IMSI])
    out.append("stored")
    return out


def _csv_encoder() -> Callable[[list[Row]], bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def encode(rows: list[Row]) -> bytes:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(rows)  # None is written as an empty field
        return buffer.getvalue().encode()

    return encode


def _ndjson_lines(rows: list[Row]) -> bytes:
    return "".join(_dumps(dict(zip(COLUMNS, r, strict=True))) + "\n" for r in rows).encode()
