"""Events in the payer's outbox (``lua/_events.lua``), written by the balance scripts in the
same atomic step as the change that causes them: thresholds crossed once per period, quota
exhausted once until the payer has units again, renewals (docs/webhooks.md)."""

from __future__ import annotations

import json
from typing import Any

from ocs.balance import BalanceStore, BucketSpec, BucketUnit, ChargeRequest, Rate
from ocs.balance.keys import PayerKeys
from ocs.balance.store import script_text
from ocs.redis_client import RedisClient
from tests.balance.helpers import NOW, charge

POOL = "t:prepaid_pool:p"
WALLET = "t:wallet:w"


async def outbox(redis: RedisClient, payer: str) -> list[dict[str, Any]]:
    out = []
    for _, raw in await redis.xrange(PayerKeys(payer).events):
        f = {k.decode(): v.decode() for k, v in raw.items()}
        f["subject"] = json.loads(f["subject"])
        f["data"] = json.loads(f["data"])
        out.append(f)
    return out


async def thresholds(redis: RedisClient, payer: str, cfg: dict[str, Any], period: str) -> None:
    life = PayerKeys(payer).lifecycle
    await redis.hset(life, mapping={"alerts": json.dumps(cfg), "period": period})


def mark(data: dict[str, Any]) -> str:
    return f"p{data['percent']}" if "percent" in data else f"a{data['amount']}"


async def test_each_threshold_fires_once_per_period(
    store: BalanceStore, redis: RedisClient
) -> None:
    await store.provision(POOL, [BucketSpec("p", BucketUnit.BYTES, 1_000)], NOW, resize=True)
    await thresholds(redis, POOL, {"u": "bytes", "b": 1_000, "p": [80, 100], "a": [500]}, "m1")
    steps = [(400, []), (200, ["a500"]), (250, ["p80"]), (100, []), (50, ["p100"])]
    seen: list[str] = []
    for i, (used, fired) in enumerate(steps):
        r = await charge(store, POOL, f"d{i}", used=used, mode="debit")
        assert r.status == "ok"
        events = await outbox(redis, POOL)
        new = events[len(seen) :]
        keys = [mark(e["data"]) for e in new]
        assert keys == fired, (i, new)
        seen += keys
    events = await outbox(redis, POOL)
    first = events[0]
    assert first["type"] == "balance.threshold" and first["tenant"] == "t"
    assert first["subject"] == {"payer": "p", "payer_kind": "prepaid_pool"}
    assert first["data"] == {"unit": "bytes", "amount": 500, "left": 400, "base": 1_000,
                             "used": 600, "period": "m1"}  # fmt: skip
    assert first["time"] == str(NOW) and first["id"].startswith("evt_")
    assert len({e["id"] for e in events}) == len(events)
    # a replay of a request that crossed one writes nothing again
    await charge(store, POOL, "d2", used=250, mode="debit")
    assert len(await outbox(redis, POOL)) == 3


async def test_quota_exhausted_fires_once_until_units_come_back(
    store: BalanceStore, redis: RedisClient
) -> None:
    await store.provision(POOL, [BucketSpec("p", BucketUnit.BYTES, 100)], NOW, resize=True)
    await redis.hset(PayerKeys(POOL).lifecycle, "period", "m1")
    await charge(store, POOL, "a", used=100, mode="debit")
    assert await outbox(redis, POOL) == []  # used up, but nobody was refused yet
    for rid in ("b", "c"):
        assert (await charge(store, POOL, rid, want=10)).status == "exhausted"
    events = await outbox(redis, POOL)
    assert [e["type"] for e in events] == ["quota.exhausted"]
    assert events[0]["data"] == {"unit": "bytes", "status": "exhausted", "short": 0, "left": 0,
                                 "period": "m1"}  # fmt: skip
    # units come back (a top-off): the mark re-arms, the next refusal is a new event
    await store.adjust(POOL, "credit", [{"op": "credit", "id": "p", "amount": 10}], NOW)
    assert (await charge(store, POOL, "d", want=10)).status == "ok"
    assert (await charge(store, POOL, "e", want=10, member="s2|1")).status == "exhausted"
    assert [e["type"] for e in await outbox(redis, POOL)] == ["quota.exhausted"] * 2


async def test_a_new_period_rearms_thresholds(store: BalanceStore, redis: RedisClient) -> None:
    await store.provision(POOL, [BucketSpec("p", BucketUnit.BYTES, 1_000)], NOW, resize=True)
    await thresholds(redis, POOL, {"u": "bytes", "b": 1_000, "p": [50]}, "m1")
    await charge(store, POOL, "a", used=600, mode="debit")
    await store.adjust(POOL, "refill", [{"op": "credit", "id": "p", "amount": 600}], NOW)
    await charge(store, POOL, "b", used=600, mode="debit")
    assert len(await outbox(redis, POOL)) == 1  # once in m1, though it crossed twice
    await redis.hset(PayerKeys(POOL).lifecycle, "period", "m2")
    await store.adjust(POOL, "refill2", [{"op": "credit", "id": "p", "amount": 600}], NOW)
    await charge(store, POOL, "c", used=700, mode="debit")
    events = await outbox(redis, POOL)
    assert [e["data"]["period"] for e in events] == ["m1", "m2"]


async def test_a_wallet_without_period_rearms_after_a_top_up(
    store: BalanceStore, redis: RedisClient
) -> None:
    await store.provision(WALLET, [BucketSpec("w", BucketUnit.MONEY, 1_000)], NOW, resize=False)
    await redis.hset(PayerKeys(WALLET).lifecycle, "alerts", json.dumps({"u": "money", "a": [200]}))
    for rid, used in (("a", 850), ("b", 10)):
        await charge(
            store, WALLET, rid, used=used, unit=BucketUnit.MONEY, rate=Rate(1, 1), mode="debit"
        )
    assert [e["data"]["left"] for e in await outbox(redis, WALLET)] == [150]
    await store.adjust(WALLET, "top", [{"op": "credit", "id": "w", "amount": 500}], NOW)
    await charge(
        store, WALLET, "c", used=10, unit=BucketUnit.MONEY, rate=Rate(1, 1), mode="debit"
    )  # 630
    await charge(
        store, WALLET, "d", used=450, unit=BucketUnit.MONEY, rate=Rate(1, 1), mode="debit"
    )  # 180
    assert [e["data"]["left"] for e in await outbox(redis, WALLET)] == [150, 180]
    # topped up above it, then spent below it in one call: again (the top-up re-armed it)
    await store.adjust(WALLET, "top2", [{"op": "credit", "id": "w", "amount": 500}], NOW)
    await charge(store, WALLET, "e", used=600, unit=BucketUnit.MONEY, rate=Rate(1, 1), mode="debit")
    await charge(store, WALLET, "f", used=10, unit=BucketUnit.MONEY, rate=Rate(1, 1), mode="debit")
    assert [e["data"]["left"] for e in await outbox(redis, WALLET)] == [150, 180, 80]


async def test_renewal_events_come_from_lifecycle_lua(
    store: BalanceStore, redis: RedisClient
) -> None:
    await store.provision(POOL, [BucketSpec("p", BucketUnit.BYTES, 1_000)], NOW, resize=True)
    k = PayerKeys(POOL)
    script = redis.register_script(script_text("lifecycle.lua"))
    keys = [k.buckets, k.balances, k.lifecycle, k.stream, k.events]

    async def call(action: str, args: dict[str, Any], now: int) -> Any:
        return json.loads(await script(keys=keys, args=[action, now, POOL, json.dumps(args)]))

    period = {"id": "m1", "start": NOW - 10, "end": NOW + 10}
    nxt = {"id": "m2", "start": NOW + 10, "end": NOW + 20}
    assert (await call("setup", {"size": 1_000, "period": period}, NOW))["status"] == "ok"
    renew = {"period": "m1", "next": nxt, "due": "end", "credit": {"bucket": "p", "size": 1_000},
             "fee": 500, "currency": "EUR", "billed": "invoice", "pool": "p"}  # fmt: skip
    assert (await call("renew", renew, NOW + 10))["status"] == "renewed"
    assert (await call("renew", renew, NOW + 11))["status"] == "already"
    fail = {"period": "m2", "next": {"id": "m3", "start": NOW + 20, "end": NOW + 30},
            "due": "end", "on_failure": "suspend", "fee": 500, "pool": "p"}  # fmt: skip
    for _ in range(2):
        assert (await call("fail", fail, NOW + 20))["status"] == "suspended"
    events = await outbox(redis, POOL)
    assert [(e["type"], e["data"]["outcome"]) for e in events] == [
        ("renewal.paid", "renewed"),
        ("renewal.unpaid", "suspended"),
    ]
    assert events[0]["data"]["fee"] == 500 and events[0]["data"]["period"] == "m2"


async def test_usage_granted_in_an_outage_is_an_event_when_replayed(
    store: BalanceStore, redis: RedisClient
) -> None:
    """The failover replay (ocs.charging.failover) charges what was granted while Redis was
    unreachable, its record context marked "failover": that call writes outage.granted."""
    await store.provision(POOL, [BucketSpec("p", BucketUnit.BYTES, 1_000)], NOW, resize=True)
    ctx = {"imsi": "262010000000001", "failover": True}
    for rid in ("s:1:10", "s:1:10"):  # replayed twice: one event
        req = ChargeRequest(rid, "s|10|failover", BucketUnit.BYTES, NOW - 5_000, used=300,
                            context=ctx)  # fmt: skip
        assert (await store.charge(POOL, req)).status == "no_reservation"
    await charge(store, POOL, "online", used=100, mode="debit")  # not a replay: no event
    [event] = await outbox(redis, POOL)
    assert (event["type"], event["time"], event["subject"]["imsi"]) == (
        "outage.granted",
        str(NOW - 5_000),
        "262010000000001",
    )
    assert event["data"] == {"unit": "bytes", "units": 300, "money": 0, "short": 0}
