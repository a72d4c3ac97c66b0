"""SIM state moves kept durably (docs/sim-states.md): journaled in Redis with the catalogue
state that made them, copied once into PostgreSQL (``sim_state_changes``) by the drain, with
the IMSI encrypted; and a SIM's state is what the bill run's subscription rows say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from ocs.balance import BalanceStore
from ocs.offline.crypto import tenant_cipher
from ocs.offline.db import Database, enter_tenant
from ocs.offline.state_moves import drain_state_moves
from ocs.provisioning.catalogues import State, TenantCatalogues
from ocs.provisioning.folder import apply_folder
from ocs.provisioning.keys import state_moves_key
from ocs.provisioning.states import Actor, range_of, set_member_state, set_state
from ocs.rating.loader import load_catalogue
from tests.offline.conftest import MASTER, catalogue_folder, synced

SIM = "262019999999999"
RANGE_SIM = "262010000000005"


async def test_moves_reach_postgresql_once_with_who_and_why(
    db: Database, redis: Redis, tenant: str, tmp_path: Path
) -> None:
    store = BalanceStore(redis)
    await apply_folder(store, catalogue_folder(tmp_path / "c", tenant), tmp_path)
    catalogues = TenantCatalogues(store, tmp_path)

    def suspend(state: State) -> None:
        set_state(state["sims"][SIM], "suspended")

    def deactivate_one(state: State) -> None:
        held = range_of(state["sim_ranges"], RANGE_SIM)
        assert held is not None
        set_member_state(held, RANGE_SIM, "deactivated")

    await catalogues.change(
        tenant, suspend, source="t", actor=Actor("token", "abc"), reason="fraud"
    )
    await catalogues.change(tenant, deactivate_one, source="t", actor=Actor("cli", "ops"))
    assert await drain_state_moves(redis, db, MASTER) == 2
    assert await redis.xlen(state_moves_key(tenant)) == 0
    assert await drain_state_moves(redis, db, MASTER) == 0  # nothing twice
    async with db.pool.acquire() as conn, conn.transaction():
        await enter_tenant(conn, tenant)
        cipher = await tenant_cipher(conn, tenant, MASTER)
        rows: list[Any] = await conn.fetch(
            "SELECT imsi_bidx, imsi_enc, range_id, from_state, to_state, actor, reason, revision"
            " FROM sim_state_changes ORDER BY revision"
        )
    got = [
        (cipher.decrypt(bytes(r["imsi_enc"])), r["range_id"], r["from_state"], r["to_state"],
         r["actor"], r["reason"])
        for r in rows
    ]  # fmt: skip
    assert got == [
        (SIM, None, "active", "suspended", "token:abc", "fraud"),
        (RANGE_SIM, "acme-fleet", "active", "deactivated", "cli:ops", "t"),
    ]
    assert bytes(rows[0]["imsi_bidx"]) == cipher.bidx(SIM)


async def test_another_tenant_sees_none_of_the_moves(
    db: Database, redis: Redis, tenant: str, tmp_path: Path
) -> None:
    store = BalanceStore(redis)
    await apply_folder(store, catalogue_folder(tmp_path / "c", tenant), tmp_path)

    def suspend(state: State) -> None:
        set_state(state["sims"][SIM], "suspended")

    await TenantCatalogues(store, tmp_path).change(tenant, suspend, source="t")
    assert await drain_state_moves(redis, db, MASTER) == 1
    async with db.pool.acquire() as conn, conn.transaction():
        await enter_tenant(conn, tenant + "x")
        assert await conn.fetchval("SELECT count(*) FROM sim_state_changes") == 0


async def test_a_sim_s_state_is_its_subscriptions_status_for_billing(
    db: Database, tenant: str, tmp_path: Path
) -> None:
    folder = catalogue_folder(tmp_path / "c", tenant)
    subscribers = folder / "subscribers.yaml"
    text = subscribers.read_text()
    anchor = f'  - imsi: "{SIM}"\n    msisdn: "491709999999"\n    account: bob\n'
    assert anchor in text
    subscribers.write_text(text.replace(anchor, anchor + "    state: inventory\n"))
    catalogue = load_catalogue(folder)
    assert catalogue.sims_by_imsi[SIM].state == "inventory"
    cipher = await synced(db, catalogue)
    async with db.pool.acquire() as conn, conn.transaction():
        await enter_tenant(conn, tenant)
        status = await conn.fetchval(
            "SELECT status FROM subscriptions WHERE imsi_bidx = $1", cipher.bidx(SIM)
        )
        events = await conn.fetch(
            "SELECT e.status FROM subscription_events e JOIN subscriptions s USING"
            " (tenant_id, sub_id) WHERE s.imsi_bidx = $1",
            cipher.bidx(SIM),
        )
    assert status == "inventory"
    assert [e["status"] for e in events] == ["inventory"]


async def test_a_bulk_move_is_one_row_per_sim_in_postgresql(
    db: Database, redis: Redis, tenant: str, tmp_path: Path
) -> None:
    """A bulk move (ocs.provisioning.bulk_states) of the 1,000 members of the demo range and
    Bob's SIM, in one change whose journal is written in chunks: one row per SIM, with the
    one revision and actor, once."""
    from ocs.provisioning.bulk_states import BulkMove, resolve

    store = BalanceStore(redis)
    await apply_folder(store, catalogue_folder(tmp_path / "c", tenant), tmp_path)
    catalogues = TenantCatalogues(store, tmp_path)
    catalogue = (await catalogues.compiled(tenant)).catalogue
    first = int(RANGE_SIM) - 5
    named = [("imsi", str(first + n)) for n in range(1_000)] + [("imsi", SIM)]
    move = BulkMove(resolve(catalogue, {}, named), "suspended")
    applied = await catalogues.change(
        tenant, move, source="bulk", actor=Actor("token", "ops"), reason="unpaid"
    )
    assert len(move.moved) == len(applied.moves) == 1_001
    assert await drain_state_moves(redis, db, MASTER) == 1_001
    assert await drain_state_moves(redis, db, MASTER) == 0
    async with db.pool.acquire() as conn, conn.transaction():
        await enter_tenant(conn, tenant)
        rows: list[Any] = await conn.fetch(
            "SELECT range_id, from_state, to_state, actor, reason, revision, count(*) AS n"
            " FROM sim_state_changes GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1"
        )
    assert [tuple(r) for r in rows] == [
        ("acme-fleet", "active", "suspended", "token:ops", "unpaid", applied.revision, 1_000),
        (None, "active", "suspended", "token:ops", "unpaid", applied.revision, 1),
    ]
