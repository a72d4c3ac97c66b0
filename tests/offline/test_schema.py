"""Migrations, row-level security by tenant, encrypted subscriber identifiers."""

from __future__ import annotations

import asyncpg
import pytest

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
