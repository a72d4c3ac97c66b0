"""Benchmark of the usage reads (issue 16, docs/benchmarks-usage.md): the export's rows/s and a
SIM's usage by day for a month, on N drained records (default 1,000,000) of one tenant
spread over 10,000 SIMs and 30 days, plus undrained records in the payers' streams.

Each measurement runs side by side with its anchor in the same run:

* export (``Export.chunks`` as CSV and NDJSON, written to /dev/null) against
  PostgreSQL's own ``COPY (SELECT the same columns) TO STDOUT`` of the same rows;
* a SIM's month by day (``UsageReader.by_period``: Redis stream scan + snapshot + grouped
  indexed query) against the bare grouped query on the same index.

Usage: python tools/bench_usage.py --database-url URL --redis-url URL [--records N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from ocs.config import Settings
from ocs.offline.crypto import tenant_cipher
from ocs.offline.db import Database, connect, enter_tenant
from ocs.offline.usage_export import ExportCounts, open_export
from ocs.offline.usage_reader import Subject, UsageReader, local_start
from ocs.redis_client import client_for_url

SIMS = 10_000
DAYS = 30
TZ = ZoneInfo("Europe/Berlin")
START = date(2026, 11, 1)
OPEN_PER_STREAM = 2_000  # undrained records in each of the 4 payer streams


async def fill(db: Database, tenant: str, master: bytes, records: int) -> list[str]:
    imsis = [f"26209{n:010d}" for n in range(SIMS)]
    async with db.pool.acquire() as conn, conn.transaction():
        await enter_tenant(conn, tenant)
        await conn.execute("INSERT INTO tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING",
                           tenant)  # fmt: skip
        cipher = await tenant_cipher(conn, tenant, master)
        bidx = [cipher.bidx(i) for i in imsis]
        lo = local_start(START, TZ)
        ctx = json.dumps({"session": "s", "rg": 10, "twin": "data", "account": "acct",
                          "service": "data", "levels": [{"level": 0, "currency": "EUR",
                                                          "amount": 3}]})  # fmt: skip
        await conn.execute(
            "INSERT INTO usage_records (tenant_id, record_key, stream_id, kind, payer, ts, unit,"
            " units, money, imsi_bidx, twin, account_id, service, alloc, ctx)"
            " SELECT $1, 'usage:bench:' || g, 'ocs:{x}:cdr/' || g || '-0', 'usage',"
            " $1 || ':prepaid_pool:pool-' || (g % 4), $2::timestamptz + (g % $3)"
            " * ($4::bigint * interval '1 millisecond') / $3, 'bytes', 1000 + g % 1000, g % 7,"
            " ($5::bytea[])[1 + g % $6], 'data', 'acct', 'data', '[]', $7::jsonb"
            " FROM generate_series(1, $3) AS g",
            tenant, lo, records, DAYS * 86_400_000, bidx, SIMS, ctx,
        )  # fmt: skip
    async with db.pool.acquire() as conn:
        await conn.execute("ANALYZE usage_records")
    return imsis


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    tenant = f"bench{uuid.uuid4().hex[:8]}"
    master = os.urandom(32)
    db = await connect(Settings(database_url=args.database_url), max_size=4)
    redis = client_for_url(args.redis_url, timeout=30)
    tags = [f"{tenant}:prepaid_pool:pool-{n}" for n in range(4)]
    try:
        began = time.perf_counter()
        imsis = await fill(db, tenant, master, args.records)
        print(f"filled {args.records:,} stored records in {time.perf_counter() - began:.1f} s")
        pipe = redis.pipeline(transaction=False)
        now = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
        for n, tag in enumerate(tags):
            for i in range(OPEN_PER_STREAM):
                ctx = json.dumps({"imsi": imsis[(i * 4 + n) % SIMS], "levels": [
                    {"currency": "EUR", "amount": 3}]})  # fmt: skip
                pipe.xadd(f"ocs:{{{tag}}}:cdr", {"kind": "usage", "id": f"open:{n}:{i}",
                          "payer": tag, "ts": now + i, "unit": "bytes", "units": 500,
                          "money": 1, "alloc": "[]", "ctx": ctx})  # fmt: skip
        await pipe.execute()
        reader = UsageReader(redis, db, master)
        end = date(2026, 12, 1)
        everything = Subject(tenant, tuple(tags))
        for fmt in ("csv", "ndjson"):
            counts = ExportCounts()
            began = time.perf_counter()
            export = await open_export(reader, everything, TZ, START, end)
            size = 0
            with open(os.devnull, "wb") as sink:  # noqa: ASYNC230 (/dev/null does not block)
                async for chunk in export.chunks(fmt, counts):  # type: ignore[arg-type]
                    size += len(chunk)
                    sink.write(chunk)
            took = time.perf_counter() - began
            rows = counts.stored + counts.open
            # anchor: PostgreSQL alone, COPY of the same rows to the client
            began = time.perf_counter()
            async with db.pool.acquire() as conn, conn.transaction():
                await enter_tenant(conn, tenant)
                with open(os.devnull, "wb") as sink:  # noqa: ASYNC230  # noqa: ASYNC230 (/dev/null does not block)
                    await conn.copy_from_query(
                        "SELECT record_key, ts, kind, payer, unit, units, money, overrun, ctx"
                        " FROM usage_records WHERE tenant_id = $1 AND ts >= $2 AND ts < $3"
                        " ORDER BY ts, record_key",
                        tenant, local_start(START, TZ), local_start(end, TZ), output=sink,
                        format="csv",
                    )  # fmt: skip
            anchor = time.perf_counter() - began
            print(f"export {fmt}: {rows:,} rows ({size / 1e6:.0f} MB) in {took:.2f} s ="
                  f" {rows / took:,.0f} rows/s; anchor COPY TO STDOUT {anchor:.2f} s ="
                  f" {rows / anchor:,.0f} rows/s; ratio {took / anchor:.1f}x")  # fmt: skip
        # a SIM's month by day
        lat: list[float] = []
        bare: list[float] = []
        for q in range(args.queries):
            imsi = imsis[(q * 37) % SIMS]
            subject = Subject(tenant, (tags[(q * 37) % 4],), imsi=imsi)
            began = time.perf_counter()
            rows_ = await reader.by_period(subject, "day", TZ, START, end)
            lat.append(time.perf_counter() - began)
            assert rows_, "no usage found"
            began = time.perf_counter()
            async with db.pool.acquire() as conn, conn.transaction():
                await enter_tenant(conn, tenant)
                cipher = await tenant_cipher(conn, tenant, master)
                await conn.fetch(
                    "SELECT (date_trunc('day', ts AT TIME ZONE $4))::date, unit, count(*),"
                    " sum(units), sum(money) FROM usage_records WHERE tenant_id = $1"
                    " AND imsi_bidx = $2 AND ts >= $3 AND ts < $5 AND kind = 'usage'"
                    " GROUP BY 1, 2",
                    tenant, cipher.bidx(imsi), local_start(START, TZ), TZ.key,
                    local_start(end, TZ),
                )  # fmt: skip
            bare.append(time.perf_counter() - began)

        def pct(xs: list[float], p: float) -> float:
            return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] * 1000

        print(f"SIM month by day ({args.records // SIMS} records/SIM, {OPEN_PER_STREAM:,}"
              f" undrained in its payer's stream): p50 {pct(lat, 0.5):.1f} ms,"
              f" p99 {pct(lat, 0.99):.1f} ms; anchor bare grouped query p50"
              f" {pct(bare, 0.5):.1f} ms, p99 {pct(bare, 0.99):.1f} ms; ratio p50"
              f" {statistics.median(lat) / statistics.median(bare):.1f}x")  # fmt: skip
    finally:
        async with db.pool.acquire() as conn:
            for table in ("usage_records", "tenant_keys", "tenants"):
                await conn.execute(f"DELETE FROM {table} WHERE tenant_id = $1", tenant)
        for tag in tags:
            await redis.delete(f"ocs:{{{tag}}}:cdr")
        await redis.aclose()
        await db.close()


if __name__ == "__main__":
    asyncio.run(main())
