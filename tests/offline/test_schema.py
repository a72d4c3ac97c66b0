"""Migrations, row-level security by tenant, encrypted subscriber identifiers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from ocs.offline import db as db_module
from ocs.offline.db import Database, migrate, migration_files
from ocs.offline.drain import Drainer
from ocs.rating.catalogue import Catalogue
from tests.offline.conftest import MASTER, synced


async def test_migrations_are_versioned_and_idempotent(db: Database) -> None:
    async with db.pool.acquire() as conn:
        assert await migrate(conn) == []  # already applied by the session fixture
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    assert versions == [v for v, _, _ in migration_files()]


async def test_rls_isolates_tenants(db: Database, redis, tenant: str) -> None:  # type: ignore[no-untyped-def]
    from tests.offline.helpers import add_usage

    other = tenant + "x"
    await add_usage(redis, f"{tenant}:wallet:w", 3)
    await add_usage(redis, f"{other}:wallet:w", 5)
    await Drainer(redis, db, MASTER).run()
    async with db.tenant(tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM usage_records") == 3
        assert await conn.fetchval("SELECT count(*) FROM tenants") == 1
    async with db.tenant(other) as conn:
        assert await conn.fetchval("SELECT count(*) FROM usage_records") == 5
        # writing a row of another tenant is refused by the policy's WITH CHECK
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO one_time_charges (tenant_id, account_id, at, description, amount,"
                " currency) VALUES ($1, 'a', now(), 'x', 1, 'EUR')",
                tenant,
            )
    # the application role without a tenant sees nothing at all
    async with db.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE ocs_app")
        assert await conn.fetchval("SELECT count(*) FROM usage_records") == 0


async def test_identifiers_encrypted_with_blind_index(
    db: Database, catalogue: Catalogue, tenant: str
) -> None:
    cipher = await synced(db, catalogue)
    imsi = "262010000005000"
    async with db.tenant(tenant) as conn:
        rows = await conn.fetch(
            "SELECT twin, imsi_enc, msisdn_enc, account_id FROM subscriptions"
            " WHERE imsi_bidx = $1 ORDER BY twin",
            cipher.bidx(imsi),
        )
        raw = await conn.fetchval(
            "SELECT count(*) FROM subscriptions WHERE imsi_enc::text LIKE '%2620100%'"
        )
    assert [r["twin"] for r in rows] == ["diagnostics", "infotainment", "telemetry"]
    assert {cipher.decrypt(r["imsi_enc"]) for r in rows} == {imsi}
    assert cipher.decrypt(rows[0]["msisdn_enc"]) == "491700005000"
    assert raw == 0
    # another tenant's key cannot read it
    other = await synced_other(db, tenant + "o")
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        other.decrypt(rows[0]["imsi_enc"])


async def synced_other(db: Database, tid: str):  # type: ignore[no-untyped-def]
    from ocs.offline.crypto import tenant_cipher

    async with db.tenant(tid) as conn:
        return await tenant_cipher(conn, tid, MASTER)


async def test_issued_invoices_are_immutable(db: Database, tenant: str) -> None:
    async with db.tenant(tenant) as conn:
        await conn.execute("INSERT INTO tenants (tenant_id) VALUES ($1)", tenant)
        await conn.execute(
            "INSERT INTO invoices (tenant_id, number, kind, account_id, issuer, currency, net,"
            " tax, gross) VALUES ($1, 1, 'invoice', 'a', 't', 'EUR', 100, 19, 119)",
            tenant,
        )
    async with db.tenant(tenant) as conn:
        with pytest.raises(asyncpg.RaiseError, match="never change"):
            await conn.execute("UPDATE invoices SET net = 1")


# -- migration 0007: the bill run's lookups by account and its purchase scan ---------------
INDEX_0007: Final = 7
LAST_RUN_SQL: Final = (  # the shape of ocs.offline.late.last_billed
    "SELECT a.account_id, max(r.period_start) AS billed, max(a.watermark) AS mark"
    " FROM bill_run_accounts a JOIN bill_runs r USING (tenant_id, run_id)"
    " WHERE a.account_id = ANY($1::text[]) GROUP BY a.account_id"
)
PURCHASES_SQL: Final = (  # the shape of ocs.offline.purchases (the run's purchase scan)
    "SELECT record_key, ts, payer, account_id, ctx, seq FROM usage_records"
    " WHERE kind = 'adjust' AND ctx->>'api' = ANY($3::text[])"
    " AND (seq IS NULL OR seq <= $4) AND (ts >= $1 AND ts < $2 OR ts < $1 AND seq > $5)"
    " ORDER BY ts, record_key"
)


async def _plan(conn: asyncpg.Connection, tenant: str, sql: str, *args: object) -> str:
    """The plan of ``sql`` as the application runs it (role ocs_app, the tenant's RLS),
    with sequential scans priced out: which index the query can use, whatever the size of
    this test's tables (the benchmark database checks the planner picks it by itself)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SELECT set_config('role', 'ocs_app', true)")
        await conn.execute("SELECT set_config('app.tenant', $1, true)", tenant)
        rows = await conn.fetch("EXPLAIN " + sql, *args)
    return "\n".join(r[0] for r in rows)


async def test_migration_0007_applies_on_a_database_with_history(
    pg_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database at 0006 holding runs and records gets 0007 on the next migrate, and the
    bill run's last-run lookup and purchase scan can use its two indexes."""
    name = f"ocs_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(pg_admin_url)._replace(path=f"/{name}"))
    conn = await asyncpg.connect(url)
    try:
        every = migration_files()
        with monkeypatch.context() as patch:
            patch.setattr(db_module, "migration_files", lambda: [m for m in every if m[0] < 7])
            await migrate(conn)
        tenant = "t0007"
        await conn.execute("INSERT INTO tenants (tenant_id) VALUES ($1)", tenant)
        run_id = await conn.fetchval(
            "INSERT INTO bill_runs (tenant_id, run_key, bill_day, period_start, period_end)"
            " VALUES ($1, 'cycle:1:2026-10-01', 1, '2026-10-01', '2026-11-01') RETURNING run_id",
            tenant,
        )
        await conn.execute(
            "INSERT INTO bill_run_accounts (tenant_id, run_id, account_id)"
            " SELECT $1, $2, 'acc-' || n FROM generate_series(1, 50) n",
            tenant,
            run_id,
        )
        await conn.execute(
            "INSERT INTO usage_records (tenant_id, record_key, stream_id, kind, payer, ts, ctx)"
            " SELECT $1, 'r' || n, n || '-0', CASE WHEN n % 10 = 0 THEN 'adjust' ELSE 'usage'"
            " END, $1 || ':wallet:w', '2026-10-01'::timestamptz + n * interval '1 minute',"
            ' \'{"api": "addon"}\' FROM generate_series(1, 200) n',
            tenant,
        )

        applied = await migrate(conn)
        assert applied == [m[1] for m in every if m[0] >= INDEX_0007]  # 0007 and later
        indexes = {
            r["indexname"]: r["indexdef"]
            for r in await conn.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY($1::text[])",
                ["bill_run_accounts_account", "usage_records_adjust_ts"],
            )
        }
        assert indexes["bill_run_accounts_account"].endswith("(tenant_id, account_id)")
        assert indexes["usage_records_adjust_ts"].endswith(
            "(tenant_id, ts) WHERE (kind = 'adjust'::text)"
        )
        assert (
            await conn.fetchval("SELECT count(*) FROM usage_records WHERE kind = 'adjust'") == 20
        )  # the rows written before the migration are in the partial index's table

        last_run = await _plan(conn, tenant, LAST_RUN_SQL, ["acc-7"])
        assert "bill_run_accounts_account" in last_run, last_run
        start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
        scan = await _plan(conn, tenant, PURCHASES_SQL, start, end, ["addon"], 10**9, 0)
        assert "usage_records_adjust_ts" in scan, scan
        assert await migrate(conn) == []
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
