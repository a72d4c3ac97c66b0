"""Multi-level (B2B2B) charges in one ``charge.lua`` call: every prepaid level holds the grant,
the grant is the smallest any level allows, commit/release/reclaim act on every level, a
postpaid level is checked (credit limit), not held. Real Redis, single server and cluster."""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot
from redis.exceptions import ResponseError

from ocs.balance import BalanceStore, BucketSpec, BucketUnit, ChargeRequest, ChargeResult, Rate
from ocs.balance.keys import PAYER_SLOTS, PayerKeys
from ocs.balance.models import NOT_PRICED, LevelCharge
from tests.balance.helpers import DEADLINE, NOW, assert_conserved, by_id

ROOT = "t:prepaid_pool:reseller"
SHOP_A = "t:prepaid_pool:shop-a"
SHOP_B = "t:wallet:shop-b"
POSTPAID = "t:postpaid_pool:tight"
SHOP_C = "t:prepaid_pool:shop-c"
UP = (LevelCharge(ROOT, True),)


async def provision(store: BalanceStore, reseller_size: int = 3_000) -> None:
    await store.provision(ROOT, [BucketSpec("reseller", BucketUnit.BYTES, reseller_size)], NOW,
                          resize=True)  # fmt: skip
    await store.provision(SHOP_A, [BucketSpec("shop-a", BucketUnit.BYTES, 10_000)], NOW,
                          resize=True, root=ROOT)  # fmt: skip
    await store.provision(SHOP_B, [BucketSpec("shop-b", BucketUnit.MONEY, 1_000_000)], NOW,
                          resize=False, root=ROOT)  # fmt: skip


async def charge(
    store: BalanceStore,
    payer: str,
    rid: str,
    *,
    member: str = "s1|1",
    used: int = 0,
    want: int = 0,
    levels: tuple[LevelCharge, ...] = UP,
    root: str = ROOT,
    rate: Rate = NOT_PRICED,
    price: int | None = None,
    mode: str = "session",
    min_grant: int = 0,
) -> ChargeResult:
    return await store.charge(
        payer,
        ChargeRequest(
            request_id=rid,
            member=member,
            unit=BucketUnit.BYTES,
            now_ms=NOW,
            used=used,
            want=want,
            min_grant=min_grant,
            rate=rate,
            deadline_ms=DEADLINE,
            mode=mode,
            context={"test": rid},
            price=price,
            root=root,
            levels=levels,
        ),
    )


async def test_the_payers_of_a_chain_share_the_roots_slot(store: BalanceStore) -> None:
    await provision(store)
    assert await store.redis.hget(PAYER_SLOTS, SHOP_A) in (ROOT, ROOT.encode())
    assert await store.redis.hget(PAYER_SLOTS, ROOT) is None  # the root keeps its own keys
    slots = set()
    for k in (PayerKeys(ROOT), PayerKeys(SHOP_A, ROOT), PayerKeys(SHOP_B, ROOT)):
        slots |= {key_slot(key.encode()) for key in (*k.moved, k.done("r"))}
    assert len(slots) == 1
    assert (
        PayerKeys(SHOP_A, ROOT).buckets
        == "ocs:{t:prepaid_pool:reseller}:{t:prepaid_pool:shop-a}:buckets"
    )
    assert [b.id for b in await store.buckets(SHOP_A)] == ["shop-a"]  # found via the registry


async def test_the_grant_is_the_smallest_any_level_allows(store: BalanceStore) -> None:
    await provision(store)
    result = await charge(store, SHOP_A, "a:0:1", want=5_000)
    assert (result.status, result.granted) == ("ok", 3_000)  # the reseller has 3,000
    assert by_id(await store.buckets(SHOP_A))["shop-a"].reserved == 3_000
    assert by_id(await store.buckets(ROOT))["reseller"].reserved == 3_000
    assert result.left == 0 and result.levels[0].left == 0  # final units: a level is out
    second = await charge(store, SHOP_A, "b:0:1", member="s2|1", want=100)
    assert (second.status, second.granted) == ("exhausted", 0)  # the reseller holds nothing
    assert by_id(await store.buckets(SHOP_A))["shop-a"].reserved == 3_000


async def test_commit_and_release_act_on_every_level(store: BalanceStore) -> None:
    await provision(store)
    await charge(store, SHOP_A, "a:0:1", want=2_000)
    result = await charge(store, SHOP_A, "a:1:1", used=1_500, want=0)
    assert result.units == 1_500 and result.levels[0].units == 1_500
    shop, reseller = (
        by_id(await store.buckets(SHOP_A))["shop-a"],
        by_id(await store.buckets(ROOT))["reseller"],
    )
    assert (shop.reserved, shop.used, shop.available) == (0, 1_500, 8_500)
    assert (reseller.reserved, reseller.used, reseller.available) == (0, 1_500, 1_500)
    assert await store.live_reservations(ROOT) == 0
    levels = [r for r in await store.records(ROOT) if r.fields["kind"] != "adjust"]
    assert [r.fields["kind"] for r in levels] == ["level"]  # adjust: the provisioning
    level = levels[0]
    assert (level.fields["id"], level.fields["payer"], level.alloc) == (
        "a:1:1#1",
        ROOT,
        [("reseller", 1_500)],
    )
    for payer in (SHOP_A, ROOT):
        await assert_conserved(store, payer)


async def test_usage_beyond_the_grant_is_taken_at_every_level(store: BalanceStore) -> None:
    await provision(store, reseller_size=1_000)
    await charge(store, SHOP_A, "a:0:1", want=800)
    result = await charge(store, SHOP_A, "a:1:1", used=1_200)  # 400 over the grant
    assert result.units == 1_200
    assert (result.levels[0].units, result.levels[0].overrun) == (1_000, 200)
    assert by_id(await store.buckets(ROOT))["reseller"].available == 0
    for payer in (SHOP_A, ROOT):
        await assert_conserved(store, payer)


async def test_reclaim_restores_every_level(store: BalanceStore) -> None:
    await provision(store)
    await charge(store, SHOP_A, "a:0:1", want=2_000)
    assert await store.reclaim_all(DEADLINE + 1) == 2  # the shop's and the reseller's
    for payer, bid, size in ((SHOP_A, "shop-a", 10_000), (ROOT, "reseller", 3_000)):
        b = by_id(await store.buckets(payer))[bid]
        assert (b.available, b.reserved, b.used) == (size, 0, 0)
        assert await store.live_reservations(payer) == 0
    late = await charge(store, SHOP_A, "a:1:1", used=500)  # a CCR-U after the reclaim
    assert late.status == "no_reservation" and late.levels[0].units == 500
    for payer in (SHOP_A, ROOT):
        await assert_conserved(store, payer)


async def test_a_wallet_level_is_debited_its_exact_price(store: BalanceStore) -> None:
    await provision(store)
    wallet_up = (LevelCharge(SHOP_B, True, Rate(3, 1_000), None),)
    # shop-a's pool pays level 0; its usage is also charged to a wallet above it
    await charge(store, SHOP_A, "a:0:1", want=2_000, levels=wallet_up)
    assert by_id(await store.buckets(SHOP_B))["shop-b"].reserved == 6  # ceil(2000 * 3/1000)
    priced = (LevelCharge(SHOP_B, True, Rate(3, 1_000), 4),)  # the level's price: 4
    result = await charge(store, SHOP_A, "a:1:1", used=1_500, levels=priced)
    wallet = by_id(await store.buckets(SHOP_B))["shop-b"]
    assert (wallet.used, wallet.reserved, result.levels[0].money) == (4, 0, 4)
    await assert_conserved(store, SHOP_B)


async def test_a_postpaid_level_is_checked_not_reserved(store: BalanceStore) -> None:
    await store.provision(
        POSTPAID,
        [
            BucketSpec("tight", BucketUnit.BYTES, 0),
            BucketSpec("tight:credit", BucketUnit.MONEY, 100, priority=100),
        ],
        NOW,
        resize=True,
    )
    await store.provision(SHOP_C, [BucketSpec("shop-c", BucketUnit.BYTES, 10**6)], NOW,
                          resize=True, root=POSTPAID)  # fmt: skip
    up = (LevelCharge(POSTPAID, False, Rate(1, 1_000)),)  # 1 cent per 1,000 bytes
    result = await charge(store, SHOP_C, "c:0:1", want=500_000, levels=up, root=POSTPAID)
    assert result.granted == 100_000  # what the credit limit still covers
    credit = by_id(await store.buckets(POSTPAID))["tight:credit"]
    assert (credit.reserved, credit.available) == (0, 100)  # checked, not held
    await charge(store, SHOP_C, "c:1:1", used=60_000, levels=up, root=POSTPAID)
    credit = by_id(await store.buckets(POSTPAID))["tight:credit"]
    assert (credit.used, credit.available) == (60, 40)
    more = await charge(store, SHOP_C, "c:2:1", want=500_000, levels=up, root=POSTPAID)
    assert more.granted == 40_000
    for payer in (SHOP_C, POSTPAID):
        await assert_conserved(store, payer)


async def test_a_debit_is_refused_when_a_level_cannot_cover_it(store: BalanceStore) -> None:
    await provision(store, reseller_size=100)
    refused = await charge(store, SHOP_A, "e:0:1", used=101, mode="debit")
    assert refused.status == "insufficient"
    assert by_id(await store.buckets(SHOP_A))["shop-a"].used == 0
    taken = await charge(store, SHOP_A, "e:1:1", used=100, mode="debit")
    assert taken.status == "ok" and taken.levels[0].units == 100
    for payer in (SHOP_A, ROOT):
        await assert_conserved(store, payer)


async def test_a_retransmission_moves_no_level_twice(store: BalanceStore) -> None:
    await provision(store)
    await charge(store, SHOP_A, "a:0:1", want=1_000)
    first = await charge(store, SHOP_A, "a:1:1", used=700)
    again = await charge(store, SHOP_A, "a:1:1", used=700)
    assert first == again
    assert by_id(await store.buckets(ROOT))["reseller"].used == 700


async def test_concurrent_end_customers_never_overdraw_the_reseller(store: BalanceStore) -> None:
    """Two end customers' pools under one reseller pool of 3,000: 200 sessions each ask
    100 and use all they got; the reseller never goes below 0 and every level agrees."""
    await provision(store)
    await store.provision(SHOP_C, [BucketSpec("shop-c", BucketUnit.BYTES, 10_000)], NOW,
                          resize=True, root=ROOT)  # fmt: skip

    async def session(payer: str, i: int) -> int:
        grant = await charge(store, payer, f"{payer}{i}:0:1", member=f"{payer}{i}|1", want=100)
        await charge(store, payer, f"{payer}{i}:1:1", member=f"{payer}{i}|1",
                     used=grant.granted)  # fmt: skip
        return grant.granted

    grants = await asyncio.gather(*(session(SHOP_A if i % 2 else SHOP_C, i) for i in range(400)))
    reseller = by_id(await store.buckets(ROOT))["reseller"]
    assert 0 < sum(grants) == reseller.used <= 3_000
    assert (reseller.available, reseller.reserved) == (3_000 - reseller.used, 0)
    shops = [by_id(await store.buckets(p))[p.rsplit(":", 1)[1]].used for p in (SHOP_A, SHOP_C)]
    assert sum(shops) == reseller.used
    for payer in (SHOP_A, SHOP_C, ROOT):
        await assert_conserved(store, payer)


async def test_a_payer_moves_to_its_roots_slot_with_its_state(store: BalanceStore) -> None:
    """A chain created above an existing payer: provisioning moves its buckets, balances,
    reservations and records (with the stream's consumer group) to the root's slot."""
    redis = store.redis
    await store.provision(SHOP_A, [BucketSpec("shop-a", BucketUnit.BYTES, 10_000)], NOW,
                          resize=True)  # fmt: skip
    await charge(store, SHOP_A, "a:0:1", want=1_000, levels=(), root="")
    await charge(store, SHOP_A, "a:1:1", used=400, want=1_000, levels=(), root="")
    await redis.xgroup_create(PayerKeys(SHOP_A).stream, "offline", id="0")
    await provision(store)  # now under the reseller
    assert not await redis.exists(*PayerKeys(SHOP_A).moved)
    shop = by_id(await store.buckets(SHOP_A))["shop-a"]
    assert (shop.used, shop.reserved, shop.available) == (400, 1_000, 8_600)
    usage = [r.fields["id"] for r in await store.records(SHOP_A) if r.fields["kind"] == "usage"]
    assert usage == ["a:1:1"]
    groups = await redis.xinfo_groups(PayerKeys(SHOP_A, ROOT).stream)
    assert [g["name"] for g in groups] in (["offline"], [b"offline"])
    # the live session goes on in the chain: its level-0 reservation is committed there
    result = await charge(store, SHOP_A, "a:2:1", used=1_000)
    assert result.status == "ok" and result.units == 1_000
    await assert_conserved(store, SHOP_A)
    # and back to its own slot when the chain goes away
    await store.provision(SHOP_A, [BucketSpec("shop-a", BucketUnit.BYTES, 10_000)], NOW,
                          resize=True)  # fmt: skip
    assert by_id(await store.buckets(SHOP_A))["shop-a"].used == 1_400
    assert await redis.hget(PAYER_SLOTS, SHOP_A) is None


async def test_an_error_at_an_upper_level_leaves_every_level_unchanged(
    store: BalanceStore,
) -> None:
    """THE RULE of _shadow.lua holds across levels: a corrupt bucket at the reseller's level
    fails the call before any write, at level 0 too (DUMP of every key, before and after)."""
    await provision(store)
    await charge(store, SHOP_A, "a:0:1", want=1_000)
    redis = store.redis
    await redis.hset(PayerKeys(ROOT).buckets, "broken", "{not json")
    keys = [*PayerKeys(SHOP_A, ROOT).moved, *PayerKeys(ROOT).moved]
    before = [await redis.dump(k) for k in keys]
    with pytest.raises(ResponseError, match="bucket broken is not valid JSON"):
        await charge(store, SHOP_A, "a:1:1", used=500, want=1_000)
    assert [await redis.dump(k) for k in keys] == before
    with pytest.raises(ResponseError, match="level 1 has no keys"):
        await store.redis.evalsha(
            store._charge.sha, 10, *[f"{PayerKeys(SHOP_A, ROOT).base}:{i}" for i in range(10)],
            "r", 0, "bytes", 0, 0, 0, 0, 0, 0, 1000, "m", "session", "{}", SHOP_A, "", "", "",
            '[{"p": "x", "k": "reserve", "n": 0, "d": 0}]',
        )  # fmt: skip
    assert [await redis.dump(k) for k in keys] == before
