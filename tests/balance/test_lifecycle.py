"""Balance lifecycle against a real Redis: auto top-off and adaptive tier steps inside the
charge script, renewals by the lifecycle pass across period boundaries. Time is injected
(``now`` arguments), never slept."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from ocs.balance import BalanceStore
from ocs.balance.keys import LIFECYCLE_EVENTS, PayerKeys
from ocs.lifecycle import Lifecycle, PoolRules
from ocs.lifecycle.rules import topoff_rule
from ocs.lifecycle.signals import RAR, SessionSignals
from ocs.provisioning.payers import lifecycle_rules, provision_catalogue
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import load_catalogue
from ocs.redis_client import RedisClient
from tests.balance.helpers import assert_conserved, by_id, charge

CATALOGUE = """
tenant: {id: t1, home_network: "00101", time_zone: UTC, currency: EUR}
accounts:
  - {id: acme, bill_day: 1, currency: EUR}
addons:
  - {id: boost, currency: EUR, price: 500, service: data, units: 1000, validity_days: 30,
     auto: true, max_per_period: 2}
pools:
  - {id: topped, account: acme, size: 1000, auto_top_off: {addon: boost}}
  - {id: ladder, account: acme, kind: adaptive, size: 1000, tiers: [3000, 6000],
     renewal: {fee: 0}}
  - {id: monthly, account: acme, size: 1000, renewal: {fee: 4900}}
  - {id: bundle, account: acme, size: 1000, renewal: {on: depleted, fee: 100,
     charge_to: wallet, wallet: w1, on_failure: suspend}}
  - {id: lenient, account: acme, size: 1000, renewal: {fee: 300, charge_to: wallet,
     wallet: w2, on_failure: notify}}
  - {id: credit, account: acme, size: 1000, payment: postpaid, credit_limit: 5000,
     renewal: {fee: 300, charge_to: wallet, wallet: w2, on_failure: overage}}
  - {id: drained, account: acme, size: 1000, renewal: {on: depleted, fee: 100,
     charge_to: wallet, wallet: w2, on_failure: overage}}
wallets:
  - {id: w1, account: acme, currency: EUR, balance: 150}
  - {id: w2, account: acme, currency: EUR, balance: 0}
"""


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


T0 = ms("2026-11-10T12:00:00")  # in the period 2026-11-01 .. 2026-12-01 (bill day 1, UTC)
DEC = ms("2026-12-01T00:00:05")  # just past the boundary
TAG = {
    "topped": "t1:prepaid_pool:topped",
    "ladder": "t1:prepaid_pool:ladder",
    "monthly": "t1:prepaid_pool:monthly",
    "bundle": "t1:prepaid_pool:bundle",
    "lenient": "t1:prepaid_pool:lenient",
    "credit": "t1:postpaid_pool:credit",
    "drained": "t1:prepaid_pool:drained",
    "w2": "t1:wallet:w2",
    "w1": "t1:wallet:w1",
}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    folder: Path = tmp_path_factory.mktemp("lifecycle")
    (folder / "catalogue.yaml").write_text(CATALOGUE)
    return load_catalogue(folder)


@pytest.fixture
async def provisioned(store: BalanceStore, catalogue: Catalogue) -> list[PoolRules]:
    await provision_catalogue(store, catalogue, "(test)", now_ms=T0)
    return lifecycle_rules(catalogue)


API = {
    "topoff": ("auto-top-off",),
    "tier": ("tier-step",),
    "renewal": ("renewal", "renewal-paid"),
    "fee": ("renewal-fee",),
}


async def records(store: BalanceStore, tag: str, what: str) -> list[dict[str, Any]]:
    """The payer's lifecycle records of one sort (all are 'adjust' records, by context api)."""
    out = []
    for r in await store.records(tag):
        ctx = json.loads(r.fields.get("ctx") or "{}")
        if r.fields["kind"] == "adjust" and ctx.get("api") in API[what]:
            out.append({**r.fields, "ctx": ctx})
    return out


async def life(redis: RedisClient, tag: str) -> dict[str, Any]:
    state = await Lifecycle(redis).state(tag)
    assert state is not None
    return state


# -- auto top-off -----------------------------------------------------------------------------
async def test_auto_top_off_is_bought_inside_the_reservation_and_capped_per_period(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules]
) -> None:
    tag = TAG["topped"]
    assert (await charge(store, tag, "r1", want=800, now=T0)).granted == 800
    # 200 left cannot cover 800: the add-on is bought in the same script call
    second = await charge(store, tag, "r2", used=800, want=800, now=T0 + 1)
    assert (second.status, second.granted) == ("ok", 800)
    bought = await records(store, tag, "topoff")
    assert len(bought) == 1
    ctx = bought[0]["ctx"]
    assert ctx["api"] == "auto-top-off"
    assert (ctx["addon"], ctx["price"], ctx["currency"], ctx["account"]) == (
        "boost",
        500,
        "EUR",
        "acme",
    )
    assert ctx["cap_period"] == "2026-11-01T00:00:00Z"
    bucket = by_id(await store.buckets(tag))["topped:auto:2026-11-01T00:00:00Z:1"]
    assert bucket.credited == 1000 and bucket.priority == 50
    assert bucket.valid_to == T0 + 1 + 30 * 86_400_000
    # a retransmission is answered from the stored result: nothing bought twice
    again = await charge(store, tag, "r2", used=800, want=800, now=T0 + 1)
    assert again == second
    assert len(await records(store, tag, "topoff")) == 1
    # second purchase, then the cap (2 per period): the normal exhaustion outcome
    assert (await charge(store, tag, "r3", used=800, want=800, now=T0 + 2)).granted == 800
    assert (await charge(store, tag, "r4", used=800, want=800, now=T0 + 3)).granted == 600
    last = await charge(store, tag, "r5", used=600, want=800, now=T0 + 4)
    assert (last.status, last.granted) == ("exhausted", 0)
    assert len(await records(store, tag, "topoff")) == 2
    assert (await life(redis, tag))["top_offs"] == 2

    # across the period boundary the counter restarts (the pass rolls the period)
    report = await Lifecycle(redis).run_once(provisioned, DEC)
    assert report.outcomes["rolled"] == 1
    assert (await life(redis, tag))["period"] == "2026-12-01T00:00:00Z"
    await assert_conserved(store, tag)
    after = await charge(store, tag, "r6", want=800, now=DEC + 1)
    assert (after.status, after.granted) == ("ok", 800)
    bought = await records(store, tag, "topoff")
    assert [r["ctx"]["cap_period"] for r in bought] == [
        "2026-11-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    ]
    assert (await life(redis, tag))["top_offs"] == 1

    # the next roll removes the expired top-off buckets (valid 30 days) without reservations;
    # December's still holds r6's reservation and stays
    await Lifecycle(redis).run_once(provisioned, ms("2027-01-01T00:00:00"))
    ids = set(by_id(await store.buckets(tag)))
    november = {f"topped:auto:2026-11-01T00:00:00Z:{n}" for n in (1, 2)}
    assert not ids & november
    assert "topped:auto:2026-12-01T00:00:00Z:1" in ids
    expired = [
        json.loads(r.fields["ctx"])
        for r in await store.records(tag)
        if '"expire"' in r.fields.get("ctx", "")
    ]
    assert [sorted(e["buckets"]) for e in expired] == [sorted(november)]


async def test_auto_top_off_covers_an_event_debit(
    store: BalanceStore, provisioned: list[PoolRules]
) -> None:
    tag = TAG["topped"]
    assert (await charge(store, tag, "d1", used=900, mode="debit", now=T0)).status == "ok"
    result = await charge(store, tag, "d2", used=500, mode="debit", now=T0 + 1)
    assert (result.status, result.units) == ("ok", 500)
    assert len(await records(store, tag, "topoff")) == 1


async def test_concurrent_reservations_buy_one_top_off_per_need(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules]
) -> None:
    tag = TAG["topped"]
    results = await asyncio.gather(
        *(charge(store, tag, f"c{i}", member=f"s{i}|1", want=600, now=T0 + i) for i in range(4))
    )
    # 1000 + 2 x 1000 bought, cap 2: every purchase was needed and none went past the cap
    assert sum(r.granted for r in results) <= 3000
    assert len(await records(store, tag, "topoff")) == (await life(redis, tag))["top_offs"]
    assert (await life(redis, tag))["top_offs"] <= 2


# -- adaptive tiers -----------------------------------------------------------------------------
async def test_adaptive_pool_steps_up_its_ladder_and_the_last_tier_is_the_cap(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules], catalogue: Catalogue
) -> None:
    tag = TAG["ladder"]
    assert (await life(redis, tag))["tier"] == 0
    assert (await charge(store, tag, "a1", want=900, now=T0)).granted == 900
    assert (await life(redis, tag))["tier"] == 0
    # 100 left cannot cover 900: step to tier 1 (3000)
    assert (await charge(store, tag, "a2", used=900, want=900, now=T0 + 1)).granted == 900
    state = await life(redis, tag)
    assert (state["tier"], state["tier_size"], state["tiers"]) == (1, 3000, [1000, 3000, 6000])
    assert by_id(await store.buckets(tag))["ladder"].credited == 3000
    # a big request crosses into the last tier; beyond it the pool is exhausted
    assert (await charge(store, tag, "a3", used=900, want=4000, now=T0 + 2)).granted == 4000
    assert (await life(redis, tag))["tier"] == 2
    assert (await charge(store, tag, "a4", used=4000, want=900, now=T0 + 3)).granted == 200
    end = await charge(store, tag, "a5", used=200, want=900, now=T0 + 4)
    assert (end.status, end.granted) == ("exhausted", 0)
    steps = [r["ctx"] for r in await records(store, tag, "tier")]
    assert [(s["tier"], s["size"], s["api"]) for s in steps] == [
        (1, 3000, "tier-step"),
        (2, 6000, "tier-step"),
    ]
    # re-applying the catalogue keeps the tier reached (lifecycle credits are not resized)
    await provision_catalogue(store, catalogue, "(test)", now_ms=T0 + 5)
    assert by_id(await store.buckets(tag))["ladder"].credited == 6000
    assert (await life(redis, tag))["tier"] == 2
    # the next period starts again at tier 0
    await Lifecycle(redis).run_once(provisioned, DEC)
    assert (await life(redis, tag))["tier"] == 0
    ladder = by_id(await store.buckets(tag))["ladder"]
    assert ladder.available + ladder.reserved == 1000


# -- renewal -----------------------------------------------------------------------------------
async def test_period_end_renewal_charges_the_invoice_once_with_many_workers(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules]
) -> None:
    tag = TAG["monthly"]
    await charge(store, tag, "m1", want=700, now=T0)
    await charge(store, tag, "m2", used=700, want=200, now=T0 + 1)  # 100 left, 200 reserved
    before = await Lifecycle(redis).run_once(provisioned, DEC - 10_000)
    assert before.outcomes["renewed"] == 0  # not yet: nothing is renewed early
    workers = [Lifecycle(redis) for _ in range(6)]
    reports = await asyncio.gather(*(w.run_once(provisioned, DEC) for w in workers))
    renewed = await records(store, tag, "renewal")
    assert len(renewed) == 1
    done: Counter[str] = Counter()
    for r in reports:
        done.update({k: v for k, v in r.outcomes.items() if k != "already"})
    # each pool's period acted on once: renewed (ladder, monthly, bundle), rolled (no
    # renewal rule), renewed unpaid (wallet empty, notify), overage (wallet empty)
    assert done == {"renewed": 3, "rolled": 1, "renewed_unpaid": 1, "overage": 2}
    ctx = renewed[0]["ctx"]
    assert (ctx["api"], ctx["price"], ctx["currency"], ctx["billed"]) == (
        "renewal",
        4900,
        "EUR",
        "invoice",
    )
    # the fee pays for the period the renewal starts
    assert (ctx["ended"], ctx["period"]) == ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
    bucket = by_id(await store.buckets(tag))["monthly"]
    # no rollover: available + reserved is the size again; conservation holds
    assert (bucket.available, bucket.reserved) == (800, 200)
    assert bucket.credited == bucket.available + bucket.reserved + bucket.used
    await assert_conserved(store, tag)
    # the next boundary renews again, once
    jan = ms("2027-01-01T00:00:00")
    await Lifecycle(redis).run_once(provisioned, jan)
    await Lifecycle(redis).run_once(provisioned, jan + 1)
    assert [r["ctx"]["period"] for r in await records(store, tag, "renewal")] == [
        "2026-12-01T00:00:00Z",
        "2027-01-01T00:00:00Z",
    ]


async def test_depleted_bundle_renews_from_its_wallet_then_suspends_when_unpaid(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules]
) -> None:
    tag, wallet = TAG["bundle"], TAG["w1"]
    lifecycle = Lifecycle(redis)
    assert (await charge(store, tag, "b1", want=1000, now=T0)).granted == 1000
    await charge(store, tag, "b2", used=1000, now=T0 + 1)
    # depleted: renewed now, fee (100) debited from the wallet, a new period starts now
    report = await lifecycle.run_once(provisioned, T0 + 2)
    assert report.outcomes["renewed"] == 1
    assert by_id(await store.buckets(wallet))["w1"].available == 50
    fee = await records(store, wallet, "fee")
    assert [(f["money"], f["alloc"], f["ctx"]["api"], f["ctx"]["pool"]) for f in fee] == [
        ("100", '[["w1","-100"]]', "renewal-fee", "bundle")
    ]
    await assert_conserved(store, wallet)  # a negative credit: credited = available + used
    # the pool's renewal record says it was paid from the wallet: not for the invoice
    [renewal] = [r["ctx"] for r in await records(store, tag, "renewal")]
    assert (renewal["api"], renewal["billed"], renewal["due"]) == (
        "renewal-paid",
        "wallet",
        "depleted",
    )
    state = await life(redis, tag)
    assert state["period"] == "2026-11-10T12:00:00Z"  # the renewal time
    assert by_id(await store.buckets(tag))["bundle"].available == 1000
    # a second pass has nothing to do
    assert (await lifecycle.run_once(provisioned, T0 + 3)).outcomes["renewed"] == 0

    # used up again; the wallet (50) cannot pay 100: suspended, notified once
    await charge(store, tag, "b3", want=1000, now=T0 + 4)
    await charge(store, tag, "b4", used=1000, now=T0 + 5)
    first = await lifecycle.run_once(provisioned, T0 + 6)
    assert first.outcomes["suspended"] == 1
    assert [e["outcome"] for e in first.events] == ["suspended"]
    second = await lifecycle.run_once(provisioned, T0 + 7)
    assert second.outcomes["suspended"] == 1 and second.events == []
    events = await redis.xrange(LIFECYCLE_EVENTS)
    assert len(events) == 1
    assert (await life(redis, tag))["suspended"] is True
    # a suspended pool grants nothing, even after the wallet gets money...
    await store.adjust(wallet, "topup-1", [{"op": "credit", "id": "w1", "amount": 500}], T0 + 8)
    blocked = await charge(store, tag, "b5", want=10, now=T0 + 8)
    assert (blocked.status, blocked.granted) == ("exhausted", 0)
    # ...until the next pass takes the fee and renews
    assert (await lifecycle.run_once(provisioned, T0 + 9)).outcomes["renewed"] == 1
    assert (await life(redis, tag))["suspended"] is False
    assert (await charge(store, tag, "b6", want=10, now=T0 + 10)).granted == 10
    assert by_id(await store.buckets(wallet))["w1"].available == 450


async def test_unpaid_renewal_notify_renews_on_the_invoice_and_overage_rolls_the_period(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules]
) -> None:
    await charge(store, TAG["lenient"], "l1", want=1000, now=T0)
    await charge(store, TAG["lenient"], "l2", used=1000, now=T0 + 1)
    await charge(store, TAG["credit"], "o1", used=1000, mode="debit", now=T0)
    report = await Lifecycle(redis).run_once(provisioned, DEC)
    assert report.outcomes["renewed_unpaid"] == 1 and report.outcomes["overage"] == 2
    assert sorted(e["pool"] for e in report.events) == ["credit", "drained", "lenient"]
    lenient = (await records(store, TAG["lenient"], "renewal"))[0]["ctx"]
    assert (lenient["billed"], lenient["fallback"], lenient["price"]) == ("invoice", "unpaid", 300)
    assert by_id(await store.buckets(TAG["lenient"]))["lenient"].available == 1000
    # overage: the period rolled without a new allowance; usage goes on the credit bucket
    assert (await life(redis, TAG["credit"]))["period"] == "2026-12-01T00:00:00Z"
    assert await records(store, TAG["credit"], "renewal") == []
    assert by_id(await store.buckets(TAG["credit"]))["credit"].available == 0
    # a second pass in the same period does nothing more
    again = await Lifecycle(redis).run_once(provisioned, DEC + 1)
    assert again.events == [] and again.outcomes["renewed_unpaid"] == 0


async def test_a_held_pool_renewal_retried_by_two_workers_takes_the_fee_once(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules]
) -> None:
    tag, wallet = TAG["bundle"], TAG["w1"]
    await charge(store, tag, "h1", want=1000, now=T0)
    await charge(store, tag, "h2", used=1000, now=T0 + 1)
    await asyncio.gather(*(Lifecycle(redis).run_once(provisioned, T0 + 2) for _ in range(5)))
    assert len(await records(store, wallet, "fee")) == 1
    assert len(await records(store, tag, "renewal")) == 1
    assert by_id(await store.buckets(wallet))["w1"].available == 50


async def test_lifecycle_shows_in_balance_state(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules]
) -> None:
    raw = await redis.hgetall(PayerKeys(TAG["ladder"]).lifecycle)
    assert raw  # provisioned by the catalogue apply
    state = await life(redis, TAG["ladder"])
    assert state == {
        "period": "2026-11-01T00:00:00Z",
        "period_end": ms("2026-12-01T00:00:00"),
        "top_offs": 0,
        "suspended": False,
        "auto_top_off": None,
        "tier": 0,
        "tier_size": 1000,
        "tiers": [1000, 3000, 6000],
    }
    assert await Lifecycle(redis).state(TAG["w1"]) is None


async def test_the_api_setting_overrides_the_catalogue_top_off_and_survives_a_reapply(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules], catalogue: Catalogue
) -> None:
    lifecycle = Lifecycle(redis)
    assert (await life(redis, TAG["topped"]))["auto_top_off"] == {
        "addon": "boost",
        "cap": 2,
        "threshold_percent": 0,
        "source": "catalogue",
    }
    await lifecycle.set_api_top_off(TAG["topped"], None)  # disabled over the API
    await provision_catalogue(store, catalogue, "(test)", now_ms=T0 + 1)
    assert (await life(redis, TAG["topped"]))["auto_top_off"] is None
    await charge(store, TAG["topped"], "x1", want=1000, now=T0 + 2)
    last = await charge(store, TAG["topped"], "x2", used=1000, want=10, now=T0 + 3)
    assert (last.status, last.granted) == ("exhausted", 0)
    assert await records(store, TAG["topped"], "topoff") == []
    # enabled over the API on a pool the catalogue gives none: bought, with the API's cap
    pool = catalogue.pools["monthly"]
    await lifecycle.set_api_top_off(TAG["monthly"], topoff_rule(pool, catalogue.addons["boost"], 1))
    await charge(store, TAG["monthly"], "y1", want=1000, now=T0 + 4)
    more = await charge(store, TAG["monthly"], "y2", used=1000, want=10, now=T0 + 5)
    assert (more.status, more.granted) == ("ok", 10)
    assert (await life(redis, TAG["monthly"]))["auto_top_off"] == {
        "addon": "boost",
        "cap": 1,
        "threshold_percent": 0,
        "source": "api",
    }
    assert len(await records(store, TAG["monthly"], "topoff")) == 1


async def test_depleted_bundle_left_unpaid_with_overage_keeps_its_period_until_paid(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules]
) -> None:
    tag, wallet = TAG["drained"], TAG["w2"]
    lifecycle = Lifecycle(redis)
    await charge(store, tag, "d1", want=1000, now=T0)
    await charge(store, tag, "d2", used=1000, now=T0 + 1)
    first = await lifecycle.run_once(provisioned, T0 + 2)
    assert first.outcomes["overage"] == 1
    assert [(e["pool"], e["outcome"]) for e in first.events] == [("drained", "overage")]
    # the period goes on without an allowance; later passes retry quietly
    second = await lifecycle.run_once(provisioned, T0 + 3)
    assert second.outcomes["overage"] == 1 and second.events == []
    assert (await life(redis, tag))["period"] == "2026-11-01T00:00:00Z"
    assert await records(store, tag, "renewal") == []
    # money arrives: the next pass takes the fee and starts a new period now
    await store.adjust(wallet, "topup-2", [{"op": "credit", "id": "w2", "amount": 100}], T0 + 4)
    assert (await lifecycle.run_once(provisioned, T0 + 5)).outcomes["renewed"] == 1
    assert (await life(redis, tag))["period"] == "2026-11-10T12:00:00Z"
    assert by_id(await store.buckets(tag))["drained"].available == 1000
    assert by_id(await store.buckets(wallet))["w2"].available == 0


# -- auto top-off threshold (threshold_percent) -------------------------------------------------
async def test_threshold_top_off_is_bought_below_the_threshold_once_per_need_and_capped(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules], catalogue: Catalogue
) -> None:
    tag = TAG["monthly"]  # 1,000 units; the add-on: 1,000 units, cap 2; threshold 30 %: 300
    rule = topoff_rule(catalogue.pools["monthly"], catalogue.addons["boost"], 2, 30)
    await Lifecycle(redis).set_api_top_off(tag, rule)
    assert (await life(redis, tag))["auto_top_off"] == {
        "addon": "boost",
        "cap": 2,
        "threshold_percent": 30,
        "source": "api",
    }
    # at the threshold (300 left) is not below it: nothing bought
    first = await charge(store, tag, "t1", want=700, now=T0)
    assert (first.granted, first.left) == (700, 300)
    assert await records(store, tag, "topoff") == []
    # 299 left: bought in the same call that reserved, long before exhaustion
    second = await charge(store, tag, "t2", used=700, want=1, now=T0 + 1)
    assert (second.status, second.granted, second.left) == ("ok", 1, 1299)
    [bought] = await records(store, tag, "topoff")
    assert (bought["ctx"]["api"], bought["ctx"]["threshold"], bought["ctx"]["count"]) == (
        "auto-top-off",
        300,
        1,
    )
    assert await charge(store, tag, "t2", used=700, want=1, now=T0 + 1) == second  # replay
    # above the threshold again: once per need, not once per call
    third = await charge(store, tag, "t3", used=1, want=500, now=T0 + 2)
    assert (third.granted, third.left) == (500, 799)
    assert len(await records(store, tag, "topoff")) == 1
    # a catalogue re-apply rewrites the bucket definitions: the threshold stays in force
    await provision_catalogue(store, catalogue, "(test)", now_ms=T0 + 3)
    fourth = await charge(store, tag, "t4", used=500, want=600, now=T0 + 4)
    assert (fourth.granted, fourth.left) == (600, 1199)
    assert len(await records(store, tag, "topoff")) == 2
    # the cap (2 a period): below the threshold, nothing more is bought...
    fifth = await charge(store, tag, "t5", used=600, want=1000, now=T0 + 5)
    assert (fifth.granted, fifth.left) == (1000, 199)
    assert len(await records(store, tag, "topoff")) == 2
    # ...and the pool runs out as without a threshold
    sixth = await charge(store, tag, "t6", used=1000, want=199, now=T0 + 6)
    assert (sixth.granted, sixth.left) == (199, 0)
    last = await charge(store, tag, "t7", used=199, want=10, now=T0 + 7)
    assert (last.status, last.granted) == ("exhausted", 0)
    assert (await life(redis, tag))["top_offs"] == 2
    await assert_conserved(store, tag)


async def test_threshold_off_unmarks_the_pool_and_purchases_wait_for_a_shortfall(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules], catalogue: Catalogue
) -> None:
    tag = TAG["monthly"]
    lifecycle = Lifecycle(redis)
    pool, addon = catalogue.pools["monthly"], catalogue.addons["boost"]
    await lifecycle.set_api_top_off(tag, topoff_rule(pool, addon, 2, 50))
    definition = json.loads(await redis.hget(PayerKeys(tag).buckets, "monthly") or "{}")
    assert definition["thr"] == 500
    await lifecycle.set_api_top_off(tag, topoff_rule(pool, addon, 2))  # threshold 0
    definition = json.loads(await redis.hget(PayerKeys(tag).buckets, "monthly") or "{}")
    assert "thr" not in definition
    low = await charge(store, tag, "u1", want=900, now=T0)
    assert (low.granted, low.left) == (900, 100)
    assert await records(store, tag, "topoff") == []
    # short: bought when the request cannot be covered, as before
    short = await charge(store, tag, "u2", used=900, want=200, now=T0 + 1)
    assert (short.granted, short.left) == (200, 900)
    assert len(await records(store, tag, "topoff")) == 1


async def test_threshold_on_an_adaptive_pool_waits_for_its_last_tier(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules], catalogue: Catalogue
) -> None:
    tag = TAG["ladder"]  # 1,000 -> 3,000 -> 6,000; threshold 10 % of the top tier: 600
    rule = topoff_rule(catalogue.pools["ladder"], catalogue.addons["boost"], 2, 10)
    await Lifecycle(redis).set_api_top_off(tag, rule)
    assert (await charge(store, tag, "a1", want=500, now=T0)).left == 500
    # below 600 but tiers are left: the ladder comes first, at a shortfall
    assert await records(store, tag, "topoff") == []
    assert (await charge(store, tag, "a2", used=500, want=1000, now=T0 + 1)).left == 1500
    assert (await charge(store, tag, "a3", used=1000, want=1400, now=T0 + 2)).left == 100
    assert (await charge(store, tag, "a4", used=1400, want=500, now=T0 + 3)).left == 2600
    assert (await life(redis, tag))["tier"] == 2 and await records(store, tag, "topoff") == []
    # at the last tier, below 600: the add-on is bought
    assert (await charge(store, tag, "a5", used=500, want=2100, now=T0 + 4)).left == 1500
    assert len(await records(store, tag, "topoff")) == 1
    await assert_conserved(store, tag)


async def test_a_catalogue_re_apply_keeps_a_suspended_pool_on_hold(
    store: BalanceStore, redis: RedisClient, provisioned: list[PoolRules], tmp_path: Path
) -> None:
    tag = TAG["bundle"]
    lifecycle = Lifecycle(redis)
    for n in range(2):  # renewed once from the wallet (150 - 100), then it cannot pay
        await charge(store, tag, f"k{n}a", want=1000, now=T0 + 10 * n)
        await charge(store, tag, f"k{n}b", used=1000, now=T0 + 10 * n + 1)
        await lifecycle.run_once(provisioned, T0 + 10 * n + 2)
    assert (await life(redis, tag))["suspended"] is True
    # the operator enlarges the pool: the re-apply rewrites its bucket and credits 1,000
    bigger = tmp_path / "bigger"
    bigger.mkdir()
    old = "{id: bundle, account: acme, size: 1000,"
    (bigger / "catalogue.yaml").write_text(CATALOGUE.replace(old, old.replace("1000", "2000")))
    await provision_catalogue(store, load_catalogue(bigger), "(test)", now_ms=T0 + 30)
    assert by_id(await store.buckets(tag))["bundle"].available == 1000
    blocked = await charge(store, tag, "k3", want=10, now=T0 + 31)
    assert (blocked.status, blocked.granted) == ("exhausted", 0)


async def test_signals_to_an_unreachable_redis_are_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gone = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=1)
    try:
        sent = await SessionSignals(gone).send({RAR: [("demo", "001010000000001", None)]})
    finally:
        await gone.aclose()
    assert sent == {}
    assert "lifecycle rar to the pools' sessions not sent" in caplog.text
