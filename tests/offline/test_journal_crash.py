"""A catalogue change that moves SIM states, killed (SIGKILL, a real process) at each step
boundary of its write (ocs.provisioning.journal), then recovered the two ways an operator's
system recovers: a start of ``ocs api``/``ocs serve`` (``complete_pending``) and the client's
retry of the same bulk move (whose change completes the journal first). After either, every
moved SIM is in the state asked, with exactly one history entry, one PostgreSQL audit row
after the drain and one ``sim.state_changed`` event, and nothing is left pending."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from ocs.balance import BalanceStore
from ocs.offline.crypto import tenant_cipher
from ocs.offline.db import Database, enter_tenant
from ocs.offline.state_moves import drain_state_moves
from ocs.provisioning.catalogues import TenantCatalogues
from ocs.provisioning.folder import apply_folder
from ocs.provisioning.identity import owner_of
from ocs.provisioning.journal import PENDING, cursor_key
from ocs.provisioning.keys import (
    IN_FORCE,
    journal_key,
    msisdn_key,
    sim_history_key,
    state_moves_key,
)
from ocs.provisioning.states import EVENT_TYPE, member_state, range_of
from tests.balance.fixtures import flushed_client
from tests.conftest import REDIS_BACKENDS, backend_url
from tests.offline.conftest import MASTER, OFFLINE_REDIS_DB, catalogue_folder
from tests.offline.crash_child import NEW_MSISDN, NEW_SIM, SIMS, TO, move

ROOT = Path(__file__).resolve().parents[2]
BOUNDARIES = [
    ("intent", 1),  # nothing written yet
    ("provisioned", 1),  # the intent, claims, payers, the index: not the state
    ("state", 1),  # the same (the pending journal computed)
    ("history", 1),  # the state and its pending journal, nothing journaled
    ("history", 2),  # 3 of 7 histories and audit entries (CHUNK 3)
    ("history", 3),  # 6 of 7
    ("events", 1),  # every history, no event
    ("events", 2),  # one outbox chunk written
    ("events", 3),  # two
    ("in-force", 1),  # every event, no stamp
    ("stamped", 1),  # stamped, the pending journal not marked so
    ("cursors", 1),  # marked, the outbox cursors left
    ("done", 1),  # the cursors deleted, the pending journal left
    ("forget", 1),  # the journal deleted, the identities released, the intent left
]


async def kill_at(
    url: str, data: Path, tenant: str, step: str, nth: int, what: str = "move"
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.offline.crash_child", what, url, str(data), tenant, step,
        str(nth), cwd=ROOT,
    )  # fmt: skip
    assert await child.wait() == -signal.SIGKILL, f"the child did not die at {step} #{nth}"


async def sim_state(catalogues: TenantCatalogues, tenant: str, imsi: str) -> str:
    _, state = await catalogues.load_state(tenant)
    item = (state.get("sims") or {}).get(imsi)
    if item is not None:
        return str(item["state"])
    held = range_of(state["sim_ranges"], imsi)
    assert held is not None
    return member_state(held, imsi)


async def state_events(redis: Redis, tenant: str) -> list[dict[str, Any]]:

    out = []
    async for key in redis.scan_iter(match=f"*{tenant}*:events"):
        for _, fields in await redis.xrange(key):
            if fields[b"type"].decode() == EVENT_TYPE:
                subject = json.loads(fields[b"subject"])
                out.append({"id": fields[b"id"].decode(), "imsi": subject["imsi"]})
    return out


@pytest.mark.parametrize("recovery", ["start", "retry"])
@pytest.mark.parametrize(("step", "nth"), BOUNDARIES)
async def test_a_change_killed_at_any_step_journals_every_move_once(
    db: Database,
    redis: Redis,
    redis_url_offline: str,
    tenant: str,
    tmp_path: Path,
    step: str,
    nth: int,
    recovery: str,
) -> None:
    store = BalanceStore(redis)
    await apply_folder(store, catalogue_folder(tmp_path / "c", tenant), tmp_path)
    catalogues = TenantCatalogues(store, tmp_path)
    before = Counter(e["imsi"] for e in await state_events(redis, tenant))
    assert not before

    await kill_at(redis_url_offline, tmp_path, tenant, step, nth)

    if recovery == "start":  # ocs api / ocs serve: the lock the dead change held has expired
        await redis.delete(f"ocs:api:{{api:{tenant}}}:lock")
        await catalogues.complete_pending(wait=0.0)
    else:  # the client got no answer and sends the same move again (lock: as above)
        await redis.delete(f"ocs:api:{{api:{tenant}}}:lock")
    again = await move(catalogues, tenant)  # the client's retry, after either recovery
    rev, _ = await catalogues.load_state(tenant)
    if step in ("intent", "provisioned", "state"):  # nothing stored: the retry moves
        assert again == rev
    else:  # the first attempt's state stands: the retry answers unchanged
        assert again is None

    for imsi in SIMS:
        assert await sim_state(catalogues, tenant, imsi) == TO
        history = await redis.lrange(sim_history_key(tenant, imsi), 0, -1)
        assert len(history) == 1, (imsi, history)
    events = await state_events(redis, tenant)
    assert Counter(e["imsi"] for e in events) == Counter(SIMS)
    assert len({e["id"] for e in events}) == len(SIMS)

    assert await drain_state_moves(redis, db, MASTER) == len(SIMS)
    async with db.pool.acquire() as conn, conn.transaction():
        await enter_tenant(conn, tenant)
        cipher = await tenant_cipher(conn, tenant, MASTER)
        rows: list[Any] = await conn.fetch(
            "SELECT imsi_enc, to_state, revision FROM sim_state_changes"
        )
    assert Counter(cipher.decrypt(bytes(r["imsi_enc"])) for r in rows) == Counter(SIMS)
    assert {(r["to_state"], r["revision"]) for r in rows} == {(TO, rev)}

    stamp = await redis.hget(IN_FORCE, tenant)
    assert stamp is not None and stamp.decode().endswith(f".{rev}")
    assert not await redis.exists(journal_key(tenant))
    # a retry answered unchanged leaves the intent to the next housekeeping pass (which
    # reconciles claims, payers, indexes), and that pass journals nothing again
    await catalogues.complete_pending()
    assert not await redis.sismember(PENDING, tenant)
    for imsi in SIMS:
        assert await redis.llen(sim_history_key(tenant, imsi)) == 1
    assert len(await state_events(redis, tenant)) == len(SIMS)
    assert await drain_state_moves(redis, db, MASTER) == 0
    async for key in redis.scan_iter(match=f"*{tenant}*:events"):
        assert not await redis.hgetall(cursor_key(key.decode()))


async def test_single_moves_and_catalogue_applies_go_through_the_same_journal(
    redis: Redis, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The single move (the API's and the CLI's ``set_state`` in a change) and ``ocs catalog
    apply`` of a folder naming a new state pass the same step boundaries as a bulk move."""
    from ocs.provisioning import journal
    from ocs.provisioning.states import set_state

    steps: list[str] = []
    monkeypatch.setattr(journal, "STEP_HOOK", steps.append)
    store = BalanceStore(redis)
    folder = catalogue_folder(tmp_path / "c", tenant)
    await apply_folder(store, folder, tmp_path)
    catalogues = TenantCatalogues(store, tmp_path)
    steps.clear()
    await catalogues.change(
        tenant, lambda s: set_state(s["sims"][SIMS[0]], "suspended"), source="t"
    )
    whole = ["intent", "provisioned", "state", "history", "events", "in-force", "stamped"]
    whole += ["cursors", "done", "forget"]
    assert steps == whole

    steps.clear()
    subscribers = folder / "subscribers.yaml"
    text = subscribers.read_text()
    marker = f'  - imsi: "{SIMS[0]}"\n'
    subscribers.write_text(text.replace(marker, marker + "    state: active\n"))
    await apply_folder(store, folder, tmp_path)
    assert steps == whole
    assert [
        json.loads(h)["to"] for h in await redis.lrange(sim_history_key(tenant, SIMS[0]), 0, -1)
    ] == ["active", "suspended"]
    assert not await redis.exists(journal_key(tenant))


@pytest.mark.parametrize("step", ["provisioned", "state", "forget"])
async def test_a_change_killed_before_or_after_its_state_leaves_claims_and_index_as_stored(
    redis: Redis, redis_url_offline: str, tenant: str, tmp_path: Path, step: str
) -> None:
    """A change creating a SIM claims its identities and writes its MSISDN index entry
    before its state: killed before the state, the start's recovery releases both (another
    tenant may use the SIM); killed after, it keeps both."""
    store = BalanceStore(redis)
    await apply_folder(store, catalogue_folder(tmp_path / "c", tenant), tmp_path)
    await kill_at(redis_url_offline, tmp_path, tenant, step, 1, what="create")
    assert await owner_of(redis, "imsi", NEW_SIM) == tenant  # claimed by the dead change
    assert await redis.sismember(PENDING, tenant)

    await redis.delete(f"ocs:api:{{api:{tenant}}}:lock")  # expired
    assert await TenantCatalogues(store, tmp_path).complete_pending() == [tenant]
    stored = step == "forget"
    _, state = await TenantCatalogues(store, tmp_path).load_state(tenant)
    assert (NEW_SIM in state["sims"]) is stored
    assert (await owner_of(redis, "imsi", NEW_SIM) == tenant) is stored
    assert (await owner_of(redis, "msisdn", NEW_MSISDN) == tenant) is stored
    assert (await redis.hexists(msisdn_key(tenant), NEW_MSISDN)) is stored
    assert not await redis.sismember(PENDING, tenant)


@pytest.fixture
async def backend(request: pytest.FixtureRequest, redis_backend: str) -> AsyncIterator[Any]:
    async for client in flushed_client(backend_url(request, redis_backend, OFFLINE_REDIS_DB)):
        yield client


@pytest.mark.parametrize("redis_backend", REDIS_BACKENDS)
@pytest.mark.parametrize(("step", "nth"), [("history", 2), ("events", 2)])
async def test_the_journal_completes_across_the_slots_of_a_cluster(
    backend: Any, request: pytest.FixtureRequest, redis_backend: str, tenant: str,
    tmp_path: Path, step: str, nth: int,
) -> None:  # fmt: skip
    """On a Redis Cluster the histories and the pending journal share the tenant's slot and
    each outbox's cursor its outbox's: a change killed mid-journal completes there too."""
    url = backend_url(request, redis_backend, OFFLINE_REDIS_DB)
    store = BalanceStore(backend)
    await apply_folder(store, catalogue_folder(tmp_path / "c", tenant), tmp_path)
    await kill_at(url, tmp_path, tenant, step, nth)
    await backend.delete(f"ocs:api:{{api:{tenant}}}:lock")  # expired
    catalogues = TenantCatalogues(store, tmp_path)
    assert await catalogues.complete_pending() == [tenant]
    for imsi in SIMS:
        assert await sim_state(catalogues, tenant, imsi) == TO
        assert await backend.llen(sim_history_key(tenant, imsi)) == 1
    events = []
    for outbox in await outboxes(backend, tenant):
        events += [f for _, f in await backend.xrange(outbox) if f[b"type"] == EVENT_TYPE.encode()]
    assert sorted(json.loads(f[b"subject"])["imsi"] for f in events) == sorted(SIMS)
    assert len({f[b"id"] for f in events}) == len(SIMS)
    assert await backend.xlen(state_moves_key(tenant)) == len(SIMS)
    assert not await backend.exists(journal_key(tenant))


async def outboxes(redis: Any, tenant: str) -> list[str]:
    """The outboxes of the tenant's payers (a cluster's SCAN visits every master)."""
    return [
        k.decode() if isinstance(k, bytes) else k
        async for k in redis.scan_iter(match=f"*{tenant}*:events")
    ]


async def test_a_change_that_fails_after_its_state_keeps_the_state_s_claims(
    redis: Redis, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error after the state is stored (Redis gone mid-journal) does not roll back the
    identity claims of that stored state: the SIM it created stays the tenant's."""
    from ocs.provisioning import journal
    from tests.offline.crash_child import create

    def fail(name: str) -> None:
        if name == "in-force":
            raise ConnectionError("Redis went away")

    store = BalanceStore(redis)
    await apply_folder(store, catalogue_folder(tmp_path / "c", tenant), tmp_path)
    catalogues = TenantCatalogues(store, tmp_path)
    monkeypatch.setattr(journal, "STEP_HOOK", fail)
    with pytest.raises(ConnectionError):
        await create(catalogues, tenant)
    monkeypatch.setattr(journal, "STEP_HOOK", None)
    _, state = await catalogues.load_state(tenant)
    assert NEW_SIM in state["sims"]
    assert await owner_of(redis, "imsi", NEW_SIM) == tenant
    assert await catalogues.complete_pending() == [tenant]
    assert await owner_of(redis, "msisdn", NEW_MSISDN) == tenant
