from __future__ import annotations

from ocs.balance import BalanceStore, BucketSpec, BucketUnit, Rate
from tests.balance.helpers import DEADLINE, NOW, assert_conserved, by_id, charge

POOL = "t:prepaid_pool:p1"
WALLET = "t:wallet:w1"


async def test_reserve_commit_release_moves_units_and_writes_one_record(
    store: BalanceStore,
) -> None:
    await store.provision(POOL, [BucketSpec("pool", BucketUnit.BYTES, 10_000)], NOW, resize=True)
    first = await charge(store, POOL, "s1:0:1", want=1_000)
    assert (first.status, first.granted, first.left, first.live) == ("ok", 1_000, 9_000, 1)
    b = by_id(await store.buckets(POOL))["pool"]
    assert (b.available, b.reserved, b.used) == (9_000, 1_000, 0)

    update = await charge(store, POOL, "s1:1:1", used=600, want=1_000)
    assert (update.units, update.granted) == (600, 1_000)
    b = by_id(await store.buckets(POOL))["pool"]
    assert (b.available, b.reserved, b.used) == (8_400, 1_000, 600)

    final = await charge(store, POOL, "s1:2:1", used=300)
    assert (final.units, final.granted, final.live) == (300, 0, 0)
    b = by_id(await store.buckets(POOL))["pool"]
    assert (b.available, b.reserved, b.used) == (9_100, 0, 900)
    records = [r for r in await store.records(POOL) if r.fields["kind"] == "usage"]
    assert [int(r.fields["units"]) for r in records] == [600, 300]
    assert records[0].fields["id"] == "s1:1:1"
    await assert_conserved(store, POOL)


async def test_retransmitted_request_gets_the_same_answer_and_is_charged_once(
    store: BalanceStore,
) -> None:
    await store.provision(POOL, [BucketSpec("pool", BucketUnit.BYTES, 10_000)], NOW, resize=True)
    await charge(store, POOL, "s1:0:1", want=1_000)
    first = await charge(store, POOL, "s1:1:1", used=1_000, want=1_000)
    again = [await charge(store, POOL, "s1:1:1", used=1_000, want=1_000) for _ in range(5)]
    assert all(r == first for r in again)
    b = by_id(await store.buckets(POOL))["pool"]
    assert (b.available, b.reserved, b.used) == (8_000, 1_000, 1_000)
    assert len(await store.records(POOL)) == 2  # provision + one usage
    await assert_conserved(store, POOL)


async def test_stacked_buckets_are_consumed_by_priority_then_expiry(store: BalanceStore) -> None:
    payer = "t:prepaid_pool:stacked"
    await store.provision(
        payer,
        [
            BucketSpec("parent", BucketUnit.BYTES, 1_000, priority=2),
            BucketSpec("sim", BucketUnit.BYTES, 300, priority=0),
            BucketSpec("topoff-late", BucketUnit.BYTES, 500, priority=1, valid_to=NOW + 10**9),
            BucketSpec("topoff-soon", BucketUnit.BYTES, 500, priority=1, valid_to=NOW + 10**6),
            BucketSpec("expired", BucketUnit.BYTES, 9_999, priority=0, valid_to=NOW - 1),
            BucketSpec("future", BucketUnit.BYTES, 9_999, priority=0, valid_from=NOW + 1),
        ],
        NOW,
        resize=True,
    )
    result = await charge(store, payer, "a", used=1_500, mode="debit")
    assert (result.status, result.units) == ("ok", 1_500)
    b = by_id(await store.buckets(payer))
    assert b["sim"].used == 300
    assert b["topoff-soon"].used == 500
    assert b["topoff-late"].used == 500
    assert b["parent"].used == 200
    assert b["expired"].used == b["future"].used == 0
    await assert_conserved(store, payer)


async def test_wallet_money_is_reserved_at_the_rate_and_charged_for_used_units(
    store: BalanceStore,
) -> None:
    # 1,000 minor units; 1 minor unit per 1,000 bytes
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 1_000)], NOW, resize=False)
    rate = Rate(1, 1_000)
    grant = await charge(store, WALLET, "w:0:1", want=400_000, rate=rate)
    assert (grant.granted, grant.money) == (400_000, 400)
    used = await charge(store, WALLET, "w:1:1", used=150_500, rate=rate)
    assert (used.units, used.cost) == (150_500, 151)  # rounded up
    b = by_id(await store.buckets(WALLET))["eur"]
    assert (b.available, b.reserved, b.used) == (849, 0, 151)
    # what is left buys 849,000 bytes, no more
    big = await charge(store, WALLET, "w2:0:1", member="s2|1", want=10**9, rate=rate)
    assert big.granted == 849_000
    none = await charge(store, WALLET, "w3:0:1", member="s3|1", want=10**9, rate=rate)
    assert (none.status, none.granted) == ("exhausted", 0)
    await assert_conserved(store, WALLET)


async def test_money_buckets_are_not_used_for_unpriced_requests(store: BalanceStore) -> None:
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 1_000)], NOW, resize=False)
    result = await charge(store, WALLET, "x", want=1_000)
    assert (result.status, result.granted) == ("exhausted", 0)


async def test_postpaid_pool_overage_uses_the_credit_limit_after_the_pool(
    store: BalanceStore,
) -> None:
    payer = "t:postpaid_pool:pp"
    await store.provision(
        payer,
        [
            BucketSpec("pool", BucketUnit.BYTES, 1_000),
            BucketSpec("credit", BucketUnit.MONEY, 50, priority=10),
        ],
        NOW,
        resize=True,
    )
    rate = Rate(1, 100)  # one minor unit per 100 bytes of overage
    result = await charge(store, payer, "a", used=4_000, mode="debit", rate=rate)
    assert (result.status, result.units, result.cost) == ("ok", 4_000, 30)
    refused = await charge(store, payer, "b", used=3_000, mode="debit", rate=rate)
    assert (refused.status, refused.units) == ("insufficient", 0)
    b = by_id(await store.buckets(payer))
    assert (b["pool"].available, b["credit"].available) == (0, 20)
    await assert_conserved(store, payer)


async def test_unlimited_bucket_grants_everything_and_counts_usage(store: BalanceStore) -> None:
    payer = "t:external_contract:c1"
    await store.provision(
        payer, [BucketSpec("contract", BucketUnit.BYTES, 0, unlimited=True)], NOW, resize=True
    )
    grant = await charge(store, payer, "a", want=5_000)
    assert (grant.granted, grant.left) == (5_000, -1)
    await charge(store, payer, "b", used=4_000)
    b = by_id(await store.buckets(payer))["contract"]
    assert (b.used, b.reserved) == (4_000, 0)


async def test_grants_shrink_to_a_fair_share_near_exhaustion(store: BalanceStore) -> None:
    await store.provision(POOL, [BucketSpec("pool", BucketUnit.BYTES, 10_000)], NOW, resize=True)
    grants = [
        (
            await charge(store, POOL, f"s{i}:0:1", member=f"s{i}|1", want=4_000, min_grant=100)
        ).granted
        for i in range(6)
    ]
    # plenty for the first; then each new session gets available / (live + 1)
    assert grants == [4_000, 3_000, 1_000, 500, 300, 200]
    assert sum(grants) <= 10_000
    await assert_conserved(store, POOL)


async def test_expired_reservations_are_reclaimed_and_late_usage_is_still_recorded(
    store: BalanceStore,
) -> None:
    await store.provision(POOL, [BucketSpec("pool", BucketUnit.BYTES, 10_000)], NOW, resize=True)
    await charge(store, POOL, "a:0", member="a|1", want=1_000, deadline=NOW + 1_000)
    await charge(store, POOL, "b:0", member="b|1", want=1_000, deadline=NOW + 5_000)
    assert await store.reclaim(POOL, NOW + 2_000) == 1
    b = by_id(await store.buckets(POOL))["pool"]
    assert (b.available, b.reserved) == (9_000, 1_000)
    assert await store.live_reservations(POOL) == 1
    # the gateway of session a reports usage after the reclaim: charged from available
    late = await charge(store, POOL, "a:1", member="a|1", used=700)
    assert (late.status, late.units) == ("no_reservation", 700)
    assert await store.reclaim_all(NOW + 10_000) == 1
    b = by_id(await store.buckets(POOL))["pool"]
    assert (b.available, b.reserved, b.used) == (9_300, 0, 700)
    await assert_conserved(store, POOL)


async def test_refund_and_credit_are_recorded_and_keep_the_books(store: BalanceStore) -> None:
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 1_000)], NOW, resize=False)
    await charge(
        store, WALLET, "sms", used=1, mode="debit", rate=Rate(9, 1), unit=BucketUnit.MESSAGES
    )
    assert (
        await store.adjust(WALLET, "r1", [{"op": "refund", "unit": "money", "amount": 9}], NOW)
        == "ok"
    )
    assert (
        await store.adjust(WALLET, "r1", [{"op": "refund", "unit": "money", "amount": 9}], NOW)
        == "ok"
    )
    await store.adjust(WALLET, "top", [{"op": "credit", "id": "eur", "amount": 500}], NOW)
    b = by_id(await store.buckets(WALLET))["eur"]
    assert (b.available, b.used, b.credited) == (1_500, 0, 1_500)
    assert (
        await store.adjust(WALLET, "r2", [{"op": "refund", "unit": "bytes", "amount": 1}], NOW)
        == "no_bucket"
    )
    await assert_conserved(store, WALLET)


async def test_provision_resizes_pools_but_keeps_wallet_balances(store: BalanceStore) -> None:
    await store.provision(POOL, [BucketSpec("pool", BucketUnit.BYTES, 10_000)], NOW, resize=True)
    await charge(store, POOL, "a", used=2_000, mode="debit")
    await store.provision(POOL, [BucketSpec("pool", BucketUnit.BYTES, 6_000)], NOW, resize=True)
    b = by_id(await store.buckets(POOL))["pool"]
    assert (b.credited, b.available, b.used) == (6_000, 4_000, 2_000)
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 1_000)], NOW, resize=False)
    await store.adjust(WALLET, "top", [{"op": "credit", "id": "eur", "amount": 500}], NOW)
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 1_000)], NOW, resize=False)
    assert by_id(await store.buckets(WALLET))["eur"].available == 1_500
    await assert_conserved(store, POOL)
    assert DEADLINE > NOW
