"""The usage export of one tenant and period, as CSV or NDJSON, streamed: chunks of encoded
rows are produced as the records come from :meth:`UsageReader.export` (stored rows through
a server-side cursor), so memory does not grow with the number of rows. The HTTP API
(``GET /v1/usage/export``) and ``ocs usage export`` write the same bytes.

One row per rated usage record, counted once (docs/usage-api.md, "Export"). Times are UTC
(ISO 8601 with milliseconds); money is in minor units of ``currency``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Final, Literal

from ocs.offline.usage_reader import Record

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
CHUNK_ROWS: Final = 1_000  # rows per chunk handed to the writer
_dumps: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def row_of(r: Record) -> dict[str, Any]:
    ctx = r.ctx
    return {
        "record_key": r.key,
        "time": datetime.fromtimestamp(r.ts / 1000, UTC).isoformat(timespec="milliseconds"),
        "kind": r.kind,
        "payer": r.payer,
        "imsi": r.imsi,
        "twin": ctx.get("twin"),
        "account": ctx.get("account"),
        "service": ctx.get("service"),
        "rating_group": ctx.get("rg"),
        "session": ctx.get("session"),
        "unit": r.unit,
        "units": r.units,
        "charged": r.money,
        "overrun": r.overrun,
        "currency": r.currency,
        "rated": r.rated,
        "source": "stored" if r.stored else "open",
    }


async def encoded(records: AsyncIterator[Record], fmt: Format) -> AsyncIterator[bytes]:
    """The export's bytes, a chunk per :data:`CHUNK_ROWS` rows (CSV: header first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(COLUMNS)
    n = 0
    async for record in records:
        row = row_of(record)
        if writer is not None:
            writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
        else:
            buffer.write(_dumps(row))
            buffer.write("\n")
        n += 1
        if n % CHUNK_ROWS == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    tail = buffer.getvalue()
    if tail or n == 0:
        yield tail.encode()
