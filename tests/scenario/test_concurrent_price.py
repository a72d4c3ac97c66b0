"""Concurrent sessions of one SIM on a wallet with a graduated tier and an allowance, answered
by two charging applications (two workers) on one Redis: the period counters are moved only
by the script, after checking them, so however the commits interleave each usage is debited
exactly its price at the counters it was committed at, and re-rating the records in commit
order (the wallet's stream) gives every amount again."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from ocs.balance import BalanceStore
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.observability.metrics import ChargingMetrics
from ocs.offline.rerate import rerate_levels
from ocs.provisioning.payers import provision_catalogue
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import CatalogueHolder, load_catalogue
from tests.charging.ccr import build_ccr
from tests.charging.helpers import wire

CATALOGUE = """
tenant: {id: conc, home_network: "26201", time_zone: Europe/Berlin, currency: EUR}
countries: [{code: DE, mcc: ["262"]}]
zone_sets: [{id: zs, default: home, zones: [{id: home, name: Home, networks: ["26201"]}]}]
plans:
  - id: tiered
    name: Tiered
    currency: EUR
    versions:
      - effective_from: "2026-01-01T00:00:00+01:00"
        zone_set: zs
        rounding: half_up
        allowances: [{id: free, service: data, units: 3000000}]
        tariffs:
          - {service: data, zone: "*", per: 1000000, increment: 1000, minimum_charge: 1,
             rates: {any: {tiers: [{from: 0, price: "3"}, {from: 10000000, price: "1.5"},
                                   {from: 25000000, price: "0.5"}]}}}
accounts: [{id: acc, name: Acc, currency: EUR, bill_day: 1}]
wallets: [{id: w, account: acc, currency: EUR, balance: 100000}]
sims:
  - {imsi: "262017900000001", account: acc, twins: [{id: m, payer: {kind: wallet, id: w},
     plans: [{plan: tiered, from: "2026-01-01T00:00:00+01:00"}]}]}
"""
IMSI = "262017900000001"
SESSIONS = 40


def write(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "c.yaml").write_text(CATALOGUE)
    return folder


def _app(store: BalanceStore, catalogue: Catalogue, folder: Path) -> ChargingApplication:
    """One worker's charging application."""
    return ChargingApplication(
        store,
        CatalogueHolder(catalogue),
        ChargingConfig(data_dir=folder),
        Identity("ocs.test", "test"),
        ChargingMetrics(CollectorRegistry()),
    )


async def test_concurrent_commits_on_one_tiered_wallet(redis: Redis, tmp_path: Path) -> None:
    catalogue = load_catalogue(write(tmp_path / "cat"))
    store = BalanceStore(redis)
    now = datetime(2026, 12, 3, 10, tzinfo=UTC)
    try:
        await provision_catalogue(store, catalogue, str(tmp_path / "cat"))
        apps = [_app(store, catalogue, tmp_path) for _ in range(2)]

        async def session(n: int) -> None:
            app = apps[n % 2]
            sid = f"conc;{n}"
            used = 150_000 + 37_123 * n
            for number, spec in ((0, (10, 2_000_000, 0)), (1, (10, -1, used))):
                ccr = build_ccr(sid, request_type=1 + 2 * number, number=number, imsi=IMSI,
                                msccs=[spec], sgsn_mcc_mnc="26201", when=now)  # fmt: skip
                answer = await app.handle_ccr(wire(ccr), None)
                assert answer.get(A.AVP_RESULT_CODE) == 2001

        await asyncio.gather(*(session(n) for n in range(SESSIONS)))
        wallet = "conc:wallet:w"
        records = [r for r in await store.records(wallet) if r.fields["kind"] == "usage"]
        money = {b.id: b for b in await store.buckets(wallet)}["w"]
        assert await store.live_reservations(wallet) == 0
    finally:
        await store.batch.close()
    assert len(records) == SESSIONS
    debits = [sum(a for _, a in r.alloc) for r in records]
    amounts = [json.loads(r.fields["ctx"])["levels"][0]["amount"] for r in records]
    assert debits == amounts
    assert (money.used, money.reserved, money.available) == (sum(debits), 0, 100_000 - sum(debits))
    # commit order is the stream's order: re-rating in it gives each amount again
    counters: dict[str, int] = {}
    rerated = []
    for r in records:
        ctx = json.loads(r.fields["ctx"])
        charges = rerate_levels(catalogue, ctx["levels"], "data", 10, now, int(r.fields["units"]),
                                "sub", counters)  # fmt: skip
        rerated.append(charges[0].amount)
    assert rerated == amounts
    assert counters == {"sub|data": sum(int(r.fields["units"]) for r in records) - 3_000_000
                        + _rounding(records), "sub|allowance:free": 3_000_000}  # fmt: skip
    assert sum(amounts) > 0


def _rounding(records: list[object]) -> int:
    """Units added by the 1,000-byte increment over all records (rated minus used)."""
    total = 0
    for r in records:
        units = int(r.fields["units"])  # type: ignore[attr-defined]
        total += -(-units // 1000) * 1000 - units
    return total
