"""The lifecycle seen from the network and the operator: Gy sessions that get an auto top-off
or an adaptive tier step instead of 4012, the runtime's lifecycle pass and `ocs lifecycle run`
across a period boundary (time injected), and `ocs balance show`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ocs.balance import BalanceStore
from ocs.charging import create_charging, show_balance
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.cli import main
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.lifecycle import Lifecycle
from ocs.provisioning.payers import provision_catalogue
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import load_catalogue
from ocs.redis_client import RedisClient
from tests.charging.ccr import build_ccr
from tests.charging.conftest import DEMO, make_app
from tests.charging.helpers import granted, msccs, wire

MB = 1_000_000
EXTRA = """
addons:
  - {id: boost-2mb, name: 2 MB boost, currency: EUR, price: 150, service: data,
     units: 2000000, validity_days: 7}
pools:
  - {id: boost-pool, account: acme-iot, size: 2000000,
     auto_top_off: {addon: boost-2mb, max_per_period: 1}}
  - {id: ladder-pool, account: acme-iot, kind: adaptive, size: 2000000, tiers: [3000000],
     renewal: {fee: 0}}
sims:
  - imsi: "262010000888001"
    msisdn: "491700888001"
    account: acme-iot
    twins:
      - {id: data, payer: {kind: prepaid_pool, id: boost-pool},
         plans: [{plan: iot-pool, from: "2024-01-01T00:00:00+01:00"}]}
  - imsi: "262010000888002"
    msisdn: "491700888002"
    account: acme-iot
    twins:
      - {id: data, payer: {kind: prepaid_pool, id: ladder-pool},
         plans: [{plan: iot-pool, from: "2024-01-01T00:00:00+01:00"}]}
"""
BOOST_IMSI, BOOST_MSISDN = "262010000888001", "491700888001"
LADDER_IMSI, LADDER_MSISDN = "262010000888002", "491700888002"
BOOST = "demo:prepaid_pool:boost-pool"
LADDER = "demo:prepaid_pool:ladder-pool"


@pytest.fixture(scope="module")
def lifecycle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lifecycle-catalogue")
    for item in DEMO.glob("*.yaml"):
        (folder / item.name).write_text(item.read_text())
    (folder / "zz-lifecycle.yaml").write_text(EXTRA)
    return folder


@pytest.fixture(scope="module")
def life_catalogue(lifecycle_dir: Path) -> Catalogue:
    return load_catalogue(lifecycle_dir)


@pytest.fixture
async def life_store(
    redis: RedisClient, life_catalogue: Catalogue, lifecycle_dir: Path
) -> AsyncIterator[BalanceStore]:
    store = BalanceStore(redis)
    await provision_catalogue(store, life_catalogue, str(lifecycle_dir))
    yield store
    await store.batch.close()


@pytest.fixture
def life_app(
    life_store: BalanceStore, life_catalogue: Catalogue, config: ChargingConfig
) -> ChargingApplication:
    return make_app(life_store, life_catalogue, config)


def ccr(sid: str, rtype: int, n: int, want: int, used: int, imsi: str):  # type: ignore[no-untyped-def]
    return wire(
        build_ccr(
            sid,
            request_type=rtype,
            number=n,
            imsi=imsi,
            msccs=[(10, want, used)],
            sgsn_mcc_mnc="26201",
        )
    )


async def test_gy_session_gets_an_auto_top_off_instead_of_4012_until_the_cap(
    life_app: ChargingApplication, life_store: BalanceStore, redis: RedisClient
) -> None:
    answer = await life_app.handle_ccr(ccr("t1", 1, 0, MB, 0, BOOST_IMSI), None)
    assert granted(msccs(answer)[10]) == MB
    answer = await life_app.handle_ccr(ccr("t1", 2, 1, MB, MB, BOOST_IMSI), None)
    last = msccs(answer)[10]
    # the pool is empty after this grant, but a top-off can still be bought: not final units
    assert granted(last) == MB and last.find(A.AVP_FINAL_UNIT_INDICATION) is None
    answer = await life_app.handle_ccr(ccr("t1", 2, 2, MB, MB, BOOST_IMSI), None)
    assert answer.get(A.AVP_RESULT_CODE) == 2001 and granted(msccs(answer)[10]) == MB
    bought = [r for r in await life_store.records(BOOST) if "auto-top-off" in r.fields["ctx"]]
    assert len(bought) == 1
    ctx = json.loads(bought[0].fields["ctx"])
    assert (ctx["api"], ctx["addon"], ctx["price"], ctx["account"]) == (
        "auto-top-off",
        "boost-2mb",
        150,
        "acme-iot",
    )
    # the cap (1 a period) is reached: final units, then the normal exhaustion outcome
    answer = await life_app.handle_ccr(ccr("t1", 2, 3, MB, MB, BOOST_IMSI), None)
    last = msccs(answer)[10]
    assert granted(last) == MB and last.find(A.AVP_FINAL_UNIT_INDICATION) is not None
    answer = await life_app.handle_ccr(ccr("t1", 2, 4, MB, MB, BOOST_IMSI), None)
    assert answer.get(A.AVP_RESULT_CODE) == 4012
    state = await Lifecycle(redis).state(BOOST)
    assert state is not None and state["top_offs"] == 1


async def test_adaptive_pool_tier_in_gy_balance_show_metrics_and_next_period(
    life_app: ChargingApplication,
    life_store: BalanceStore,
    redis: RedisClient,
    redis_url: str,
    tmp_path: Path,
) -> None:
    settings = Settings(redis_url=redis_url, data_dir=tmp_path)
    answer = await life_app.handle_ccr(ccr("a1", 1, 0, 3 * MB, 0, LADDER_IMSI), None)
    assert granted(msccs(answer)[10]) == 3 * MB  # tier 0 (2 MB) stepped to tier 1 (3 MB)
    shown = await show_balance(LADDER_MSISDN, settings)
    [payer] = shown["payers"]
    assert payer["lifecycle"]["tier"] == 1 and payer["lifecycle"]["tier_size"] == 3 * MB
    answer = await life_app.handle_ccr(ccr("a1", 2, 1, MB, 3 * MB, LADDER_IMSI), None)
    assert answer.get(A.AVP_RESULT_CODE) == 4012  # the last tier is the cap

    # the runtime's pass, at a time injected past the period end: tier 0 again, gauge set
    period_end = payer["lifecycle"]["period_end"]
    registry = CollectorRegistry()
    runtime = await create_charging(settings, registry=registry, start=False)
    try:
        report = await runtime.lifecycle_once(period_end - 1)
        assert report.outcomes == {}
        assert registry.get_sample_value("ocs_pool_tier", {"pool": "ladder-pool"}) == 1.0
        report = await runtime.lifecycle_once(period_end + 1)
        assert report.outcomes["renewed"] == 1  # ladder-pool; the other pools roll
        again = await runtime.lifecycle_once(period_end + 2)
        assert again.outcomes == {}
        await runtime.lifecycle_once(period_end + 3)
        assert registry.get_sample_value("ocs_pool_tier", {"pool": "ladder-pool"}) == 0.0
        assert (
            registry.get_sample_value("ocs_lifecycle_renewals_total", {"outcome": "renewed"}) == 1.0
        )
    finally:
        await runtime.close()
    shown = await show_balance(LADDER_MSISDN, settings)
    life = shown["payers"][0]["lifecycle"]
    assert life["tier"] == 0 and life["period_end"] > period_end


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


async def test_cli_lifecycle_run_renews_once_across_the_boundary(
    life_store: BalanceStore,
    redis: RedisClient,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = await Lifecycle(redis).state(LADDER)
    assert state is not None
    flags = ["--redis-url", redis_url, "--data-dir", str(tmp_path)]
    before = _iso(state["period_end"] - 1000)
    after = _iso(state["period_end"] + 1000)
    assert await _main(["lifecycle", "run", "--now", before, "--json", *flags]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["outcomes"] == {} and first["pools"] == 7  # the demo's 5 pools + 2 of the test
    assert await _main(["lifecycle", "run", "--now", after, "--json", *flags]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["outcomes"]["renewed"] == 1
    assert second["signals"] == {}  # the ladder pool's SIM has no live session to re-authorise
    assert await _main(["lifecycle", "run", "--now", after, *flags]) == 0
    assert "nothing due" in capsys.readouterr().out
    renewals = [r for r in await life_store.records(LADDER) if '"renewal"' in r.fields["ctx"]]
    assert len(renewals) == 1
    assert await _main(["balance", "show", LADDER_MSISDN, *flags]) == 0
    assert "top-offs=0 tier=0 (2000000)" in capsys.readouterr().out
    # bad input: a clear error naming the option, exit status 2
    assert await _main(["lifecycle", "run", "--now", "yesterday", *flags]) == 2
    assert "--now: 'yesterday' is not an ISO 8601 time" in capsys.readouterr().err
    assert await _main(["lifecycle", "run", "--now", "2026-12-01T00:00:00", *flags]) == 2
    assert "no UTC offset" in capsys.readouterr().err


async def _main(argv: list[str]) -> int:
    """`ocs ...` in a worker thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, argv)
