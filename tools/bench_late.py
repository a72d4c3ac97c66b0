"""Late usage at scale (issue 6): after ``tools/bench_billrun.py`` issued the March run of the
``tools/gen_cdrs.py`` tenant, store copies of ``--late`` March records (new keys, so they are
numbered after the March run's watermark), preview March again (every March record, as one
invoice would have charged them), run April (2025-04-01 .. 05-01, issued), and check that the
March invoices plus April's late lines equal the March preview. Prints one JSON line.

    .venv/bin/python tools/gen_cdrs.py && .venv/bin/python tools/bench_billrun.py --skip-drain
    .venv/bin/python tools/bench_late.py [--late 10000]

Benchmark database only: the late copies (keys ``late:...``) and the April run's invoices are
deleted first (immutability triggers bypassed with ``session_replication_role``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import time
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

import asyncpg
from bench_billrun import DEFAULT_REDIS, cpu_delta, server_cpu  # tools/, next to this file
from redis.asyncio import Redis

from ocs.offline.billrun import bill_run
from ocs.offline.crypto import tenant_cipher
from ocs.offline.db import connect, enter_tenant
from ocs.rating.loader import load_catalogue

TENANT: Final = "bench"
DEFAULT_URL: Final = "postgresql://postgres@127.0.0.1:5432/ocs_bench"
DEFAULT_FOLDER: Final = Path("/tmp/ocs-bench-catalogue")
MARCH_RUN: Final = date(2025, 4, 1)
APRIL_RUN: Final = date(2025, 5, 1)
MARCH_START: Final = datetime(2025, 3, 1, tzinfo=UTC)
APRIL_START: Final = datetime(2025, 4, 1, tzinfo=UTC)
MASTER: Final = hashlib.sha256(b"ocs offline benchmark master key").digest()
COLUMNS: Final = (
    "tenant_id, record_key, stream_id, kind, payer, ts, unit, units, money, overrun,"
    " session_id, rating_group, imsi_bidx, twin, account_id, service, alloc, ctx, source"
)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def prepare(url: str, late: int) -> None:
    """Delete a previous April run and late copies, then store ``late`` March copies."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            runs = "SELECT run_id FROM bill_runs WHERE tenant_id = $1 AND period_start >= $2"
            await conn.execute(
                "DELETE FROM invoice_lines l USING invoices i WHERE l.tenant_id = $1"
                " AND i.tenant_id = l.tenant_id AND i.number = l.number"
                f" AND i.run_id IN ({runs})",
                TENANT,
                APRIL_START,
            )
            for table in ("invoices", "bill_run_accounts"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE tenant_id = $1 AND run_id IN ({runs})",
                    TENANT,
                    APRIL_START,
                )
            await conn.execute(
                "DELETE FROM bill_runs WHERE tenant_id = $1 AND period_start >= $2",
                TENANT,
                APRIL_START,
            )
            await conn.execute(
                "UPDATE invoice_counters SET last_number ="
                " (SELECT coalesce(max(number), 0) FROM invoices WHERE tenant_id = $1)"
                " WHERE tenant_id = $1",
                TENANT,
            )
        await conn.execute(
            "DELETE FROM usage_records WHERE tenant_id = $1 AND record_key LIKE 'late:%'", TENANT
        )
        await conn.execute(
            f"INSERT INTO usage_records ({COLUMNS}) SELECT tenant_id, 'late:' || record_key,"
            " stream_id, kind, payer, ts, unit, units, money, overrun, session_id,"
            " rating_group, imsi_bidx, twin, account_id, service, alloc, ctx, source"
            " FROM usage_records TABLESAMPLE SYSTEM (1) REPEATABLE (6)"
            " WHERE tenant_id = $1 AND kind = 'usage' AND ts >= $2 AND ts < $3 LIMIT $4",
            TENANT,
            MARCH_START,
            APRIL_START,
            late,
        )
    finally:
        await conn.close()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    await prepare(args.url, args.late)
    catalogue = load_catalogue(args.catalogue)
    db = await connect(SimpleNamespace(database_url=args.url, data_dir=Path("/tmp")), max_size=4)
    redis = Redis.from_url(args.redis_url)  # server_cpu samples its CPU too (not reported)
    try:
        async with db.pool.acquire() as conn, conn.transaction():
            await enter_tenant(conn, TENANT)
            cipher = await tenant_cipher(conn, TENANT, MASTER)
            march_net = await conn.fetchval(
                "SELECT coalesce(sum(net), 0) FROM invoices WHERE period_start = $1",
                MARCH_START,
            )
        out: dict[str, Any] = {"bench": "late", "late_records": args.late, "nproc": os.cpu_count()}
        load0, c0, t0 = os.getloadavg()[0], cpu(), time.perf_counter()
        s0 = await server_cpu(args.url, redis)
        preview = await bill_run(db, catalogue, cipher, bill_day=1, on=MARCH_RUN, preview=True)
        s1 = await server_cpu(args.url, redis)
        out["march_preview_seconds"] = round(time.perf_counter() - t0, 2)
        out["march_preview_cpu_s"] = round(cpu() - c0, 2)  # this process
        out["march_preview_pg_cpu_s"] = round(cpu_delta(s0, s1, "pg:"), 2)  # its backends
        c0, t0 = cpu(), time.perf_counter()
        april = await bill_run(db, catalogue, cipher, bill_day=1, on=APRIL_RUN)
        s2 = await server_cpu(args.url, redis)
        out["april_run_seconds"] = round(time.perf_counter() - t0, 2)
        out["april_run_cpu_s"] = round(cpu() - c0, 2)
        out["april_run_pg_cpu_s"] = round(cpu_delta(s1, s2, "pg:"), 2)
        out["april_accounts"] = april.accounts
        out["load_avg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        async with db.tenant(TENANT) as tx:
            row = await tx.fetchrow(
                "SELECT count(*) AS n, coalesce(sum(l.net), 0) AS net FROM invoice_lines l"
                " JOIN invoices i USING (tenant_id, number) WHERE i.run_id = $1"
                " AND l.description LIKE 'Late %'",
                april.run_id,
            )
        assert row is not None  # an aggregate answers one row
        preview_net = sum(i.net for i in preview.invoices)
        out |= {
            "late_lines": row["n"],
            "late_net_eur": int(row["net"]),
            "march_issued_net_eur": int(march_net),
            "march_preview_net_eur": preview_net,
            "march_plus_late_equals_preview": int(march_net) + int(row["net"]) == preview_net,
        }
        return out
    finally:
        await redis.aclose()
        await db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--catalogue", type=Path, default=DEFAULT_FOLDER)
    ap.add_argument("--redis-url", default=DEFAULT_REDIS)
    ap.add_argument("--late", type=int, default=10_000, help="March records stored late")
    print(json.dumps(asyncio.run(bench(ap.parse_args()))))


if __name__ == "__main__":
    main()
