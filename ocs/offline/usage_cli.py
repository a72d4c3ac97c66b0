"""``ocs usage export``: the usage export of one tenant and period (the bytes of ``GET
/v1/usage/export``), streamed to a file or stdout; the counts and totals go to stderr."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from datetime import date, datetime
from typing import IO, Any
from zoneinfo import ZoneInfo

from ocs.errors import CommandError, UsageError
from ocs.offline.crypto import master_key
from ocs.offline.db import connect
from ocs.offline.usage_export import (
    FORMATS,
    ExportCounts,
    ExportError,
    Format,
    check_period,
    open_export,
)
from ocs.offline.usage_reader import OpenBacklog, Subject, UsageReader, tenant_streams
from ocs.provisioning.keys import state_key
from ocs.redis_client import open_redis


def main_usage_export(
    settings: Any,
    *,
    tenant: str,
    start: date | None,
    end: date | None,
    fmt: str,
    out: str | None,
) -> int:
    if fmt not in FORMATS:
        raise UsageError(f"usage export: --format: {fmt!r} is not csv or ndjson")

    async def go() -> int:
        handle = await open_redis(settings, timeout=30.0)
        try:
            raw: Any = await handle.client.get(state_key(tenant))
            if raw is None:
                raise CommandError(f"usage export: --tenant: no catalogue of tenant {tenant!r}")
            zone = (json.loads(raw).get("tenant") or {}).get("time_zone") or "UTC"
            tz = ZoneInfo(zone)
            try:
                first, last = check_period(start, end, datetime.now(tz).date())
            except ExportError as exc:
                raise UsageError(f"usage export: {exc}") from None
            db = await connect(settings)
            try:
                reader = UsageReader(handle.client, db, master_key(settings))
                scope = Subject(tenant, await tenant_streams(handle.client, tenant))
                try:
                    export = await open_export(reader, scope, tz, first, last)
                except OpenBacklog as exc:
                    raise CommandError(f"usage export: {exc}") from None
                counts = ExportCounts()
                with contextlib.ExitStack() as stack:
                    sink: IO[bytes] = sys.stdout.buffer
                    if out is not None:
                        sink = stack.enter_context(await asyncio.to_thread(open, out, "wb"))
                    async for chunk in export.chunks(fmt_, counts):
                        await asyncio.to_thread(sink.write, chunk)
                    sink.flush()
            finally:
                await db.close()
        finally:
            await handle.close()
        rows = counts.stored + counts.open
        print(
            f"ocs: exported {rows} usage records of {tenant} for {first} to {last} ({zone}):"
            f" {counts.stored} stored, {counts.open} not drained yet",
            file=sys.stderr,
        )
        for (unit, currency), t in sorted(counts.totals.items()):
            print(
                f"ocs:   {unit or '-'} {currency or '-'}: {t.records} records, {t.units} units,"
                f" charged {t.money}, rated {t.rated}",
                file=sys.stderr,
            )
        return 0

    fmt_: Format = "csv" if fmt == "csv" else "ndjson"
    return asyncio.run(go())
