"""Re-applying a big tenant holds up nobody: every Redis command the change sends is bounded
(``ocs.provisioning.chunked``, identity claims of ``identity.CHUNK``), read back from Redis'
own command log (``SLOWLOG`` at threshold 0, filtered by the test client's name)."""

from __future__ import annotations

import asyncio
import gc
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from ocs.balance import BalanceStore
from ocs.diameter import avp_codes as A
from ocs.provisioning import chunked, identity
from ocs.provisioning.catalogues import State, TenantCatalogues, merge_documents
from ocs.provisioning.keys import msisdn_key
from tests.api.conftest import DEMO, tenant_documents

NAME = "reapply-test"
TENANT = "big"
MORE = re.compile(rb"^\.\.\. \((\d+) more arguments\)$")


def sims(first: int, count: int, sensors: int) -> dict[str, Any]:
    out = {}
    for n in range(first, first + count):
        imsi = str(262_990_000_000_000 + n)
        out[imsi] = {
            "imsi": imsi,
            "msisdn": str(491_990_000_000 + n),
            "account": "bob",
            "twins": [
                {
                    "id": "main",
                    "payer": {"kind": "wallet", "id": "bob-wallet"},
                    "plans": [{"plan": "consumer-data", "from": "2024-01-01T00:00:00+00:00"}],
                    "properties": {"sensors": sensors},
                }
            ],
        }
    return out


@pytest.fixture
async def named(redis_url: str, redis: Any) -> AsyncIterator[Any]:
    """A client whose every connection is named :data:`NAME`, with every command of the
    server logged (restored afterwards)."""
    client = Redis.from_url(redis_url, client_name=NAME)
    before = await client.config_get("slowlog-*")
    await client.config_set("slowlog-log-slower-than", 0)
    await client.config_set("slowlog-max-len", 200_000)
    await client.slowlog_reset()
    try:
        yield client
    finally:
        for key, value in before.items():
            await client.config_set(key, value)
        await client.slowlog_reset()
        await client.aclose()


async def commands(client: Any) -> list[tuple[bytes, bytes, int]]:
    """(command name, first argument, number of arguments) of every command of
    :data:`NAME` logged."""
    out = []
    for entry in await client.execute_command("SLOWLOG", "GET", "-1"):
        args, name = entry[3], entry[5]
        if name != NAME.encode() or not args:
            continue
        count = len(args)
        more = MORE.match(args[-1])
        if more:
            count += int(more.group(1)) - 1
        out.append((args[0].upper(), args[1] if count > 1 else b"", count))
    return out


async def test_a_reapply_of_a_big_tenant_sends_only_bounded_commands(
    named: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunked, "CHUNK", 50)
    monkeypatch.setattr(identity, "CHUNK", 50)
    catalogues = TenantCatalogues(BalanceStore(named), tmp_path)
    docs = tenant_documents(TENANT)
    for doc in docs.values():  # only this test's SIMs
        doc.pop("sims", None)
        doc.pop("sim_ranges", None)

    def first(state: State) -> None:
        state.update(merge_documents(state, docs, TENANT))
        state["sims"] = sims(0, 1_000, sensors=1)

    await catalogues.change(TENANT, first, source="test")
    assert await named.hlen(msisdn_key(TENANT)) == 1_000
    logged = await commands(named)
    claims = [n for name, _, n in logged if name == b"EVAL"]
    assert len(claims) >= 2_000 // 50  # IMSIs and MSISDNs, 50 a call
    assert max(claims) <= 50 + 9  # EVAL, script, key count, 4 keys, tenant, limit; ids

    # the re-apply: every SIM changed, 200 gone, 200 new
    await named.slowlog_reset()

    def again(state: State) -> None:
        state["sims"] = sims(200, 1_000, sensors=2)

    await catalogues.change(TENANT, again, source="test")
    logged = await commands(named)
    whole = {(name, first) for name, first, _ in logged if name in (b"SMEMBERS", b"HGETALL")}
    big = {identity.tenant_key(TENANT).encode(), msisdn_key(TENANT).encode()}
    assert not {first for _, first in whole} & big, whole  # the tenant's big keys: in pages
    dropped = [first for name, first, _ in logged if name in (b"DEL", b"UNLINK")]
    assert msisdn_key(TENANT).encode() not in dropped, dropped  # no index dropped whole
    bounded = [(name, n) for name, _, n in logged if name != b"SET"]  # the state: one value
    assert max(n for _, n in bounded) <= 2 * 50 + 9, sorted(bounded, key=lambda x: -x[1])[:3]
    key = msisdn_key(TENANT).encode()
    on_index = [name for name, first, _ in logged if first == key]
    assert on_index.count(b"HSET") == 200 // 50 and on_index.count(b"HDEL") == 200 // 50
    index = await named.hgetall(msisdn_key(TENANT))
    assert len(index) == 1_000
    assert b"491990000000" not in index and b"491990001199" in index

    # the same state again writes nothing to the index
    await named.slowlog_reset()
    await catalogues.change(TENANT, again, source="test")
    logged = await commands(named)
    key = msisdn_key(TENANT).encode()
    assert not [name for name, first, _ in logged if first == key and name != b"HSCAN"]


def catalogue_of(tenant: str, first: int, count: int) -> Any:
    from ocs.rating.loader import check_documents

    docs = tenant_documents(tenant)
    for doc in docs.values():
        doc.pop("sims", None)
        doc.pop("sim_ranges", None)
    docs["sims.yaml"] = {"sims": list(sims(first, count, sensors=1).values())}
    report = check_documents(docs)
    assert report.catalogue is not None, report.errors
    return report.catalogue


async def test_a_tenant_swap_is_atomic_for_the_tenant_and_runs_in_bounded_steps() -> None:
    from ocs.charging.inforce import InForce

    a1, a2 = catalogue_of("a", 0, 100), catalogue_of("a", 50, 100)  # 50 gone, 50 new
    b = catalogue_of("b", 1_000, 20)
    placeholder = catalogue_of("nobody", 5_000, 1)
    holder = InForce(placeholder)
    holder.put("a", a1, "1")
    holder.put("b", b, "1")
    a_imsis = sorted({*a1.sims_by_imsi, *a2.sims_by_imsi})
    seen: list[set[int]] = []
    done = False

    async def sample() -> None:
        while not done:
            found = {id(holder.of(imsi, None)) for imsi in a_imsis}
            found.discard(id(placeholder))  # a SIM already gone from the index
            seen.append(found)
            assert all(holder.of(i, None) is b for i in b.sims_by_imsi)  # b never moves
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    await asyncio.sleep(0)
    await holder.swap("a", a2, "2", chunk=10)
    done = True
    await sampler
    # the event loop ran between the steps, and at every step each of a's SIMs was charged
    # by one catalogue of a: the old one up to the swap, the new one from it
    assert len(seen) >= (50 + 50 + 100) // 10
    assert all(len(s) == 1 for s in seen), seen
    order = [s.pop() for s in seen if s]
    switched = order.index(id(a2))
    assert set(order[:switched]) == {id(a1)} and set(order[switched:]) == {id(a2)}
    # afterwards: the 50 gone SIMs are nobody's, the new ones a's, b untouched
    gone, new = sims(0, 50, 1), sims(100, 50, 1)
    assert all(holder.tenant_of(i, None) is None for i in gone)
    assert all(holder.of(i, None) is a2 for i in new)
    assert holder.stamps == {"a": "2", "b": "1"}
    # a tenant dropped: its SIMs leave the index in steps too
    await holder.swap("a", None, chunk=10)
    assert all(holder.tenant_of(i, None) is None for i in a_imsis)
    assert holder.tenant_of(next(iter(b.sims_by_imsi)), None) == "b"


async def test_other_tenants_charge_while_a_tenant_is_compiled(
    settings: Any, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload compiles off the event loop: while the compile of globex's new catalogue is
    held, CCRs of demo and of globex (on its catalogue in force) are answered 2001; then
    globex's new catalogue is in force."""
    import threading

    from prometheus_client import CollectorRegistry

    from ocs.charging import create_charging
    from ocs.charging import runtime as runtime_module
    from tests.api.test_provisioning import GLOBEX, apply_catalog_cli
    from tests.charging.test_outcomes import data_ccr

    assert await apply_catalog_cli(settings, str(DEMO)) == 0
    assert await apply_catalog_cli(settings, str(GLOBEX)) == 0
    charging = await create_charging(settings, registry=CollectorRegistry(), start=False)
    entered, release = threading.Event(), threading.Event()
    real = runtime_module.compile_state

    def held_compile(raw: Any) -> Any:
        entered.set()
        assert release.wait(30)
        return real(raw)

    async def code(sid: str, imsi: str) -> int:
        answer = await charging.application.handle_ccr(data_ccr(sid, imsi), None)
        return int(answer.get(A.AVP_RESULT_CODE))

    interval = sys.getswitchinterval()
    try:
        await charging.lifecycle_once()
        demo = charging.catalogue.tenants()["demo"]
        demo_rules = charging._rules[id(demo)][1]
        stamp = charging.catalogue.stamps["globex"]
        assert await apply_catalog_cli(settings, str(GLOBEX)) == 0  # a new revision
        monkeypatch.setattr(runtime_module, "compile_state", held_compile)
        reload = asyncio.create_task(charging.reload_if_applied())
        assert await asyncio.to_thread(entered.wait, 30)
        assert await code("demo;1", "262010000000001") == 2001
        assert await code("globex;1", "262020000000001") == 2001  # its catalogue in force
        assert charging.catalogue.stamps["globex"] == stamp and not reload.done()
        # meanwhile the compiling thread gives the GIL up often, and the collector waits
        assert sys.getswitchinterval() == runtime_module.COMPILE_SWITCH_INTERVAL
        assert not gc.isenabled()
        frozen = gc.get_freeze_count()
        release.set()
        assert await reload is True
        assert charging.catalogue.stamps["globex"] != stamp
        assert sys.getswitchinterval() == interval and gc.isenabled()
        assert gc.get_freeze_count() > frozen  # the new catalogue is out of the GC's sight
        assert await code("globex;2", "262020000000002") == 2001
        # the lifecycle's pool rules are recomputed for the reloaded tenant only
        await charging.lifecycle_once()
        globex = charging.catalogue.tenants()["globex"]
        assert charging._rules[id(demo)][1] is demo_rules
        assert charging._rules[id(globex)][0] is globex and len(charging._rules) == 2
    finally:
        release.set()
        await charging.close()


async def test_a_change_longer_than_the_lock_timeout_keeps_its_lock(
    redis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tenant lock is renewed while a change runs (a 100,000-SIM re-apply outlasted the
    60 s timeout on the shared machine): a change that takes three timeouts still holds it,
    so a second change of the same tenant waits for it instead of interleaving."""
    import threading

    from ocs.provisioning import catalogues as module
    from ocs.provisioning.keys import lock_key

    monkeypatch.setattr(module, "LOCK_TIMEOUT", 0.3)
    docs = tenant_documents(TENANT)
    slow, release = TenantCatalogues(BalanceStore(redis), tmp_path), threading.Event()
    real = module._compile
    order: list[str] = []

    def held(state: State) -> Any:
        assert release.wait(30)
        return real(state)

    def first(state: State) -> None:
        state.update(merge_documents(state, docs, TENANT))
        order.append("first")

    def second(state: State) -> None:
        order.append("second")

    monkeypatch.setattr(module, "_compile", held)
    one = asyncio.create_task(slow.change(TENANT, first, source="test"))
    for _ in range(500):
        if order:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)  # > three lock timeouts: renewed, still held by the first
    assert await redis.exists(lock_key(TENANT))
    other = TenantCatalogues(BalanceStore(redis), tmp_path)  # another process's
    two = asyncio.create_task(other.change(TENANT, second, source="test"))
    await asyncio.sleep(0.5)
    assert order == ["first"] and not two.done()  # waits for the lock
    release.set()
    monkeypatch.setattr(module, "_compile", real)
    assert (await one).revision == 1
    assert (await two).revision == 2
    assert order == ["first", "second"]
