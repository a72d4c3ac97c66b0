"""Offline billing benchmark: (a) drain throughput, Redis streams -> PostgreSQL through the
shipped exactly-once ``Drainer``; (b) a full bill run of cycle 1 over the tenant written by
``tools/gen_cdrs.py`` (100,000 subscriptions, 10,000,000 usage records by default).

Prints one JSON line. Targets (issue 6): bill run <= 120 s, drain >= 50,000 records/s.

    .venv/bin/python tools/gen_cdrs.py
    .venv/bin/python tools/bench_billrun.py            # drain, then bill run
    .venv/bin/python tools/bench_billrun.py --skip-drain --preview
    .venv/bin/python tools/bench_billrun.py --skip-billrun --rewind-drain --keep-streams

The drain deletes what it stored (``drain_trim``); ``--keep-streams`` drains without
deleting, so that ``--rewind-drain`` has the same entries to drain again next time.

Before the bill run the previous benchmark run of the period (invoices, lines, run rows,
counter) is deleted with the immutability triggers bypassed (``session_replication_role``):
only ever in the benchmark database.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import resource
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

import asyncpg
from redis.asyncio import Redis

from ocs.balance.keys import PAYERS, PayerKeys
from ocs.offline.billrun import bill_run
from ocs.offline.crypto import tenant_cipher
from ocs.offline.db import connect, enter_tenant
from ocs.offline.drain import BATCH, GROUP, WRITERS, Drainer
from ocs.rating.loader import load_catalogue

TENANT: Final = "bench"
DEFAULT_URL: Final = "postgresql://postgres@127.0.0.1:5432/ocs_bench"
DEFAULT_REDIS: Final = "redis://127.0.0.1:6379/15"
DEFAULT_FOLDER: Final = Path("/tmp/ocs-bench-catalogue")
MASTER: Final = hashlib.sha256(b"ocs offline benchmark master key").digest()
RUN_ON: Final = date(2025, 4, 1)
TARGET_BILLRUN_S: Final = 120.0
TARGET_DRAIN_RPS: Final = 50_000.0


async def reset_runs(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            for table in ("invoice_lines", "invoices", "bill_run_accounts", "bill_runs"):
                await conn.execute(f"DELETE FROM {table} WHERE tenant_id = $1", TENANT)
            await conn.execute(
                "UPDATE invoice_counters SET last_number = 0 WHERE tenant_id = $1", TENANT
            )
    finally:
        await conn.close()


async def rewind_drain(url: str, redis: Redis) -> None:
    """Make the streams undrained again: drop the consumer group (the drain re-creates it at
    the start of each stream) and delete the rows a previous drain wrote (April, outside the
    billed period). Only ever on the benchmark databases."""
    members: Any = await redis.smembers(PAYERS)
    for tag in members:
        stream = PayerKeys(tag.decode()).stream
        if await redis.exists(stream):
            await redis.xgroup_destroy(stream, GROUP)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "DELETE FROM usage_records WHERE tenant_id = $1 AND ts >= '2025-04-01'", TENANT
        )
        await conn.execute("VACUUM ANALYZE usage_records")
    finally:
        await conn.close()


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process of this machine (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def server_cpu(url: str, redis: Redis) -> dict[str, float]:
    """CPU seconds so far of this database's PostgreSQL backends (by pid), of the server's
    WAL writer, checkpointer and background writer (shared with every database of the
    server), and of the Redis server."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid, backend_type, datname = current_database() AS ours"
            " FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    out: dict[str, float] = {}
    for r in rows:
        if r["ours"] and r["backend_type"] == "client backend":
            out[f"pg:{r['pid']}"] = proc_cpu(r["pid"])
        elif r["backend_type"] in ("walwriter", "checkpointer", "background writer"):
            out[f"bg:{r['pid']}"] = proc_cpu(r["pid"])
    info: Any = await redis.info("cpu")
    out["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float], prefix: str) -> float:
    """CPU spent between two samples by the processes named ``prefix*`` (new ones from 0)."""
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix))


async def bench_drain(args: argparse.Namespace) -> dict[str, Any]:
    db = await connect(SimpleNamespace(database_url=args.url, data_dir=Path("/tmp")), max_size=4)
    redis = Redis.from_url(args.redis_url)
    try:
        if args.rewind_drain:
            await rewind_drain(args.url, redis)
        drainer = Drainer(
            redis, db, MASTER, batch=args.batch, writers=args.writers, trim=not args.keep_streams
        )
        load0 = os.getloadavg()[0]
        before, cpu0 = await server_cpu(args.url, redis), self_cpu()
        stats = await drainer.run()
        cpu1, after = self_cpu(), await server_cpu(args.url, redis)
        per = 1e6 / max(1, stats.read)
        return {
            "drain_records": stats.read,
            "drain_inserted": stats.inserted,
            "drain_streams": stats.streams,
            "drain_batch": args.batch,
            "drain_writers": args.writers,
            "drain_trim": not args.keep_streams,
            "drain_seconds": round(stats.seconds, 2),
            "drain_db_seconds": round(stats.db_seconds, 2),
            "drain_records_per_s": round(stats.rate),
            "drain_target_records_per_s": TARGET_DRAIN_RPS,
            "drain_vs_target": round(stats.rate / TARGET_DRAIN_RPS, 3),
            "drain_load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
            # CPU microseconds a record: this (drain) process, the database's backends, the
            # server's WAL writer/checkpointer/bgwriter (shared: other databases count too),
            # the Redis server
            "drain_cpu_us": round((cpu1 - cpu0) * per, 1),
            "drain_pg_backends_cpu_us": round(cpu_delta(before, after, "pg:") * per, 1),
            "drain_pg_background_cpu_us": round(cpu_delta(before, after, "bg:") * per, 1),
            "drain_redis_cpu_us": round(cpu_delta(before, after, "redis") * per, 1),
        }
    finally:
        await redis.aclose()
        await db.close()


async def bench_billrun(args: argparse.Namespace) -> dict[str, Any]:
    if not args.preview:
        await reset_runs(args.url)
    catalogue = load_catalogue(args.catalogue)
    db = await connect(SimpleNamespace(database_url=args.url, data_dir=Path("/tmp")), max_size=4)
    try:
        async with db.pool.acquire() as conn, conn.transaction():
            await enter_tenant(conn, TENANT)
            cipher = await tenant_cipher(conn, TENANT, MASTER)
            records = await conn.fetchval(
                "SELECT count(*) FROM usage_records WHERE ts >= '2025-03-01' AND ts < '2025-04-01'"
            )
            subs = await conn.fetchval("SELECT count(*) FROM subscriptions")
        load0 = os.getloadavg()[0]
        started = time.perf_counter()
        summary = await bill_run(db, catalogue, cipher, bill_day=1, on=RUN_ON, preview=args.preview)
        seconds = time.perf_counter() - started
        totals = summary.totals()
        return {
            "billrun_seconds": round(seconds, 2),
            "billrun_target_seconds": TARGET_BILLRUN_S,
            "billrun_vs_target": round(seconds / TARGET_BILLRUN_S, 3),
            "billrun_records": records,
            "billrun_records_per_s": round(records / seconds),
            "billrun_subscriptions": subs,
            "billrun_accounts": summary.accounts,
            "billrun_invoices": len(summary.invoices),
            "billrun_preview": args.preview,
            "billrun_net_eur": totals.get("EUR", (0, 0, 0))[0],
            "billrun_load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
        }
    finally:
        await db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--redis-url", default=DEFAULT_REDIS)
    ap.add_argument("--catalogue", type=Path, default=DEFAULT_FOLDER)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--writers", type=int, default=WRITERS, help="drain transactions at once")
    ap.add_argument("--skip-drain", action="store_true")
    ap.add_argument(
        "--rewind-drain",
        action="store_true",
        help="drain the streams again from their start (deletes the previously drained rows)",
    )
    ap.add_argument(
        "--keep-streams",
        action="store_true",
        help="drain without deleting the entries (drain_trim off): they can be drained again",
    )
    ap.add_argument("--skip-billrun", action="store_true")
    ap.add_argument("--preview", action="store_true", help="compute without issuing")
    args = ap.parse_args()
    out: dict[str, Any] = {
        "bench": "offline",
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
    }
    if not args.skip_drain:
        out |= asyncio.run(bench_drain(args))
    if not args.skip_billrun:
        out |= asyncio.run(bench_billrun(args))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
