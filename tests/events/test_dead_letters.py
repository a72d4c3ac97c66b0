"""Dead letters sent again (ocs.events.dead) through the real dispatcher, a real Redis and a
real receiver that first refuses, then verifies: the event keeps its id and time, arrives
marked ``Ocs-Redelivered`` after the newer events of its subject delivered meanwhile, in the
order the letters died; a redelivery that fails again is a dead letter again; two operators
redelivering at once queue each letter once; dropped letters are gone."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import CollectorRegistry

from ocs.balance import BalanceStore
from ocs.events.dead import DeadLetters, outbox_fields
from ocs.events.dispatcher import Dispatcher
from ocs.events.keys import redeliver_key
from ocs.events.metrics import WebhookMetrics
from ocs.events.model import Event
from ocs.events.subscriptions import Subscriptions
from ocs.redis_client import RedisClient
from tests.balance.helpers import charge
from tests.events.conftest import free_port, receiving
from tests.events.test_dispatcher import FAST, POOL, pool, subscribe, url
from tools.webhook_receiver import Receiver

WRONG = "whsec_not-the-subscriptions"


async def _passes(dispatcher: Dispatcher, done: object, tries: int = 200) -> None:
    """Dispatcher passes until ``done()`` (an async predicate) holds."""
    for _ in range(tries):
        await dispatcher.run_once(wait=True)
        if await done():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not reached")


async def _dead(redis: RedisClient, sub: str) -> list[dict[str, object]]:
    return await Subscriptions(redis).dead_letters("t", sub, 100)


async def test_redelivered_with_its_id_after_newer_events_of_its_subject(
    store: BalanceStore, redis: RedisClient
) -> None:
    port = free_port()
    await pool(store, POOL, (50, 60, 90))
    sub = await subscribe(redis, f"http://127.0.0.1:{port}/hook")
    metrics = WebhookMetrics(CollectorRegistry())
    dispatcher = Dispatcher(redis, FAST, metrics)
    try:
        with receiving(port, secret=WRONG) as refusing:  # a receiver with a wrong secret
            await charge(store, POOL, "a", used=550, mode="debit")  # 50 %
            await charge(store, POOL, "b", used=100, mode="debit")  # 60 %

            async def two_dead() -> bool:
                return len(await _dead(redis, sub.id)) == 2

            await _passes(dispatcher, two_dead)
            assert refusing.events == [] and refusing.refused == 6  # 3 attempts each
        dead = await _dead(redis, sub.id)
        assert [d["event"]["data"]["percent"] for d in dead] == [60, 50]  # type: ignore[index]
        with receiving(port) as receiver:  # fixed: the next event goes through at once
            await charge(store, POOL, "c", used=300, mode="debit")  # 90 %
            await dispatcher.run_once(wait=True)
            assert [e["data"]["percent"] for e in receiver.events] == [90]
            outcome = await DeadLetters(redis).redeliver("t", sub.id, None)
            assert (outcome.done, outcome.unknown) == (2, [])
            assert await _dead(redis, sub.id) == []  # out of the dead letters at once
            await dispatcher.run_once(wait=True)
            events = receiver.events
        # after the newer 90 %, in the order they died, each with its id and time
        assert [e["data"]["percent"] for e in events] == [90, 50, 60]
        by_id = {d["event"]["id"]: d["event"] for d in dead}  # type: ignore[index]
        assert {e["id"]: e for e in events[1:]} == by_id
        assert receiver.redelivered == [events[1]["id"], events[2]["id"]]
        assert receiver.refused == 0
        logs = await Subscriptions(redis).deliveries("t", sub.id, 3)
        assert [(x["event_id"], x["outcome"]) for x in logs] == [
            (events[2]["id"], "delivered"),
            (events[1]["id"], "delivered"),
            (events[0]["id"], "delivered"),
        ]
        assert metrics.redeliveries.labels("delivered")._value.get() == 2
        assert metrics.deliveries.labels("failed")._value.get() == 2
        # a second redelivery of the same letters: nothing left to send
        assert (await DeadLetters(redis).redeliver("t", sub.id, None)).done == 0
        assert await redis.xlen(redeliver_key("t", sub.id)) == 0  # only what is to send
    finally:
        await dispatcher.close()


async def test_a_redelivery_that_fails_again_is_a_dead_letter_again(
    store: BalanceStore, redis: RedisClient
) -> None:
    port = free_port()
    await pool(store, POOL, (50,))
    sub = await subscribe(redis, f"http://127.0.0.1:{port}/hook")
    dispatcher = Dispatcher(redis, FAST)
    try:
        await charge(store, POOL, "a", used=600, mode="debit")

        async def one_dead() -> bool:
            return len(await _dead(redis, sub.id)) == 1

        await _passes(dispatcher, one_dead)  # nobody listens: connection refused
        [first] = await _dead(redis, sub.id)
        outcome = await DeadLetters(redis).redeliver("t", sub.id, [str(first["entry"])])
        assert outcome.done == 1 and await _dead(redis, sub.id) == []
        await _passes(dispatcher, one_dead)  # still nobody: 3 more attempts, dead again
        [again] = await _dead(redis, sub.id)
        assert again["event"] == first["event"] and again["entry"] != first["entry"]
        assert (again["outcome"], again["attempt"], again["status"]) == ("failed", 3, 0)
        logs = await Subscriptions(redis).deliveries("t", sub.id, 100)
        assert [x["outcome"] for x in logs].count("failed") == 2
    finally:
        await dispatcher.close()


async def test_concurrent_redeliveries_queue_each_letter_once_and_drops(
    redis: RedisClient,
) -> None:
    """Letters written as the dispatcher writes them: 1,200 (more than one script call),
    two 'all' redeliveries at once, then entries, unknown ids and drops."""
    sub = await subscribe(redis, "https://hooks.example.com/ocs")
    dead = f"ocs:wh:{{wh:t}}:dead:{sub.id}"
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(1_300):
            data = f'{{"big":{2**63 + i}}}'
            event = Event(f"evt_{i:032x}", "t", "balance.threshold", '{"payer":"p"}',
                          1_700_000_000_000 + i, data, {})  # fmt: skip
            fields = {"event_id": event.id, "type": event.type, "attempt": "3",
                      "outcome": "failed", "status": "500", "error": "HTTP 500", "ms": "1",
                      "at_ms": "1", "event_body": event.body().decode()}  # fmt: skip
            pipe.xadd(dead, fields)
        await pipe.execute()
    letters = DeadLetters(redis)
    keep = [str(d["entry"]) for d in await Subscriptions(redis).dead_letters("t", sub.id, 100)]
    dropped = await letters.drop("t", sub.id, [*keep, "1-1"])
    assert (dropped.done, dropped.unknown) == (100, ["1-1"])
    one, two = await asyncio.gather(
        letters.redeliver("t", sub.id, None), letters.redeliver("t", sub.id, None)
    )
    assert one.done + two.done == 1_200
    queued = await redis.xrange(redeliver_key("t", sub.id))
    ids = [fields[b"id"].decode() for _, fields in queued]
    assert len(ids) == len(set(ids)) == 1_200
    assert ids == sorted(ids)  # oldest first: the order they died in
    first = queued[0][1]
    assert json.loads(first[b"data"]) == {"big": 2**63}  # exact beyond 2^53
    assert (first[b"time"], first[b"subject"]) == (b"1700000000000", b'{"payer":"p"}')
    again = await letters.redeliver("t", sub.id, [keep[0]])
    assert (again.done, again.unknown) == (0, [keep[0]])  # dropped: not a letter any more
    assert (await letters.drop("t", sub.id, None)).done == 0
    assert await Subscriptions(redis).delete("t", sub.id)
    assert await redis.exists(redeliver_key("t", sub.id)) == 0


def test_outbox_fields_read_back_what_the_body_says() -> None:
    event = Event("evt_" + "a" * 32, "t", "quota.exhausted", '{"imsi":"1","payer":"p"}',
                  1_700_000_000_123, '{"left":0,"unit":"bytes"}', {})  # fmt: skip
    assert outbox_fields(event.body().decode()) == [
        event.id, "t", "quota.exhausted", event.subject_json, "1700000000123", event.data_json,
    ]  # fmt: skip


async def test_redelivery_on_a_redis_cluster_too(
    backend_redis: RedisClient, receiver: Receiver
) -> None:
    """The move of a letter (one script over the dead letters and the queue) names keys of
    one slot, the tenant's ``{wh:T}``: single server and a 3-master cluster alike."""
    sub = await subscribe(backend_redis, url(receiver))
    event = Event("evt_" + "c" * 32, "t", "balance.threshold", '{"payer":"p"}',
                  1_700_000_000_000, '{"percent":80}', {})  # fmt: skip
    await backend_redis.xadd(
        f"ocs:wh:{{wh:t}}:dead:{sub.id}",
        {"event_id": event.id, "type": event.type, "attempt": "3", "outcome": "failed",
         "status": "0", "error": "timeout", "ms": "1", "at_ms": "1",
         "event_body": event.body().decode()},
    )  # fmt: skip
    outcome = await DeadLetters(backend_redis).redeliver("t", sub.id, None)
    assert (outcome.done, outcome.unknown) == (1, [])
    dispatcher = Dispatcher(backend_redis, FAST)
    try:
        await dispatcher.run_once(wait=True)
    finally:
        await dispatcher.close()
    assert [e["id"] for e in receiver.events] == [event.id]
    assert receiver.redelivered == [event.id]
    assert await backend_redis.xlen(redeliver_key("t", sub.id)) == 0
