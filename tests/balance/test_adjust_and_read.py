"""BalanceStore.adjust_and_read and buckets_batched (the HTTP top-up's one round trip) on a
single Redis and on a Redis Cluster: the same buckets as buckets(), once per request id,
and the script loaded again after SCRIPT FLUSH."""

from __future__ import annotations

from ocs.balance import BalanceStore, BucketSpec, BucketUnit
from tests.balance.helpers import NOW

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
