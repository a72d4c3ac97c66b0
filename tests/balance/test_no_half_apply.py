"""The balance scripts cannot half-apply (issue 12): each script validates its inputs and
computes every change before its first write, so an error leaves every key of the payer
byte-identical (DUMP of each key before and after), and zero or boundary amounts never make
Redis refuse a write (the ``HINCRBY ... -0`` that lost usage once a postpaid pool ran out on a
free zone).

Every test drives the real scripts on real Redis (single server and cluster). Error cases are
the ones that, before the rule, failed AFTER writes: a corrupt reservation entry met half-way,
a stream key of the wrong type met at the record, a lifecycle rule met after the commit, a
refund without a bucket after a credit, a renewal without its next period after the credit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.exceptions import ResponseError

from ocs.balance import BalanceStore, BucketSpec, BucketUnit, Rate
from ocs.balance.keys import PayerKeys
from ocs.balance.models import FREE
from ocs.balance.store import script_text
from ocs.redis_client import RedisClient
from tests.balance.helpers import NOW, assert_conserved, by_id, charge

POOL = "t:postpaid_pool:pp"
WALLET = "t:wallet:w"
TTL = 60_000


async def snapshot(redis: RedisClient, payer: str, *extra: str) -> dict[str, Any]:
    """DUMP (and TTL) of every key of the payer: the byte-exact state."""
    k = PayerKeys(payer)
    keys = [k.buckets, k.balances, k.reservations, k.reservation_index, k.stream, k.lifecycle]
    keys += [k.counters, k.events, *[k.done(rid) for rid in extra]]
    out: dict[str, Any] = {}
    for key in keys:
        out[key] = (await redis.dump(key), await redis.pttl(key) > 0)
    return out


async def postpaid_pool(store: BalanceStore, size: int = 1_000) -> None:
    """A postpaid pool: a unit bucket, then an unlimited money bucket (overage)."""
    await store.provision(
        POOL,
        [
            BucketSpec("pool", BucketUnit.BYTES, size),
            BucketSpec("overage", BucketUnit.MONEY, 0, priority=1, unlimited=True),
        ],
        NOW,
        resize=True,
    )


def charge_call(payer: str, rid: str, **kw: Any) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of charge.lua, every ARGV overridable by name."""
    k = PayerKeys(payer)
    keys = [k.buckets, k.balances, k.reservations, k.reservation_index, k.done(rid), k.stream]
    keys += [k.lifecycle, k.counters, k.events]
    argv = {
        "rid": rid, "now": NOW, "unit": "bytes", "used": 0, "want": 0, "min_grant": 0,
        "num": 0, "den": 0, "deadline": NOW + 60_000, "ttl": TTL, "member": "s1|1",
        "mode": "session", "ctx": "{}", "payer": payer, "price": "", "counters": "",
    }  # fmt: skip
    argv.update(kw)
    return keys, list(argv.values())


async def run_script(redis: RedisClient, name: str, keys: list[str], args: list[Any]) -> Any:
    return await redis.register_script(script_text(name))(keys=keys, args=args)


async def assert_untouched(
    redis: RedisClient, payer: str, name: str, keys: list[str], args: list[Any], match: str
) -> None:
    before = await snapshot(redis, payer, *[str(a) for a in args[:1]])
    with pytest.raises(ResponseError, match=match):
        await run_script(redis, name, keys, args)
    after = await snapshot(redis, payer, *[str(a) for a in args[:1]])
    assert after == before


# -- zero and boundary amounts: every write Redis accepts ------------------------------------


async def test_free_zone_overage_after_the_pool_ran_out_is_recorded(store: BalanceStore) -> None:
    """The issue's loss: pool used up, the zone's price 0 -> the money bucket is charged 0.
    Before the rule this sent HINCRBY ... -0, Redis refused it after the commit was written,
    and the usage had no record while its bytes stayed reserved."""
    await postpaid_pool(store, 1_000)
    first = await charge(store, POOL, "s:0:1", want=800, rate=FREE)
    assert (first.status, first.granted) == ("ok", 800)
    # 3,000 used against 800 reserved: 200 more from the pool, 2,000 at price 0
    second = await charge(store, POOL, "s:1:1", used=3_000, want=500, rate=FREE)
    assert (second.status, second.units, second.cost, second.overrun) == ("ok", 3_000, 0, 0)
    assert second.granted == 500  # granted from the (free) overage bucket
    third = await charge(store, POOL, "s:2:1", used=500, rate=FREE)
    assert (third.units, third.live) == (500, 0)
    b = by_id(await store.buckets(POOL))
    assert (b["pool"].available, b["pool"].reserved, b["pool"].used) == (0, 0, 1_000)
    assert (b["overage"].reserved, b["overage"].used) == (0, 0)
    usage = [r for r in await store.records(POOL) if r.fields["kind"] == "usage"]
    assert [int(r.fields["units"]) for r in usage] == [3_000, 500]
    assert await store.live_reservations(POOL) == 0
    await assert_conserved(store, POOL)


async def test_reclaim_of_a_zero_money_reservation(store: BalanceStore) -> None:
    await postpaid_pool(store, 0)
    grant = await charge(store, POOL, "s:0:1", want=700, rate=FREE, deadline=NOW + 5)
    assert grant.granted == 700
    assert await store.reclaim(POOL, NOW + 10) == 1  # released 0 money: "-0" before
    assert await store.live_reservations(POOL) == 0
    records = [r for r in await store.records(POOL) if r.fields["kind"] == "reclaim"]
    assert [r.alloc for r in records] == [[("overage", 0)]]
    await assert_conserved(store, POOL)


@pytest.mark.parametrize(
    ("size", "used", "want", "expect"),
    [
        # (pool size, used, wanted) -> (units, overrun, granted, left)
        (1_000, 0, 0, (0, 0, 0, 1_000)),
        (1_000, 0, 1_000, (0, 0, 1_000, 0)),  # exactly what is available
        (1_000, 1_000, 0, (1_000, 0, 0, 0)),  # a debit of exactly everything
        (1_000, 1_001, 0, (1_000, 1, 0, 0)),  # one unit past it: overrun
        (0, 0, 1, (0, 0, 0, 0)),  # nothing at all
        (0, 5, 0, (0, 5, 0, 0)),
    ],
)
async def test_unit_boundaries(
    store: BalanceStore, size: int, used: int, want: int, expect: tuple[int, ...]
) -> None:
    payer = "t:prepaid_pool:b"
    await store.provision(payer, [BucketSpec("pool", BucketUnit.BYTES, size)], NOW, resize=True)
    r = await charge(store, payer, "s:1:1", used=used, want=want)
    assert (r.units, r.overrun, r.granted, r.left) == expect
    await assert_conserved(store, payer)


async def test_priced_wallet_debits_exactly_the_price(store: BalanceStore) -> None:
    """With a price the commit debits exactly it, whatever the reservation held."""
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 100)], NOW, resize=False)
    rate = Rate(1, 100_000)  # 1 ct per 100 kB reserves
    grant = await store.charge(WALLET, _req("w:0:1", want=1_000_000, rate=rate))
    assert (grant.granted, grant.money) == (1_000_000, 10)
    # 331,667 bytes rated 5 ct (a minimum charge): 5 debited, not ceil(331,667 / 100,000) = 4
    used = await store.charge(WALLET, _req("w:1:1", used=331_667, want=0, rate=rate, price=5))
    assert (used.units, used.cost, used.short, used.live) == (331_667, 5, 0, 0)
    b = by_id(await store.buckets(WALLET))["eur"]
    assert (b.available, b.reserved, b.used) == (95, 0, 5)
    # price 0 of a used quantity: recorded, nothing debited
    zero = await store.charge(WALLET, _req("w:2:1", used=10, rate=rate, price=0))
    assert (zero.units, zero.cost) == (10, 0)
    # more than the reservation: the rest comes from what is available
    await store.charge(WALLET, _req("w:3:1", want=100_000, rate=rate))
    over = await store.charge(WALLET, _req("w:4:1", used=500_000, rate=rate, price=30))
    assert (over.cost, over.short) == (30, 0)
    # more than everything: what is there is debited, the rest is short (and recorded)
    dry = await store.charge(WALLET, _req("w:5:1", used=9_000_000, rate=rate, price=200))
    assert (dry.cost, dry.short) == (65, 135)
    usage = [r for r in await store.records(WALLET) if r.fields["kind"] == "usage"]
    assert [int(r.fields["money"]) for r in usage] == [5, 0, 30, 65]
    assert usage[-1].fields["short"] == "135"
    await assert_conserved(store, WALLET)


async def test_priced_debit_is_all_or_nothing(store: BalanceStore) -> None:
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 10)], NOW, resize=False)
    rate = Rate(1, 1)
    exact = await store.charge(WALLET, _req("e:1", used=3, rate=rate, price=10, mode="debit"))
    assert (exact.status, exact.cost) == ("ok", 10)  # exactly everything
    refused = await store.charge(WALLET, _req("e:2", used=1, rate=rate, price=1, mode="debit"))
    assert (refused.status, refused.cost) == ("insufficient", 0)
    free = await store.charge(WALLET, _req("e:3", used=1, rate=rate, price=0, mode="debit"))
    assert (free.status, free.units, free.cost) == ("ok", 1, 0)
    await assert_conserved(store, WALLET)


def _req(rid: str, **kw: Any) -> Any:
    from ocs.balance import ChargeRequest

    base: dict[str, Any] = {
        "request_id": rid,
        "member": "w|1",
        "unit": BucketUnit.BYTES,
        "now_ms": NOW,
        "deadline_ms": NOW + 60_000,
        "context": {"test": rid},
    }
    base.update(kw)
    return ChargeRequest(**base)


# -- errors leave every key byte-identical ----------------------------------------------------


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"used": "abc"}, "used units"),
        ({"used": "-5"}, "used units"),
        ({"used": "1.5"}, "used units"),
        ({"want": "1e400"}, "wanted units"),
        ({"ttl": "0"}, "result TTL"),
        ({"mode": "steal"}, "mode"),
        ({"unit": ""}, "unit"),
        ({"member": ""}, "member"),
        ({"price": "-1"}, "price"),
        ({"price": "7", "den": 0}, "price needs money"),
    ],
)
async def test_charge_refuses_bad_arguments_untouched(
    store: BalanceStore, redis: RedisClient, override: dict[str, Any], match: str
) -> None:
    await postpaid_pool(store)
    await charge(store, POOL, "s:0:1", want=500, rate=Rate(1, 10))
    call = {"used": 400, "want": 500, "num": 1, "den": 10, **override}
    keys, args = charge_call(POOL, "s:1:1", **call)
    await assert_untouched(redis, POOL, "charge.lua", keys, args, match)


async def test_charge_with_a_corrupt_reservation_entry_is_untouched(
    store: BalanceStore, redis: RedisClient
) -> None:
    await postpaid_pool(store)
    await charge(store, POOL, "s:0:1", want=500, rate=Rate(1, 10))
    k = PayerKeys(POOL)
    rsv = json.loads(await redis.hget(k.reservations, "s1|1"))
    rsv["a"].append(["overage", "12", "x"])  # a second entry the first would be written before
    await redis.hset(k.reservations, "s1|1", json.dumps(rsv))
    keys, args = charge_call(POOL, "s:1:1", used=400, want=100, num=1, den=10)
    await assert_untouched(redis, POOL, "charge.lua", keys, args, "reserved amount")


async def test_charge_with_a_stream_of_the_wrong_type_is_untouched(
    store: BalanceStore, redis: RedisClient
) -> None:
    """The record was the last write: a stream key holding a string failed XADD after the
    balance writes. Now the stream (the one key the script writes without reading it) is
    written first, so its error comes before any other write."""
    await postpaid_pool(store)
    await charge(store, POOL, "s:0:1", want=500, rate=Rate(1, 10))
    k = PayerKeys(POOL)
    await redis.delete(k.stream)
    await redis.set(k.stream, "not a stream")
    keys, args = charge_call(POOL, "s:1:1", used=400, want=100, num=1, den=10)
    await assert_untouched(redis, POOL, "charge.lua", keys, args, "WRONGTYPE")


async def test_charge_with_a_bad_balance_field_is_untouched(
    store: BalanceStore, redis: RedisClient
) -> None:
    await postpaid_pool(store)
    await charge(store, POOL, "s:0:1", want=500, rate=Rate(1, 10))
    await redis.hset(PayerKeys(POOL).balances, "overage:r", "12abc")
    keys, args = charge_call(POOL, "s:1:1", used=900, want=900, num=1, den=10)
    await assert_untouched(redis, POOL, "charge.lua", keys, args, "overage:r")


async def test_charge_that_would_leave_the_exact_range_is_untouched(
    store: BalanceStore, redis: RedisClient
) -> None:
    await postpaid_pool(store)
    await charge(store, POOL, "s:0:1", want=500, rate=Rate(1, 10))
    await redis.hset(PayerKeys(POOL).balances, "overage:u", str(2**53 - 2))
    keys, args = charge_call(POOL, "s:1:1", used=1_500, want=0, num=1, den=1)
    await assert_untouched(redis, POOL, "charge.lua", keys, args, "exact integer range")


async def test_charge_with_a_corrupt_lifecycle_rule_after_the_commit_is_untouched(
    store: BalanceStore, redis: RedisClient
) -> None:
    """The pool runs short after the commit, so the grant reads the auto top-off rule: a rule
    that does not decode failed after the commit's writes."""
    payer = "t:prepaid_pool:life"
    await store.provision(payer, [BucketSpec("pool", BucketUnit.BYTES, 1_000)], NOW, resize=True)
    await charge(store, payer, "s:0:1", want=900)
    await redis.hset(PayerKeys(payer).lifecycle, "topoff", "{broken")
    keys, args = charge_call(payer, "s:1:1", used=900, want=900)
    await assert_untouched(redis, payer, "charge.lua", keys, args, "auto top-off rule")


async def test_charge_with_a_corrupt_bucket_definition_is_untouched(
    store: BalanceStore, redis: RedisClient
) -> None:
    await postpaid_pool(store)
    await charge(store, POOL, "s:0:1", want=500, rate=Rate(1, 10))
    await redis.hset(PayerKeys(POOL).buckets, "late", '{"unit": "bytes", "to": "soon"}')
    keys, args = charge_call(POOL, "s:1:1", used=400, want=100, num=1, den=10)
    await assert_untouched(redis, POOL, "charge.lua", keys, args, "valid_to of late")


async def test_reclaim_with_a_corrupt_second_reservation_is_untouched(
    store: BalanceStore, redis: RedisClient
) -> None:
    payer = "t:prepaid_pool:rc"
    await store.provision(payer, [BucketSpec("pool", BucketUnit.BYTES, 1_000)], NOW, resize=True)
    await charge(store, payer, "a:0:1", member="a|1", want=100, deadline=NOW + 1)
    await charge(store, payer, "b:0:1", member="b|1", want=100, deadline=NOW + 2)
    await redis.hset(PayerKeys(payer).reservations, "b|1", '{"a": [["pool", "100", "1e"]]}')
    k = PayerKeys(payer)
    keys = [k.balances, k.reservations, k.reservation_index, k.stream]
    await assert_untouched(redis, payer, "reclaim.lua", keys, [NOW + 10, 10, payer], "b|1")
    await redis.delete(k.stream)
    await redis.set(k.stream, "not a stream")
    await redis.hset(k.reservations, "b|1", '{"a": [["pool", "100", "100"]]}')
    await assert_untouched(redis, payer, "reclaim.lua", keys, [NOW + 10, 10, payer], "WRONGTYPE")
    for bad in ([NOW + 10, 0, payer], ["soon", 10, payer], [NOW + 10, 10, ""]):
        await assert_untouched(redis, payer, "reclaim.lua", keys, bad, "reclaim.lua")


def adjust_call(payer: str, rid: str, ops: Any, **kw: Any) -> tuple[list[str], list[Any]]:
    k = PayerKeys(payer)
    argv = {"rid": rid, "now": NOW, "ttl": TTL, "payer": payer, "ops": ops, "ctx": "{}"}
    argv.update(kw)
    if not isinstance(argv["ops"], str):
        argv["ops"] = json.dumps(argv["ops"])
    return [k.buckets, k.balances, k.done(rid), k.stream], list(argv.values())


@pytest.mark.parametrize(
    ("ops", "match"),
    [
        ([{"op": "credit", "id": "eur", "amount": 5}, {"op": "steal"}], "unknown op"),
        ([{"op": "credit", "id": "eur", "amount": 5}, {"op": "credit", "id": "eur"}], "amount"),
        ([{"op": "credit", "id": "eur", "amount": 1.5}], "amount"),
        ([{"op": "credit", "id": 7, "amount": 1}], "bucket id"),
        ([{"op": "define", "id": "x", "def": {}, "size": "big"}], "size"),
        ([{"op": "refund", "unit": "money", "amount": -3}], "amount"),
        ("[not json", "operations"),
    ],
)
async def test_adjust_refuses_bad_operations_untouched(
    store: BalanceStore, redis: RedisClient, ops: Any, match: str
) -> None:
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 100)], NOW, resize=False)
    keys, args = adjust_call(WALLET, "adj-1", ops)
    await assert_untouched(redis, WALLET, "adjust.lua", keys, args, match)


async def test_adjust_refund_without_a_bucket_applies_nothing(
    store: BalanceStore, redis: RedisClient
) -> None:
    """Before: the credit before the refund was written, then the script returned no_bucket."""
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 100)], NOW, resize=False)
    ops = [{"op": "credit", "id": "eur", "amount": 5}, {"op": "refund", "unit": "events"}]
    ops[1]["amount"] = 1
    keys, args = adjust_call(WALLET, "adj-2", ops)
    before = await snapshot(redis, WALLET, "adj-2")
    raw = await run_script(redis, "adjust.lua", keys, args)
    assert json.loads(raw) == {"status": "no_bucket", "applied": 0}
    assert await snapshot(redis, WALLET, "adj-2") == before


async def test_adjust_zero_amounts(store: BalanceStore) -> None:
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 0)], NOW, resize=False)
    ops: list[dict[str, Any]] = [
        {"op": "credit", "id": "eur", "amount": 0},
        {"op": "refund", "unit": "money", "amount": 0},
        {"op": "resize", "id": "eur", "size": 0},
    ]
    assert await store.adjust(WALLET, "z", ops, NOW) == "ok"
    b = by_id(await store.buckets(WALLET))["eur"]
    assert (b.credited, b.available, b.used) == (0, 0, 0)
    await assert_conserved(store, WALLET)


def life_call(payer: str, action: str, args: Any, now: Any = NOW) -> tuple[list[str], list[Any]]:
    k = PayerKeys(payer)
    text = args if isinstance(args, str) else json.dumps(args)
    return [k.buckets, k.balances, k.lifecycle, k.stream, k.events], [action, now, payer, text]


PERIOD = {"id": "2023-11", "start": NOW - 1_000, "end": NOW + 1_000}
NEXT = {"id": "2023-12", "start": NOW + 1_000, "end": NOW + 9_000}


@pytest.mark.parametrize(
    ("action", "args", "match"),
    [
        ("setup", {"size": 1000}, "period must be a period"),
        ("setup", {"size": 1000, "period": {"id": "p", "start": 1}}, "period.end"),
        ("setup", {"size": 1000, "period": PERIOD, "ladder": {"s": ["x"]}}, "ladder size"),
        ("setup", {"size": -1, "period": PERIOD}, "size"),
        ("topoff", {"rule": "off"}, "rule"),
        ("pay", {"ref": "r1", "fee": "lots"}, "fee"),
        ("pay", {"fee": 1}, "ref"),
        ("steal", {}, "unknown action"),
        ("setup", "{broken", "arguments"),
    ],
)
async def test_lifecycle_refuses_bad_arguments_untouched(
    store: BalanceStore, redis: RedisClient, action: str, args: Any, match: str
) -> None:
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 100)], NOW, resize=False)
    keys, argv = life_call(WALLET, action, args)
    await assert_untouched(redis, WALLET, "lifecycle.lua", keys, argv, match)


async def test_lifecycle_renew_and_fail_without_a_next_period_are_untouched(
    store: BalanceStore, redis: RedisClient
) -> None:
    """Before: the renewal credited the bucket, then start_period(nil) failed."""
    payer = "t:prepaid_pool:lc"
    await store.provision(payer, [BucketSpec("pool", BucketUnit.BYTES, 1_000)], NOW, resize=True)
    keys, argv = life_call(payer, "setup", {"size": 1_000, "period": PERIOD})
    assert json.loads(await run_script(redis, "lifecycle.lua", keys, argv))["status"] == "ok"
    await store.charge(payer, _req("s:1", used=1_000, mode="debit"))
    renew = {"period": "2023-11", "due": "depleted", "credit": {"bucket": "pool", "size": 1_000}}
    keys, argv = life_call(payer, "renew", renew, NOW + 5_000)
    await assert_untouched(redis, payer, "lifecycle.lua", keys, argv, "next must be a period")
    fail = {"period": "2023-11", "due": "end", "on_failure": "overage"}
    keys, argv = life_call(payer, "fail", fail, NOW + 5_000)
    await assert_untouched(redis, payer, "lifecycle.lua", keys, argv, "next must be a period")
    # and with the next period both go through
    keys, argv = life_call(payer, "renew", {**renew, "next": NEXT}, NOW + 5_000)
    out = json.loads(await run_script(redis, "lifecycle.lua", keys, argv))
    assert out["status"] == "renewed"
    b = by_id(await store.buckets(payer))["pool"]
    assert (b.available, b.used) == (1_000, 1_000)


async def test_lifecycle_pay_zero_and_exact_fee(store: BalanceStore, redis: RedisClient) -> None:
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 300)], NOW, resize=False)
    for ref, fee, status in (("r0", 0, "paid"), ("r1", 300, "paid"), ("r2", 1, "insufficient")):
        keys, argv = life_call(WALLET, "pay", {"ref": ref, "fee": fee, "period": "p"})
        out = json.loads(await run_script(redis, "lifecycle.lua", keys, argv))
        assert out["status"] == status, ref
    b = by_id(await store.buckets(WALLET))["eur"]
    assert (b.credited, b.available) == (0, 0)


async def test_priced_counters_move_with_the_debit_or_nothing_moves(
    store: BalanceStore, redis: RedisClient
) -> None:
    """ARGV[16]: the counters a price was computed from. At their expected values they move
    by the deltas in the same step as the debit; otherwise the script writes nothing (not
    even its stored result) and answers stale with the current values."""
    await store.provision(WALLET, [BucketSpec("eur", BucketUnit.MONEY, 100)], NOW, resize=False)
    rate = Rate(1, 100_000)
    tier, free = "2023-11-01|sub|data", "2023-11-01|sub|allowance:free"
    ok = await store.charge(
        WALLET, _req("c:1", used=500, rate=rate, price=3, counters=((tier, 0, 400), (free, 0, 100)))
    )
    assert (ok.status, ok.cost, ok.counters) == ("no_reservation", 3, {tier: 400, free: 100})
    k = PayerKeys(WALLET)
    assert await redis.hgetall(k.counters) == {tier.encode(): b"400", free.encode(): b"100"}
    before = await snapshot(redis, WALLET, "c:2")
    stale = await store.charge(WALLET, _req("c:2", used=10, rate=rate, price=1,
                                            counters=((tier, 0, 10),)))  # fmt: skip
    assert (stale.status, stale.counters) == ("stale", {tier: 400})
    assert await snapshot(redis, WALLET, "c:2") == before
    assert await redis.hgetall(k.counters) == {tier.encode(): b"400", free.encode(): b"100"}
    again = await store.charge(WALLET, _req("c:2", used=10, rate=rate, price=1,
                                            counters=((tier, 400, 10),)))  # fmt: skip
    assert (again.status, again.cost, again.counters) == ("no_reservation", 1, {tier: 410})
    b = by_id(await store.buckets(WALLET))["eur"]
    assert (b.available, b.used) == (96, 4)
    # a zero delta is checked and not written; counters without a price are refused
    keys, args = charge_call(WALLET, "c:3", used=1, num=1, den=1, price="",
                             counters=json.dumps([[tier, 410, 1]]))  # fmt: skip
    keys.append(k.counters)
    await assert_untouched(redis, WALLET, "charge.lua", keys, args, "counters come with a price")
