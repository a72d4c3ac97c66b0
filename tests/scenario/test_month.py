"""A month of IoT billing, end to end, checked against totals computed by hand (issue 12).

Three accounts of one tenant, a real ``ocs`` server on a TCP port (the charging attacher of
``ocs serve``) and a Diameter client sending CCR-I/U/T over the socket; the usage stream is
drained into a real PostgreSQL and the bill run invoices it. Every figure below is worked
out by hand from docs/rating.md rule 8 and written as a literal:

* **alpha** (postpaid) pays with a postpaid pool of 5 MB, run far past its size: a priced
  EU zone with a graduated tier, a priced world zone, and a free home zone used once the
  pool is empty (the case where ``charge.lua`` sent ``HINCRBY ... -0`` and lost the usage);
* **beta** (postpaid account) pays with a prepaid pool of 3 MB, run to its end and refused
  after it (4012), on a plan with a day/night band;
* **carol** (consumer) pays with a wallet, on a plan with a charging increment and a
  minimum charge: the wallet must end at its hand-rated balance;
* **delta** is a customer of the reseller **resell**, which buys delta's usage wholesale at
  a price where each usage is worth a fraction of a cent (rounded per invoice line).

Then: no CCR is answered by failure handling, nothing stays reserved, the invoices equal the
hand totals to the cent, and every record's amount is what the wallet was debited.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from ocs.balance import BalanceStore
from ocs.charging import apply_catalog
from ocs.charging.config import ChargingConfig
from ocs.diameter import avp_codes as A
from ocs.offline.billrun import bill_run
from ocs.offline.db import Database
from ocs.offline.drain import Drainer
from ocs.rating.loader import load_catalogue
from tests.balance.fixtures import db_url
from tests.charging.ccr import build_ccr
from tests.charging.conftest import ServedCharging, served, settings_for
from tests.charging.helpers import granted, msccs
from tests.offline.conftest import MASTER, OFFLINE_REDIS_DB, synced

BERLIN = ZoneInfo("Europe/Berlin")
MB = 1_000_000

CATALOGUE = """
tenant: {id: TENANT, name: Month, home_network: "26201", time_zone: Europe/Berlin,
         currency: EUR}
countries:
  - {code: DE, mcc: ["262"]}
  - {code: FR, mcc: ["208"]}
zone_sets:
  - id: zs
    default: world
    zones:
      - {id: home, name: Home, networks: ["26201"]}
      - {id: eu, name: EU, countries: [FR]}
      - {id: world, name: World}
time_bands:
  - id: daynight
    default: night
    bands:
      - {id: day, windows: [{days: [mon, tue, wed, thu, fri, sat, sun], start: "07:00",
                             end: "22:00"}]}
plans:
  - id: iot-post
    name: IoT postpaid
    currency: EUR
    versions:
      - effective_from: "2026-01-01T00:00:00+01:00"
        zone_set: zs
        rounding: up
        tariffs:
          - {service: data, zone: home, per: 1000000, rates: {any: {tiers: [{from: 0,
             price: "0"}]}}}
          - {service: data, zone: eu, per: 1000000, increment: 1000, rates: {any: {tiers: [
             {from: 0, price: "2"}, {from: 3000000, price: "1"}]}}}
          - {service: data, zone: world, per: 1000000, rates: {any: {tiers: [{from: 0,
             price: "10"}]}}}
  - id: iot-pre
    name: IoT prepaid
    currency: EUR
    versions:
      - effective_from: "2026-01-01T00:00:00+01:00"
        zone_set: zs
        time_bands: daynight
        rounding: half_up
        tariffs:
          - {service: data, zone: "*", per: 1000000, rates: {
             day: {tiers: [{from: 0, price: "4"}]}, night: {tiers: [{from: 0, price: "1"}]}}}
  - id: consumer
    name: Consumer
    currency: EUR
    versions:
      - effective_from: "2026-01-01T00:00:00+01:00"
        zone_set: zs
        rounding: up
        tariffs:
          - {service: data, zone: home, per: 1000000, increment: 100000, minimum_charge: 5,
             rates: {any: {tiers: [{from: 0, price: "3"}]}}}
          - {service: data, zone: "*", per: 1000000, minimum_charge: 5,
             rates: {any: {tiers: [{from: 0, price: "5"}]}}}
  - id: wholesale
    name: Wholesale
    currency: EUR
    versions:
      - effective_from: "2026-01-01T00:00:00+01:00"
        zone_set: zs
        rounding: down
        tariffs:
          - {service: data, zone: "*", per: 1000000, rates: {any: {tiers: [{from: 0,
             price: "0.25"}]}}}
accounts:
  - {id: resell, name: Resell, kind: reseller, payment: postpaid, currency: EUR, bill_day: 1,
     plans: [{plan: wholesale, from: "2026-01-01T00:00:00+01:00"}],
     payer: {kind: postpaid_pool, id: resell-usage}}
  - {id: delta, name: Delta, parent: resell, kind: enterprise, payment: postpaid,
     currency: EUR, bill_day: 1}
  - {id: alpha, name: Alpha, kind: enterprise, payment: postpaid, currency: EUR, bill_day: 1}
  - {id: beta, name: Beta, kind: enterprise, payment: postpaid, currency: EUR, bill_day: 1}
  - {id: carol, name: Carol, kind: consumer, payment: prepaid, currency: EUR, bill_day: 1}
pools:
  - {id: alpha-pool, account: alpha, kind: static, payment: postpaid, service: data,
     unit: bytes, size: 5000000}
  - {id: beta-pool, account: beta, kind: static, payment: prepaid, service: data,
     unit: bytes, size: 3000000}
  - {id: resell-usage, account: resell, kind: static, payment: postpaid, service: data,
     unit: bytes, size: 0}
  - {id: delta-pool, account: delta, kind: static, payment: postpaid, service: data,
     unit: bytes, size: 0}
wallets:
  - {id: carol-wallet, account: carol, currency: EUR, balance: 1000}
sims:
  - {imsi: "262017800000001", msisdn: "4917780000001", account: alpha, twins: [{id: data,
     payer: {kind: postpaid_pool, id: alpha-pool},
     plans: [{plan: iot-post, from: "2026-01-01T00:00:00+01:00"}]}]}
  - {imsi: "262017800000002", msisdn: "4917780000002", account: beta, twins: [{id: data,
     payer: {kind: prepaid_pool, id: beta-pool},
     plans: [{plan: iot-pre, from: "2026-01-01T00:00:00+01:00"}]}]}
  - {imsi: "262017800000003", msisdn: "4917780000003", account: carol, twins: [{id: data,
     payer: {kind: wallet, id: carol-wallet},
     plans: [{plan: consumer, from: "2026-01-01T00:00:00+01:00"}]}]}
  - {imsi: "262017800000004", msisdn: "4917780000004", account: delta, twins: [{id: data,
     payer: {kind: postpaid_pool, id: delta-pool},
     plans: [{plan: iot-post, from: "2026-01-01T00:00:00+01:00"}]}]}
"""
ALPHA, BETA, CAROL = "262017800000001", "262017800000002", "262017800000003"
DELTA = "262017800000004"
HOME, EU, WORLD = "26201", "20801", "31026"


def write_catalogue(folder: Path, tenant: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "catalogue.yaml").write_text(CATALOGUE.replace("TENANT", tenant))
    return folder


def today_at(hour: int) -> datetime:
    """Today (Berlin) at ``hour`` local time, as the Event-Timestamp of a usage."""
    now = datetime.now(BERLIN)
    return now.replace(hour=hour, minute=0, second=0, microsecond=0).astimezone(UTC)


class Gateway:
    """A PGW: one session per usage, CCR-I asking ``ask`` octets, CCR-T reporting ``used``."""

    def __init__(self, server: ServedCharging) -> None:
        self.server = server
        self.codes: list[int] = []
        self.sessions = 0

    async def session(
        self, imsi: str, plmn: str, ask: int, used: int, when: datetime
    ) -> tuple[int, int | None]:
        """(the CCR-I's Result-Code, octets granted); CCR-T only after a grant."""
        self.sessions += 1
        sid = f"pgw.test;{imsi};{self.sessions}"
        spec = [(10, ask, 0)]
        first = await self.server.handle_ccr(
            build_ccr(sid, request_type=1, number=0, imsi=imsi, msccs=spec,
                      sgsn_mcc_mnc=plmn, when=when)
        )  # fmt: skip
        code = int(first.get(A.AVP_RESULT_CODE))
        self.codes.append(code)
        got = granted(msccs(first)[10]) if code == 2001 else None
        if got:
            last = await self.server.handle_ccr(
                build_ccr(sid, request_type=3, number=1, imsi=imsi, msccs=[(10, -1, used)],
                          sgsn_mcc_mnc=plmn, when=when)
            )  # fmt: skip
            self.codes.append(int(last.get(A.AVP_RESULT_CODE)))
        return code, got


async def test_a_month_of_billing_equals_the_hand_totals(
    redis: Redis, redis_base_url: str, db: Database, tmp_path: Path
) -> None:
    tenant = f"m{tmp_path.name[-8:].replace('_', '').lower()}x"
    folder = write_catalogue(tmp_path / "catalogue", tenant)
    # a generous Redis budget per CCR: this shared 2-core machine can stall a first CCR past
    # the 1 s default, which is failure handling by design and not what this test is about
    config = ChargingConfig(data_dir=tmp_path / "data", request_timeout=10.0)
    settings = settings_for(db_url(redis_base_url, OFFLINE_REDIS_DB), config)
    await apply_catalog(folder, settings)
    day, night = today_at(12), today_at(3)

    async with served(settings) as server:
        # the server's metrics live in the process's registry: count from here
        failover = server.metrics.failover_grants
        granted_before = sum(v for m in failover.collect() for v in _totals(m))
        pgw = Gateway(server)
        # alpha, postpaid pool of 5 MB
        # EU 2,500,000 B: tier 1 (2 ct/MB) from counter 0: 2.5 x 2 = 5.0 -> 5 ct
        assert (await pgw.session(ALPHA, EU, 3 * MB, 2_500_000, day))[0] == 2001
        # EU 1,500,500 B -> increment 1,000 -> 1,501,000 B from counter 2,500,000:
        # 500,000 at 2 ct/MB = 1.0, then 1,001,000 at 1 ct/MB = 1.001 -> 2.001, up -> 3 ct
        assert (await pgw.session(ALPHA, EU, 2 * MB, 1_500_500, day))[0] == 2001
        # world 123,457 B at 10 ct/MB = 1.23457 -> up -> 2 ct
        assert (await pgw.session(ALPHA, WORLD, MB, 123_457, night))[0] == 2001
        # home 4,000,000 B, free: the pool has 5,000,000 - 4,123,957 = 876,043 B left, the
        # rest (3,123,957 B) is overage at price 0 -> 0 ct, and recorded
        assert (await pgw.session(ALPHA, HOME, 4 * MB, 4_000_000, day))[0] == 2001
        # alpha's usage: 5 + 3 + 2 + 0 = 10 ct

        # beta, prepaid pool of 3 MB, day 4 ct/MB, night 1 ct/MB (half_up)
        # day 2,000,000 B: 2 x 4 = 8 ct
        assert await pgw.session(BETA, HOME, 2 * MB, 2_000_000, day) == (2001, 2 * MB)
        # night: 2 MB asked, the 1,000,000 B left granted and used: 1 x 1 = 1 ct
        assert await pgw.session(BETA, HOME, 2 * MB, 1_000_000, night) == (2001, MB)
        # the pool is used up: refused (credit limit reached), not failure handling
        assert (await pgw.session(BETA, HOME, MB, 0, night))[0] == 4012
        # beta's usage: 8 + 1 = 9 ct

        # carol, wallet of 1,000 ct
        # EU 331,667 B at 5 ct/MB = 1.658335 -> up 2 -> minimum charge 5 ct (it was debited
        # ceil(331,667 x 5 / 1,000,000) = 2 ct before issue 12)
        assert (await pgw.session(CAROL, EU, MB, 331_667, day))[0] == 2001
        # home 1,250,000 B -> increment 100,000 -> 1,300,000 B at 3 ct/MB = 3.9 -> up 4 ->
        # minimum charge 5 ct
        assert (await pgw.session(CAROL, HOME, 2 * MB, 1_250_000, day))[0] == 2001
        # home 2,000,000 B at 3 ct/MB = 6 ct
        assert (await pgw.session(CAROL, HOME, 2 * MB, 2_000_000, night))[0] == 2001
        # carol's wallet: 1,000 - (5 + 5 + 6) = 984 ct

        # delta, a customer of the reseller resell: home usage is free at retail (iot-post);
        # resell buys it wholesale at 0.25 ct/MB, rounding down: 10 usages of 700,000 B are
        # 0.175 ct each, 0 ct when rounded per usage (the wholesale invoice that never came),
        # 10 x 0.175 = 1.75 -> 1 ct rounded once for the line
        for _ in range(10):
            assert (await pgw.session(DELTA, HOME, MB, 700_000, day))[0] == 2001

        granted_after = sum(v for m in failover.collect() for v in _totals(m))
        assert granted_after == granted_before  # no CCR took failure handling
        assert set(pgw.codes) == {2001, 4012} and pgw.codes.count(4012) == 1

    store = BalanceStore(redis)
    try:
        wallet = f"{tenant}:wallet:carol-wallet"
        payers = [f"{tenant}:postpaid_pool:alpha-pool", f"{tenant}:prepaid_pool:beta-pool", wallet]
        for payer in payers:  # nothing stays reserved
            assert await store.live_reservations(payer) == 0, payer
            assert all(b.reserved == 0 for b in await store.buckets(payer)), payer
        money = {b.id: b for b in await store.buckets(wallet)}["carol-wallet"]
        assert (money.available, money.used) == (984, 16)
        records = [r for r in await store.records(wallet) if r.fields["kind"] == "usage"]
        debits = [sum(a for _, a in r.alloc) for r in records]
        amounts = [json.loads(r.fields["ctx"])["levels"][0]["amount"] for r in records]
        assert debits == amounts == [5, 5, 6]
        alpha = f"{tenant}:postpaid_pool:alpha-pool"
        units = [int(r.fields["units"]) for r in await store.records(alpha)
                 if r.fields["kind"] == "usage"]  # fmt: skip
        assert units == [2_500_000, 1_500_500, 123_457, 4_000_000]  # none lost
        pool = {b.id: b for b in await store.buckets(alpha)}["alpha-pool"]
        assert (pool.available, pool.used) == (0, 5 * MB)
    finally:
        await store.batch.close()

    catalogue = load_catalogue(folder)
    cipher = await synced(db, catalogue)
    await Drainer(redis, db, MASTER).run()
    async with db.tenant(tenant) as conn:  # every usage reached PostgreSQL, once
        drained = await conn.fetch(
            "SELECT account_id, count(*) AS n, sum(units) AS units FROM usage_records"
            " WHERE kind = 'usage' GROUP BY 1 ORDER BY 1"
        )
    assert [(r["account_id"], r["n"], r["units"]) for r in drained] == [
        ("alpha", 4, 8_123_957),
        ("beta", 2, 3_000_000),
        ("carol", 3, 3_581_667),
        ("delta", 10, 7_000_000),
    ]
    on = _period_end()
    invoices = {}
    for account in ("alpha", "beta"):
        run = await bill_run(db, catalogue, cipher, account=account, on=on)
        (invoice,) = run.invoices
        invoices[account] = invoice
    alpha_lines = {
        line.description: (int(line.quantity), line.net) for line in invoices["alpha"].lines
    }
    assert alpha_lines == {
        "Data, zone EU, plan IoT postpaid": (4_000_500, 8),  # 2,500,000 + 1,500,500 B; 5 + 3 ct
        "Data, zone World, plan IoT postpaid": (123_457, 2),
    }  # the free home usage (4,000,000 B, 0 ct) prints no line
    assert (invoices["alpha"].net, invoices["alpha"].gross) == (10, 10)  # no tax profile
    beta_lines = {
        line.description: (int(line.quantity), line.net) for line in invoices["beta"].lines
    }
    assert beta_lines == {
        "Data, zone Home, plan IoT prepaid": (3_000_000, 9)
    }  # 8 (day) + 1 (night)
    assert (invoices["beta"].net, invoices["beta"].gross) == (9, 9)
    run = await bill_run(db, catalogue, cipher, account="resell", on=on)
    (wholesale,) = run.invoices
    assert [(ln.description, int(ln.quantity), ln.net) for ln in wholesale.lines] == [
        ("Data, zone Home, plan Wholesale", 7_000_000, 1)
    ]
    assert (wholesale.issuer, wholesale.net) == (f"tenant:{tenant}", 1)
    # carol paid online: her wallet usage is on no invoice
    carol = await bill_run(db, catalogue, cipher, account="carol", on=on)
    assert all(line.kind != "usage" for inv in carol.invoices for line in inv.lines)


def _period_end() -> date:
    """The first day of next month (Berlin): the bill day that closes this month's period."""
    now = datetime.now(BERLIN)
    return date(now.year + (now.month == 12), now.month % 12 + 1, 1)


def _totals(metric: object) -> list[float]:
    """The counted values of a Prometheus counter family (not its ``_created`` stamps)."""
    samples = getattr(metric, "samples", [])
    return [s.value for s in samples if s.name.endswith("_total")]
