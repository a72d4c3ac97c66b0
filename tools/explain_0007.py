"""Migration 0007 on data: do the bill run's last-run lookup and purchase scan use its
indexes, and what do they cost with and without them (docs/benchmarks-indexes.md)?

Run on a database made by ``tools/gen_cdrs.py`` (tenant ``bench``); it adds run history
(``--runs`` past runs of every account in ``bill_run_accounts``) and ``--purchases``
``kind = 'adjust'`` records (add-on purchases), ANALYZEs, then prints ``EXPLAIN ANALYZE``
of both queries as the application runs them (role ``ocs_app``, the tenant's RLS), with
the indexes and with them dropped inside a rolled-back transaction.

    .venv/bin/python tools/gen_cdrs.py --url postgresql://postgres@127.0.0.1:5432/ocs_bench_idx \\
        --catalogue /tmp/idx/catalogue --records 1000000 --subs 10000 --only db
    .venv/bin/python tools/explain_0007.py --url postgresql://postgres@127.0.0.1:5432/ocs_bench_idx
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg

TENANT: Final = "bench"
LAST_RUN: Final = (  # ocs.offline.late.last_billed
    "SELECT a.account_id, max(r.period_start) AS billed, max(a.watermark) AS mark"
    " FROM bill_run_accounts a JOIN bill_runs r USING (tenant_id, run_id)"
    " WHERE a.account_id = ANY($1::text[]) GROUP BY a.account_id"
)
PURCHASES: Final = (  # ocs.offline.purchases.purchases_by_buyer
    "SELECT record_key, ts, payer, account_id, ctx, seq FROM usage_records"
    " WHERE kind = 'adjust' AND ctx->>'api' = ANY($3::text[])"
    " AND (seq IS NULL OR seq <= $4) AND (ts >= $1 AND ts < $2 OR ts < $1 AND seq > $5)"
    " ORDER BY ts, record_key"
)
INDEXES: Final = ("bill_run_accounts_account", "usage_records_adjust_ts")


async def _history(conn: asyncpg.Connection, runs: int, purchases: int) -> None:
    have = await conn.fetchval("SELECT count(*) FROM bill_runs WHERE run_key LIKE 'hist:%'")
    if have == 0:
        for n in range(runs):
            run_id = await conn.fetchval(
                "INSERT INTO bill_runs (tenant_id, run_key, bill_day, period_start, period_end,"
                " status) VALUES ($1, $2, 1, $3::timestamptz,"
                " $3::timestamptz + interval '1 month', 'done')"
                " RETURNING run_id",
                TENANT,
                f"hist:{n}",
                datetime(2022, 1, 1, tzinfo=UTC).replace(year=2022 + n // 12, month=n % 12 + 1),
            )
            await conn.execute(
                "INSERT INTO bill_run_accounts (tenant_id, run_id, account_id, watermark)"
                " SELECT tenant_id, $2, account_id, 0 FROM accounts WHERE tenant_id = $1",
                TENANT,
                run_id,
            )
        await conn.execute(
            "INSERT INTO usage_records (tenant_id, record_key, stream_id, kind, payer, ts,"
            " account_id, ctx) SELECT $1, 'adj-' || n, n || '-0', 'adjust', payer, ts"
            " + (n % 1000) * interval '1 second', account_id,"
            ' \'{"api": "addon", "addon": "boost", "price": 100, "currency": "EUR"}\''
            " FROM (SELECT n, (SELECT payer FROM usage_records LIMIT 1) AS payer,"
            " (SELECT account_id FROM usage_records LIMIT 1) AS account_id,"
            " timestamptz '2025-01-01' + (n % 90) * interval '1 day' AS ts"
            " FROM generate_series(1, $2) n) g",
            TENANT,
            purchases,
        )
    await conn.execute("ANALYZE bill_run_accounts; ANALYZE bill_runs; ANALYZE usage_records")


async def _explain(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    await conn.execute("SELECT set_config('role', 'ocs_app', true)")
    await conn.execute("SELECT set_config('app.tenant', $1, true)", TENANT)
    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *args)
    await conn.execute("RESET ROLE")
    return "\n".join(r[0] for r in rows)


async def main(url: str, runs: int, purchases: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await _history(conn, runs, purchases)
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM usage_records) AS records,"
            " (SELECT count(*) FROM usage_records WHERE kind = 'adjust') AS adjust,"
            " (SELECT count(*) FROM bill_run_accounts) AS run_accounts"
        )
        print(dict(counts))
        account = await conn.fetchval("SELECT account_id FROM accounts LIMIT 1")
        start, end = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)
        queries = (
            ("last run of one account", LAST_RUN, ([account],)),
            ("purchase scan, March 2025", PURCHASES, (start, end, ["addon"], 10**12, 10**12)),
        )
        for label in ("with 0007", "without 0007"):
            async with conn.transaction():
                if label == "without 0007":
                    for index in INDEXES:
                        await conn.execute(f"DROP INDEX {index}")
                for title, sql, args in queries:
                    await _explain(conn, sql, *args)  # warm the cache
                    print(f"--- {title} ({label})\n{await _explain(conn, sql, *args)}")
                if label == "without 0007":
                    raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.close()


class _Rollback(Exception):
    """Leaves the transaction that dropped the indexes (they stay)."""


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--runs", type=int, default=36, help="past runs of every account")
    ap.add_argument("--purchases", type=int, default=20_000, help="kind = 'adjust' records")
    args = ap.parse_args()
    asyncio.run(main(args.url, args.runs, args.purchases))
