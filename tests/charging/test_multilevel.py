"""B2B2B reserved at every level, with real CCRs on a real Redis (single server and cluster):
end customers' usage never overdraws their reseller's prepaid pool or wallet, the grant is
the smallest any level allows, CCR-T commits every level at its own price, reclaim and
release restore every level, and a postpaid reseller is checked against its credit limit
without being held (docs/charging.md, "Multi-level reservations")."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from ocs.audit.checks import audit_redis
from ocs.balance import BalanceStore
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Message
from ocs.diameter.constants import CcRequestType, RequestedAction
from ocs.provisioning.payers import provision_catalogue
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import load_catalogue
from ocs.redis_client import RedisClient
from tests.balance.helpers import assert_conserved
from tests.charging.ccr import build_ccr
from tests.charging.conftest import DEMO, make_app
from tests.charging.helpers import bucket, granted, msccs, wire

FROM = '"2024-01-01T00:00:00+01:00"'
RESELLERS = f"""
accounts:
  - {{id: net-reseller, name: Net Reseller, kind: reseller, payment: prepaid, currency: EUR,
     tax_profile: de-vat, accounting_group: wholesale, bill_day: 1,
     plans: [{{plan: wholesale-flat, from: {FROM}}}], payer: {{kind: prepaid_pool, id: net-pool}}}}
  - {{id: shop-a, name: Shop A, parent: net-reseller, kind: enterprise, payment: prepaid,
     currency: EUR, tax_profile: de-vat, accounting_group: reseller-customers, bill_day: 1}}
  - {{id: shop-b, name: Shop B, parent: net-reseller, kind: enterprise, payment: prepaid,
     currency: EUR, tax_profile: de-vat, accounting_group: reseller-customers, bill_day: 1}}
  - {{id: tight-reseller, name: Tight Reseller, kind: reseller, payment: postpaid,
     currency: EUR, tax_profile: de-vat, accounting_group: wholesale, bill_day: 1,
     plans: [{{plan: wholesale-flat, from: {FROM}}}],
     payer: {{kind: postpaid_pool, id: tight-postpaid}}}}
  - {{id: shop-c, name: Shop C, parent: tight-reseller, kind: enterprise, payment: prepaid,
     currency: EUR, tax_profile: de-vat, accounting_group: reseller-customers, bill_day: 1}}
  - {{id: wallet-reseller, name: Wallet Reseller, kind: reseller, payment: prepaid,
     currency: EUR, tax_profile: de-vat, accounting_group: wholesale, bill_day: 1,
     plans: [{{plan: wholesale-flat, from: {FROM}}}], payer: {{kind: wallet, id: wr-wallet}}}}
  - {{id: shop-d, name: Shop D, parent: wallet-reseller, kind: enterprise, payment: prepaid,
     currency: EUR, tax_profile: de-vat, accounting_group: reseller-customers, bill_day: 1}}
pools:
  - {{id: net-pool, account: net-reseller, kind: static, payment: prepaid, service: data,
     unit: bytes, size: 3000000}}
  - {{id: shop-a-pool, account: shop-a, kind: static, payment: prepaid, service: data,
     unit: bytes, size: 20000000}}
  - {{id: tight-postpaid, account: tight-reseller, kind: static, payment: postpaid,
     service: data, unit: bytes, size: 0, credit_limit: 100}}
  - {{id: shop-c-pool, account: shop-c, kind: static, payment: prepaid, service: data,
     unit: bytes, size: 20000000}}
  - {{id: shop-d-pool, account: shop-d, kind: static, payment: prepaid, service: data,
     unit: bytes, size: 20000000}}
  - {{id: shop-d-events, account: shop-d, kind: static, payment: prepaid, service: event,
     unit: events, size: 1000}}
wallets:
  - {{id: shop-b-wallet, account: shop-b, currency: EUR, balance: 100000}}
  - {{id: wr-wallet, account: wallet-reseller, currency: EUR, balance: 150}}
plans:
  - id: wholesale-flat
    name: Wholesale flat
    currency: EUR
    versions:
      - effective_from: {FROM}
        zone_set: retail
        rounding: half_up
        tariffs:
          - {{service: data, zone: "*", per: 1000000, increment: 1000,
             rates: {{any: {{tiers: [{{from: 0, price: "100"}}]}}}}}}
          - {{service: event, zone: "*", rates: {{any: {{tiers: [{{from: 0, price: "3"}}]}}}}}}
  - id: shop-events
    name: Shop events
    currency: EUR
    versions:
      - effective_from: {FROM}
        zone_set: retail
        tariffs:
          - {{service: event, zone: "*", rates: {{any: {{tiers: [{{from: 0, price: "1"}}]}}}}}}
sims:
"""
SIMS = [  # (account, payer kind, payer id): one SIM each, IMSI 26201000030000<n>
    ("shop-a", "prepaid_pool", "shop-a-pool"),
    ("shop-b", "wallet", "shop-b-wallet"),
    ("shop-c", "prepaid_pool", "shop-c-pool"),
    ("shop-d", "prepaid_pool", "shop-d-pool"),
    ("shop-a", "prepaid_pool", "net-pool"),  # the reseller's own pool pays a shop's SIM
]
RESELLERS += "".join(
    f"""  - imsi: "26201000030000{n}"
    msisdn: "49170030000{n}"
    account: {account}
    twins:
      - {{id: data, priority: 10, payer: {{kind: {kind}, id: {pid}}},
         plans: [{{plan: agri-retail, from: {FROM}}}]}}
      - {{id: events, priority: 5, filter: {{service: [event]}},
         payer: {{kind: prepaid_pool, id: shop-d-events}},
         plans: [{{plan: shop-events, from: {FROM}}}]}}
"""
    for n, (account, kind, pid) in enumerate(SIMS, start=1)
)
SHOP_A, SHOP_B, SHOP_C, SHOP_D, ON_RESELLER = (f"26201000030000{i}" for i in range(1, 6))
NET_POOL = "demo:prepaid_pool:net-pool"
SHOP_A_POOL = "demo:prepaid_pool:shop-a-pool"
SHOP_B_WALLET = "demo:wallet:shop-b-wallet"
TIGHT = "demo:postpaid_pool:tight-postpaid"
SHOP_C_POOL = "demo:prepaid_pool:shop-c-pool"
WR_WALLET = "demo:wallet:wr-wallet"
SHOP_D_POOL = "demo:prepaid_pool:shop-d-pool"
MB = 1_000_000
_sessions = itertools.count()


@pytest.fixture(scope="module")
def reseller_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("resellers")
    for item in DEMO.glob("*.yaml"):
        (folder / item.name).write_text(item.read_text())
    (folder / "zz-resellers.yaml").write_text(RESELLERS)
    return folder


@pytest.fixture(scope="module")
def reseller_catalogue(reseller_dir: Path) -> Catalogue:
    return load_catalogue(reseller_dir)


@pytest.fixture
async def chain_store(
    redis: RedisClient, reseller_catalogue: Catalogue, reseller_dir: Path
) -> AsyncIterator[BalanceStore]:
    store = BalanceStore(redis)
    await provision_catalogue(store, reseller_catalogue, str(reseller_dir))
    yield store
    await store.batch.close()


@pytest.fixture
def chain_app(
    chain_store: BalanceStore, reseller_catalogue: Catalogue, config: ChargingConfig
) -> ChargingApplication:
    # a generous deadline: under a loaded test machine no CCR falls to failure handling,
    # whose outage grants are bounded but, by design, not reserved
    return make_app(chain_store, reseller_catalogue, replace(config, request_timeout=60.0))


async def ccr(
    app: ChargingApplication, sid: str, rtype: CcRequestType, n: int, imsi: str, *,
    want: int | None = -1, used: int = 0, rg: int = 10, mscc: bool = True,
) -> Message:  # fmt: skip
    spec = [(rg, want, used)] if mscc else []
    return await app.handle_ccr(
        wire(build_ccr(sid, request_type=rtype, number=n, imsi=imsi, msccs=spec))
    )


def grant_of(answer: Message, rg: int = 10) -> int:
    return granted(msccs(answer)[rg]) or 0


def code_of(answer: Message, rg: int = 10) -> int:
    return int(msccs(answer)[rg].get(A.AVP_RESULT_CODE, 0))


async def session(
    app: ChargingApplication, imsi: str, want: int, use: int | None = None
) -> tuple[int, str]:
    """CCR-I asking ``want``, CCR-T reporting ``use`` (default: all it was granted)."""
    sid = f"pgw;ml;{next(_sessions)}"
    got = grant_of(await ccr(app, sid, CcRequestType.INITIAL_REQUEST, 0, imsi, want=want))
    used = got if use is None else use
    await ccr(app, sid, CcRequestType.TERMINATION_REQUEST, 1, imsi, want=-1, used=used)
    return got, sid


async def used_of(store: BalanceStore, payer: str, bid: str) -> tuple[int, int, int]:
    b = await bucket(store, payer, bid)
    return b.available, b.reserved, b.used


async def level_amounts(store: BalanceStore, payer: str) -> list[int]:
    """Per level, the sum of the record amounts of every usage on ``payer``."""
    import json

    sums: list[int] = []
    for rec in await store.records(payer):
        if rec.fields["kind"] != "usage":
            continue
        for i, line in enumerate(json.loads(rec.fields["ctx"])["levels"]):
            sums.extend([0] * (i + 1 - len(sums)))
            sums[i] += int(line["amount"])
    return sums


async def test_the_grant_is_the_smallest_level_and_ccr_t_commits_every_level(
    chain_app: ChargingApplication, chain_store: BalanceStore
) -> None:
    app, store = chain_app, chain_store
    sid = "pgw;ml;grant"
    first = await ccr(app, sid, CcRequestType.INITIAL_REQUEST, 0, SHOP_A, want=5 * MB)
    assert grant_of(first) == 3 * MB  # the shop's pool has 20 MB, the reseller's 3 MB
    assert await used_of(store, NET_POOL, "net-pool") == (0, 3 * MB, 0)
    assert await used_of(store, SHOP_A_POOL, "shop-a-pool") == (17 * MB, 3 * MB, 0)
    # another end customer of the same reseller: nothing left at the reseller's level
    other = await ccr(app, "pgw;ml;other", CcRequestType.INITIAL_REQUEST, 0, SHOP_B, want=MB)
    assert code_of(other) == 4012 and grant_of(other) == 0
    assert (await bucket(store, SHOP_B_WALLET, "shop-b-wallet")).reserved == 0
    await ccr(app, sid, CcRequestType.TERMINATION_REQUEST, 1, SHOP_A, used=2_500_000)
    assert await used_of(store, NET_POOL, "net-pool") == (500_000, 0, 2_500_000)
    assert await used_of(store, SHOP_A_POOL, "shop-a-pool") == (17_500_000, 0, 2_500_000)
    # the record prices both levels: 4 ct/MB retail (the shop), 1 EUR/MB wholesale
    assert await level_amounts(store, SHOP_A_POOL) == [10, 250]
    for payer in (NET_POOL, SHOP_A_POOL):
        await assert_conserved(store, payer)


async def test_a_wallet_end_customer_pays_its_price_and_the_reseller_its_units(
    chain_app: ChargingApplication, chain_store: BalanceStore
) -> None:
    app, store = chain_app, chain_store
    got, _ = await session(app, SHOP_B, want=MB, use=600_000)
    assert got == MB
    wallet = await bucket(store, SHOP_B_WALLET, "shop-b-wallet")
    amounts = await level_amounts(store, SHOP_B_WALLET)
    assert (wallet.used, wallet.reserved) == (amounts[0], 0) and amounts == [2, 60]
    assert await used_of(store, NET_POOL, "net-pool") == (2_400_000, 0, 600_000)
    for payer in (NET_POOL, SHOP_B_WALLET):
        await assert_conserved(store, payer)


async def test_a_reseller_wallet_is_held_and_debited_its_own_price(
    chain_app: ChargingApplication, chain_store: BalanceStore
) -> None:
    app, store = chain_app, chain_store
    sid = "pgw;ml;wallet-reseller"
    answer = await ccr(app, sid, CcRequestType.INITIAL_REQUEST, 0, SHOP_D, want=5 * MB)
    assert grant_of(answer) == 1_500_000  # 150 cents at 1 EUR/MB
    assert (await bucket(store, WR_WALLET, "wr-wallet")).reserved == 150
    await ccr(app, sid, CcRequestType.TERMINATION_REQUEST, 1, SHOP_D, used=1_000_000)
    wallet = await bucket(store, WR_WALLET, "wr-wallet")
    assert (wallet.available, wallet.reserved, wallet.used) == (50, 0, 100)
    assert await level_amounts(store, SHOP_D_POOL) == [4, 100]
    for payer in (WR_WALLET, SHOP_D_POOL):
        await assert_conserved(store, payer)


async def test_concurrent_end_customers_never_overdraw_the_reseller_pool(
    chain_app: ChargingApplication, chain_store: BalanceStore, redis: RedisClient
) -> None:
    """500 concurrent sessions of two end customers (a pool and a wallet) of one reseller
    whose prepaid pool holds 3 MB; each asks 100 kB and reports 100 kB whatever it got."""
    app, store = chain_app, chain_store
    results = await asyncio.gather(
        *(session(app, SHOP_A if i % 2 else SHOP_B, 100_000, 100_000) for i in range(500))
    )
    granted_total = sum(got for got, _ in results)
    available, reserved, used = await used_of(store, NET_POOL, "net-pool")
    assert 0 < granted_total <= 3 * MB
    assert available >= 0 and reserved == 0 and available + used == 3 * MB
    for payer in (NET_POOL, SHOP_A_POOL, SHOP_B_WALLET):
        await assert_conserved(store, payer)
    tags = (NET_POOL, SHOP_A_POOL, SHOP_B_WALLET)
    assert await audit_redis(redis, tags, int(time.time() * 1000), 60_000) == []


async def test_reclaim_restores_every_level(
    chain_app: ChargingApplication, chain_store: BalanceStore
) -> None:
    app, store = chain_app, chain_store
    answer = await ccr(app, "pgw;ml;lost", CcRequestType.INITIAL_REQUEST, 0, SHOP_A, want=MB)
    assert grant_of(answer) == MB
    assert (await bucket(store, NET_POOL, "net-pool")).reserved == MB
    cfg = app.config
    after = int((time.time() + cfg.validity_time + cfg.reclaim_grace + 1) * 1000)
    assert await store.reclaim_all(after) >= 2  # the shop's and the reseller's reservation
    assert await used_of(store, NET_POOL, "net-pool") == (3 * MB, 0, 0)
    assert await used_of(store, SHOP_A_POOL, "shop-a-pool") == (20 * MB, 0, 0)


async def test_ccr_t_without_usage_releases_every_level(
    chain_app: ChargingApplication, chain_store: BalanceStore
) -> None:
    app, store = chain_app, chain_store
    sid = "pgw;ml;release"
    await ccr(app, sid, CcRequestType.INITIAL_REQUEST, 0, SHOP_A, want=MB)
    await ccr(app, sid, CcRequestType.TERMINATION_REQUEST, 1, SHOP_A, mscc=False)
    assert await used_of(store, NET_POOL, "net-pool") == (3 * MB, 0, 0)
    assert await used_of(store, SHOP_A_POOL, "shop-a-pool") == (20 * MB, 0, 0)


async def test_a_postpaid_reseller_is_checked_against_its_credit_limit_not_held(
    chain_app: ChargingApplication, chain_store: BalanceStore
) -> None:
    app, store = chain_app, chain_store
    sid = "pgw;ml;postpaid"
    answer = await ccr(app, sid, CcRequestType.INITIAL_REQUEST, 0, SHOP_C, want=5 * MB)
    assert grant_of(answer) == MB  # 100 cents of credit at 1 EUR/MB
    credit = await bucket(store, TIGHT, "tight-postpaid:credit")
    assert (credit.available, credit.reserved) == (100, 0)  # not held
    await ccr(app, sid, CcRequestType.TERMINATION_REQUEST, 1, SHOP_C, used=MB)
    credit = await bucket(store, TIGHT, "tight-postpaid:credit")
    assert (credit.available, credit.used) == (0, 100)
    refused = await ccr(app, "pgw;ml;over", CcRequestType.INITIAL_REQUEST, 0, SHOP_C, want=MB)
    assert code_of(refused) == 4012
    for payer in (TIGHT, SHOP_C_POOL):
        await assert_conserved(store, payer)


async def test_an_event_is_debited_and_refunded_at_every_prepaid_level(
    chain_app: ChargingApplication, chain_store: BalanceStore
) -> None:
    """CCR-Event: 10 events on shop-d's events pool, 3 ct each on its reseller's wallet, in
    one call; REFUND_ACCOUNT gives both back. The reseller's data-only pool of shop-a's
    reseller is not concerned by events (no bucket of that unit: passed over)."""
    app, store = chain_app, chain_store

    async def event(sid: str, action: RequestedAction, units: int) -> int:
        answer = await app.handle_ccr(
            wire(
                build_ccr(
                    sid,
                    request_type=4,
                    number=0,
                    imsi=SHOP_D,
                    msccs=[(1, units, 0)],
                    apn=None,
                    requested_action=action,
                    units=True,
                )
            )
        )
        return int(answer.get(A.AVP_RESULT_CODE, 0))

    assert await event("ev;1", RequestedAction.DIRECT_DEBITING, 10) == 2001
    assert await used_of(store, "demo:prepaid_pool:shop-d-events", "shop-d-events") == (990, 0, 10)
    assert await used_of(store, WR_WALLET, "wr-wallet") == (120, 0, 30)
    assert await event("ev;2", RequestedAction.DIRECT_DEBITING, 50) == 4012  # 150 ct > 120
    assert await used_of(store, WR_WALLET, "wr-wallet") == (120, 0, 30)  # nothing moved
    # CHECK_BALANCE looks at every level: 40 events fit (120 ct at the reseller), 41 do not
    for units, verdict in ((40, 0), (41, 1)):  # ENOUGH_CREDIT 0, NO_CREDIT 1
        answer = await app.handle_ccr(
            wire(
                build_ccr(
                    f"ev;check{units}", request_type=4, number=0, imsi=SHOP_D,
                    msccs=[(1, units, 0)], apn=None, units=True,
                    requested_action=RequestedAction.CHECK_BALANCE,
                )
            )
        )  # fmt: skip
        assert answer.get(A.AVP_CHECK_BALANCE_RESULT) == verdict, units
    assert await event("ev;3", RequestedAction.REFUND_ACCOUNT, 10) == 2001
    assert await used_of(store, "demo:prepaid_pool:shop-d-events", "shop-d-events") == (1000, 0, 0)
    assert await used_of(store, WR_WALLET, "wr-wallet") == (150, 0, 0)
    for payer in ("demo:prepaid_pool:shop-d-events", WR_WALLET):
        await assert_conserved(store, payer)


async def test_a_payer_that_pays_two_levels_of_a_usage_is_charged_once(
    chain_app: ChargingApplication, chain_store: BalanceStore
) -> None:
    """A shop's SIM paid by its reseller's own pool: level 0 (retail) and level 1
    (wholesale) name the same pool, which holds and pays the usage once."""
    app, store = chain_app, chain_store
    got, _ = await session(app, ON_RESELLER, want=MB, use=400_000)
    assert got == MB
    assert await used_of(store, NET_POOL, "net-pool") == (2_600_000, 0, 400_000)
    kinds = [r.fields["kind"] for r in await store.records(NET_POOL)]
    assert kinds.count("usage") == 1 and "level" not in kinds
    await assert_conserved(store, NET_POOL)
