"""The dispatcher against a real Redis and a real HTTP receiver: events the balance scripts
wrote are POSTed signed, once, in order per subject, retried with backoff while the receiver
is down, dead-lettered after the last attempt; the delivery log tells each attempt."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ocs.balance import BalanceStore, BucketSpec, BucketUnit
from ocs.balance.keys import PayerKeys
from ocs.balance.thresholds import PayerThresholds, put_api_thresholds
from ocs.events.dispatcher import DeliverySettings, Dispatcher
from ocs.events.keys import LEASE
from ocs.events.metrics import WebhookMetrics
from ocs.events.model import Subscription
from ocs.events.subscriptions import Subscriptions
from ocs.redis_client import RedisClient
from tests.balance.helpers import charge
from tests.events.conftest import SECRET, free_port, receiving
from tools.webhook_receiver import Receiver, verify

POOL = "t:prepaid_pool:p"
OTHER = "t:prepaid_pool:q"
FAST = DeliverySettings(interval=0.05, timeout=2.0, backoff=0.05, backoff_max=0.2, max_attempts=3)


async def pool(store: BalanceStore, tag: str, percent: tuple[int, ...] = (80,)) -> None:
    await store.provision(tag, [BucketSpec("b", BucketUnit.BYTES, 1_000)], 0, resize=True)
    await store.redis.hset(PayerKeys(tag).lifecycle, "period", "m1")
    await put_api_thresholds(store.redis, tag, PayerThresholds("bytes", 1_000, percent))


async def subscribe(redis: RedisClient, url: str, tenant: str = "t", **kw: Any) -> Subscription:
    return await Subscriptions(redis).create(
        tenant,
        url,
        kw.pop("events", ["balance.threshold"]),
        secret=SECRET,
        payers=kw.pop("payers", []),
        imsis=[],
        private_targets=True,
    )


def url(receiver: Receiver) -> str:
    return f"http://127.0.0.1:{receiver.server_address[1]}/hook"


async def test_a_crossing_is_delivered_once_signed(
    store: BalanceStore, redis: RedisClient, receiver: Receiver
) -> None:
    await pool(store, POOL)
    sub = await subscribe(redis, url(receiver))
    metrics = WebhookMetrics(__import__("prometheus_client").CollectorRegistry())
    dispatcher = Dispatcher(redis, FAST, metrics)
    try:
        for i in range(9):  # 100 units at a time: 80 % on the 8th
            await charge(store, POOL, f"r{i}", used=100, mode="debit")
            await dispatcher.run_once(wait=True)
        assert receiver.refused == 0 and receiver.requests == 1
        [event] = receiver.events
        assert set(event) == {"id", "type", "tenant", "subject", "time", "data"}
        assert (event["type"], event["tenant"], event["subject"]) == (
            "balance.threshold",
            "t",
            {"payer": "p", "payer_kind": "prepaid_pool"},
        )
        assert event["data"] == {"unit": "bytes", "percent": 80, "left": 200, "base": 1_000,
                                 "used": 800, "period": "m1"}  # fmt: skip
        assert event["time"].endswith("Z")
        [log] = await Subscriptions(redis).deliveries("t", sub.id, 10)
        assert (log["event_id"], log["outcome"], log["status"], log["attempt"]) == (
            event["id"],
            "delivered",
            204,
            1,
        )
        assert metrics.deliveries.labels("delivered")._value.get() == 1
        # what every subscription is done with is trimmed from the outbox at the next trim
        dispatcher._trimmed = 0
        await dispatcher.run_once(wait=True)
        assert await redis.xlen(PayerKeys(POOL).events) <= 1
    finally:
        await dispatcher.close()


async def test_the_signature_is_hmac_of_timestamp_and_raw_body() -> None:
    body = b'{"id":"evt_1"}'
    from ocs.events.signing import signature

    header = signature(SECRET, 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=")
    assert verify(SECRET, header, body, now=1_700_000_100)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_100)  # body changed
    assert not verify("whsec_another-secret-000000", header, body, now=1_700_000_100)
    assert not verify(SECRET, header, body, now=1_700_000_000 + 301)  # a replay, too late


async def test_order_per_subject_filter_and_tenant(
    store: BalanceStore, redis: RedisClient, receiver: Receiver
) -> None:
    await pool(store, POOL, (10, 20, 30, 40))
    await pool(store, OTHER, (10,))
    await store.provision(
        "u:prepaid_pool:p", [BucketSpec("b", BucketUnit.BYTES, 10)], 0, resize=True
    )
    await put_api_thresholds(redis, "u:prepaid_pool:p", PayerThresholds("bytes", 10, (10,)))
    await subscribe(redis, url(receiver), payers=["p"])
    for i in range(4):
        await charge(store, POOL, f"p{i}", used=100, mode="debit")
    await charge(store, OTHER, "q", used=500, mode="debit")  # filtered out
    await charge(store, "u:prepaid_pool:p", "u", used=5, mode="debit")  # another tenant's
    dispatcher = Dispatcher(redis, FAST)
    try:
        await dispatcher.run_once(wait=True)
    finally:
        await dispatcher.close()
    events = receiver.events
    assert [e["data"]["percent"] for e in events] == [10, 20, 30, 40]
    assert {(e["tenant"], e["subject"]["payer"]) for e in events} == {("t", "p")}


async def test_receiver_down_then_back(store: BalanceStore, redis: RedisClient) -> None:
    port = free_port()  # nobody listens yet: connection refused
    await pool(store, POOL, (50, 90))
    sub = await subscribe(redis, f"http://127.0.0.1:{port}/hook")
    settings = DeliverySettings(interval=0.05, timeout=1.0, backoff=0.2, backoff_max=0.4,
                                max_attempts=50)  # fmt: skip
    dispatcher = Dispatcher(redis, settings)
    try:
        await charge(store, POOL, "a", used=600, mode="debit")
        await charge(store, POOL, "b", used=300, mode="debit")
        await dispatcher.run_once(wait=True)
        await dispatcher.run_once(wait=True)  # within the backoff: no second attempt
        [log] = await Subscriptions(redis).deliveries("t", sub.id, 10)
        assert (log["outcome"], log["status"], log["attempt"]) == ("retried", 0, 1)
        with receiving(port) as receiver:
            for _ in range(100):  # each pass after the backoff tries again
                await dispatcher.run_once(wait=True)
                if len(receiver.events) == 2:
                    break
                await asyncio.sleep(0.05)
            assert [e["data"]["percent"] for e in receiver.events] == [50, 90]  # in order
        logs = await Subscriptions(redis).deliveries("t", sub.id, 100)
        assert [x["outcome"] for x in logs][:2] == ["delivered", "delivered"]
        assert {x["outcome"] for x in logs[2:]} == {"retried"}
    finally:
        await dispatcher.close()


async def test_dead_letters_after_the_last_attempt(store: BalanceStore, redis: RedisClient) -> None:
    with receiving(free_port(), secret="whsec_not-the-subscriptions") as refusing:
        await pool(store, POOL, (50, 90))
        sub = await subscribe(redis, url(refusing))
        await charge(store, POOL, "a", used=600, mode="debit")
        await charge(store, POOL, "b", used=300, mode="debit")
        dispatcher = Dispatcher(redis, FAST)
        try:
            for _ in range(100):
                await dispatcher.run_once(wait=True)
                if len(await Subscriptions(redis).dead_letters("t", sub.id, 10)) == 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await dispatcher.close()
        dead = await Subscriptions(redis).dead_letters("t", sub.id, 10)
        assert [d["event"]["data"]["percent"] for d in dead] == [90, 50]  # newest first
        assert {(d["status"], d["attempt"], d["outcome"]) for d in dead} == {(401, 3, "failed")}
        assert refusing.requests == 6 and refusing.events == []


async def test_one_dispatcher_delivers_at_a_time(redis: RedisClient) -> None:
    first, second = Dispatcher(redis, FAST), Dispatcher(redis, FAST)
    try:
        await first.run_once()  # nobody subscribed: no lease, nothing written
        assert not first.holding and await redis.keys("*") == []
        await subscribe(redis, "https://hooks.example.com/ocs")
        await first.run_once()
        await second.run_once()
        assert (first.holding, second.holding) == (True, False)
        await first.close()  # releases the lease: the other takes over at its next pass
        await second.run_once()
        assert second.holding and await redis.get(LEASE) == second.owner.encode()
    finally:
        await second.close()


async def test_an_oversized_event_is_dead_lettered_at_once(
    store: BalanceStore, redis: RedisClient, receiver: Receiver
) -> None:
    await pool(store, POOL)
    sub = await subscribe(redis, url(receiver))
    await charge(store, POOL, "a", used=900, mode="debit")
    dispatcher = Dispatcher(redis, DeliverySettings(max_body=100))
    try:
        await dispatcher.run_once(wait=True)
    finally:
        await dispatcher.close()
    [dead] = await Subscriptions(redis).dead_letters("t", sub.id, 10)
    assert dead["attempt"] == 1 and "over the limit" in dead["error"]
    assert receiver.requests == 0
    assert json.loads(json.dumps(dead["event"]))["type"] == "balance.threshold"


async def test_an_api_write_and_its_event_go_in_one_multi(
    redis: RedisClient, receiver: Receiver
) -> None:
    """The tenant's own outbox: an API write (here a SIM's state, in the tenant's {api:T}
    slot) queues its event on the same MULTI; the dispatcher delivers it like a script's."""
    from ocs.events.outbox import tenant_event
    from ocs.provisioning.keys import tenant_prefix

    sub = await subscribe(redis, url(receiver), events=["sim.state_changed"])
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(f"{tenant_prefix('t')}:test-state", "262010000000001", "suspended")
        tenant_event(pipe, "t", "sim.state_changed", "262010000000001|1",
                     {"imsi": "262010000000001"}, {"from": "active", "to": "suspended"},
                     1_700_000_000_000)  # fmt: skip
        await pipe.execute()
    dispatcher = Dispatcher(redis, FAST)
    try:
        await dispatcher.run_once(wait=True)
    finally:
        await dispatcher.close()
    [event] = receiver.events
    assert (event["type"], event["subject"], event["data"]) == (
        "sim.state_changed",
        {"imsi": "262010000000001"},
        {"from": "active", "to": "suspended"},
    )
    assert event["time"] == "2023-11-14T22:13:20.000Z"
    [log] = await Subscriptions(redis).deliveries("t", sub.id, 10)
    assert log["outcome"] == "delivered"


async def test_on_a_redis_cluster_too(backend_redis: RedisClient, receiver: Receiver) -> None:
    """The outboxes are in the payers' slots and the subscription keys in the tenant's: the
    dispatcher's reads and writes span slots (single server and a 3-master cluster)."""
    store = BalanceStore(backend_redis)
    try:
        for tag in (POOL, OTHER):
            await pool(store, tag, (50,))
        sub = await subscribe(backend_redis, url(receiver))
        for tag in (POOL, OTHER):
            await charge(store, tag, f"c-{tag}", used=600, mode="debit")
        dispatcher = Dispatcher(backend_redis, FAST)
        try:
            await dispatcher.run_once(wait=True)
            dispatcher._trimmed = 0
            await dispatcher.run_once(wait=True)
        finally:
            await dispatcher.close()
        assert sorted(e["subject"]["payer"] for e in receiver.events) == ["p", "q"]
        logs = await Subscriptions(backend_redis).deliveries("t", sub.id, 10)
        assert [x["outcome"] for x in logs] == ["delivered", "delivered"]
        assert await Subscriptions(backend_redis).delete("t", sub.id)
    finally:
        await store.batch.close()


async def test_close_ends_the_loop_even_mid_command(backend_redis: RedisClient) -> None:
    """close() while the first pass is in a Redis command: the loop ends (on a cluster
    redis-py turns the cancelled command into an error of its own, which the loop used to
    take for an outage and go on polling after its server stopped)."""
    for _ in range(3):
        dispatcher = Dispatcher(backend_redis, FAST)
        dispatcher.start()
        await asyncio.sleep(0)  # the first pass has sent its first command
        task = dispatcher._task
        await dispatcher.close()
        assert task is not None and task.done()
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "ocs-webhooks"]
