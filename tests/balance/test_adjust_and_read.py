"""BalanceStore.adjust_and_read and buckets_batched (the HTTP top-up's one round trip) on a
single Redis and on a Redis Cluster: the same buckets as buckets(), once per request id,
and the script loaded again after SCRIPT FLUSH (once for a burst of charges)."""

from __future__ import annotations

import asyncio

from ocs.balance import BalanceStore, BucketSpec, BucketUnit
from tests.balance.helpers import NOW, assert_conserved, charge, script_loads

WALLET = "t:wallet:w9"


async def test_credit_and_read_in_one_trip_once_per_request(store: BalanceStore) -> None:
    try:
        await store.provision(WALLET, [BucketSpec("w9", BucketUnit.MONEY, 100)], NOW, resize=False)
        credit = [{"op": "credit", "id": "w9", "amount": 25}]
        status, buckets = await store.adjust_and_read(WALLET, "api:topup:k1", credit, NOW)
        assert status == "ok"
        assert buckets == await store.buckets(WALLET)
        assert [(b.id, b.available, b.credited) for b in buckets] == [("w9", 125, 125)]
        status, again = await store.adjust_and_read(WALLET, "api:topup:k1", credit, NOW)
        assert status == "ok" and again == buckets  # replayed: credited once
        assert await store.buckets_batched(WALLET) == buckets
        kinds = [r.fields["id"] for r in await store.records(WALLET)]
        assert kinds.count("api:topup:k1") == 1
    finally:
        await store.batch.close()


async def test_credit_after_script_flush_loads_the_script(store: BalanceStore) -> None:
    try:
        await store.provision(WALLET, [BucketSpec("w9", BucketUnit.MONEY, 0)], NOW, resize=False)
        await store.redis.script_flush()
        credit = [{"op": "credit", "id": "w9", "amount": 7}]
        status, buckets = await store.adjust_and_read(WALLET, "api:topup:k2", credit, NOW)
        assert status == "ok"
        assert [(b.id, b.available) for b in buckets] == [("w9", 7)]
        status, buckets = await store.adjust_and_read(WALLET, "api:topup:k3", credit, NOW)
        assert [(b.id, b.available) for b in buckets] == [("w9", 14)]
    finally:
        await store.batch.close()


async def test_a_burst_after_script_flush_loads_the_script_once(store: BalanceStore) -> None:
    """A restarted or failed-over Redis answers NOSCRIPT to every charge in flight at once:
    one SCRIPT LOAD (on each master) serves them all, and each charge runs once."""
    payer = "t:prepaid_pool:flushed"
    try:
        await store.provision(payer, [BucketSpec("p", BucketUnit.BYTES, 10**9)], NOW, resize=True)
        await store.redis.script_flush()
        before = await script_loads(store.redis)
        results = await asyncio.gather(
            *(charge(store, payer, f"f{i}:0:1", member=f"f{i}|1", want=1_000) for i in range(300))
        )
        assert [r.status for r in results] == ["ok"] * 300
        after = await script_loads(store.redis)
        assert [a - b for a, b in zip(after, before, strict=True)] == [1] * len(before)
        assert sum(b.reserved for b in await store.buckets(payer)) == 300 * 1_000
        await assert_conserved(store, payer)
    finally:
        await store.batch.close()
