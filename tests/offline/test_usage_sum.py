"""Summing usage in SQL gives exactly the amounts of re-rating every record in Python: every
rounding mode, exact halves, increments, minimum quantity and charge, plan versions changing
mid-period, rating-group tariffs, and tiered/allowance tariffs left to the record path."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from ocs.offline import usage
from ocs.offline.charges import Period
from ocs.offline.db import Database, enter_tenant
from ocs.offline.drain import Drainer
from ocs.offline.rerate import rerate_levels
from ocs.offline.usage import FlatRates, flat_rates, usage_lines
from ocs.rating import ServiceKind, UsageContext
from ocs.rating.loader import load_catalogue
from tests.offline.billing_fixture import record
from tests.offline.conftest import MASTER, catalogue_folder, synced

PLANS = """
plans:
  - id: sum-a
    currency: EUR
    versions:
      - effective_from: "2024-01-01T00:00:00+00:00"
        zone_set: retail
        rounding: up
        tariffs:
          - {service: data, zone: home, per: 1000000, increment: 1000, counter: sa,
             rates: {any: {tiers: [{from: 0, price: "0.37"}]}}}
          - {service: data, zone: eu, per: 1000000, increment: 1, minimum_charge: 3, counter: sa,
             rates: {any: {tiers: [{from: 0, price: "0.5"}]}}}
          - {service: data, zone: "*", per: 1000000, increment: 1, minimum_quantity: 250000,
             counter: sa,
             rates: {any: {tiers: [{from: 0, price: "7"}]}}}
          - {service: data, zone: "*", rating_group: 20, per: 1000000, increment: 1, counter: sa,
             rates: {any: {tiers: [{from: 0, price: "0.5"}]}}}
      - effective_from: "2025-03-20T00:00:00+00:00"
        zone_set: retail
        rounding: half_even
        tariffs:
          - {service: data, zone: "*", per: 1000000, increment: 1, counter: sa,
             rates: {any: {tiers: [{from: 0, price: "0.5"}]}}}
  - id: sum-b
    currency: EUR
    versions:
      - effective_from: "2024-01-01T00:00:00+00:00"
        zone_set: retail
        rounding: half_up
        allowances: [{id: free, service: data, zones: [eu], units: 3000000}]
        tariffs:
          - {service: data, zone: home, per: 1000000, increment: 1, minimum_charge: 1, counter: sb,
             rates: {any: {tiers: [{from: 0, price: "0.5"}]}}}
          - {service: data, zone: eu, per: 1000000, increment: 1,
             rates: {any: {tiers: [{from: 0, price: "0.5"}]}}}
          - {service: data, zone: world, per: 1000000, increment: 1, counter: roam,
             rates: {any: {tiers: [{from: 0, price: "0.25"}, {from: 5000000, price: "0.1"}]}}}
          - {service: data, zone: de-national, per: 1000000, increment: 1, counter: roam,
             rates: {any: {tiers: [{from: 0, price: "0.75"}]}}}
accounts:
  - {id: sum-co, name: Sum Co, kind: enterprise, payment: postpaid, currency: EUR,
     bill_day: 10}
pools:
  - {id: sum-pool, account: sum-co, kind: static, payment: postpaid, service: data,
     unit: bytes, size: 0}
sims:
  - imsi: "262019100000001"
    account: sum-co
    twins:
      - {id: data, payer: {kind: postpaid_pool, id: sum-pool},
         plans: [{plan: sum-a, from: "2024-01-01T00:00:00+00:00"}]}
  - imsi: "262019100000002"
    account: sum-co
    twins:
      - {id: data, payer: {kind: postpaid_pool, id: sum-pool},
         plans: [{plan: sum-b, from: "2024-01-01T00:00:00+00:00"}]}
"""
VISITED = [("262", "01"), ("262", "02"), ("208", "01"), ("310", "260")]
HALVES = [1_000_000, 3_000_000, 1_000, 999, 1, 250_000, 7]  # exact halves and small amounts


async def test_sql_sums_equal_record_by_record(
    redis: Redis, db: Database, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = catalogue_folder(tmp_path / "cat", tenant, PLANS)
    tz = folder / "tenant.yaml"
    tz.write_text(tz.read_text().replace("Europe/Berlin", "UTC"))
    catalogue = load_catalogue(folder)
    await synced(db, catalogue)
    rng = random.Random(7)
    start = datetime(2025, 3, 10, tzinfo=UTC)
    items = []
    for n in range(400):
        mcc, mnc = rng.choice(VISITED)
        qty = rng.choice(HALVES) if n % 3 == 0 else rng.randrange(0, 4_000_000)
        ctx = UsageContext(
            tenant=tenant, imsi=rng.choice(["262019100000001", "262019100000002"]),
            event_time=start + timedelta(seconds=rng.randrange(30 * 86400)),
            service=ServiceKind.DATA, quantity=qty, apn="iot.demo",
            rating_group=rng.choice([10, 20, None]), mcc=mcc, mnc=mnc,
        )  # fmt: skip
        items.append((ctx, f"s{n};1:1:10"))
    await record(redis, catalogue, items)
    await Drainer(redis, db, MASTER).run()
    period = Period(start, start + timedelta(days=31))
    rates = flat_rates(catalogue)
    assert {("sum-a", "home"), ("sum-a", "eu"), ("sum-b", "home")} <= set(
        zip(rates.plan, rates.zone, strict=True)
    )
    assert not {("sum-b", "eu"), ("sum-b", "world"), ("sum-b", "de-national")} & set(
        zip(rates.plan, rates.zone, strict=True)
    )
    calls: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return rerate_levels(*args, **kwargs)

    monkeypatch.setattr(usage, "rerate_levels", counting)
    async with db.pool.acquire() as conn, conn.transaction():
        await enter_tenant(conn, tenant)
        summed = await usage_lines(conn, catalogue, ["sum-co"], period)
        in_sql = 400 - len(calls)
        calls.clear()
        by_record = await usage_lines(conn, catalogue, ["sum-co"], period, rates=FlatRates())
    assert len(calls) == 400
    assert 100 < in_sql < 300  # both paths carried a good share
    assert summed == by_record
    assert len(summed["sum-co"]) >= 6
    assert sum(line.net for line in summed["sum-co"]) > 0
