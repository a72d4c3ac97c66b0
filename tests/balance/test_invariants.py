"""Balance invariants under concurrency: 500 sessions on one prepaid pool."""

from __future__ import annotations

import asyncio
import random

from ocs.balance import BalanceStore, BucketSpec, BucketUnit, ChargeRequest
from tests.balance.helpers import DEADLINE, NOW, assert_conserved, by_id

POOL = "t:prepaid_pool:shared"
SIZE = 5_000_000
SESSIONS = 500


def _session_plan(rng: random.Random, sid: int) -> list[tuple[int, int, bool]]:
    """(used, want, final) steps; usage is decided against the grant at run time."""
    steps = rng.randint(1, 4)
    return [(0, rng.randint(1, 40_000), False)] + [
        (1, rng.randint(0, 40_000), i == steps - 1 and rng.random() < 0.8) for i in range(steps)
    ]


async def _run_session(
    store: BalanceStore, rng: random.Random, sid: int, log: list[ChargeRequest]
) -> int:
    """Returns what the session was granted in total."""
    granted_total = 0
    last_grant = 0
    member = f"sess-{sid}|1"
    for n, (report, want, final) in enumerate(_session_plan(rng, sid)):
        used = 0
        if report:
            # mostly within the grant, sometimes more (the gateway overshoots)
            used = rng.randint(0, last_grant) if rng.random() < 0.9 else last_grant + 5_000
        req = ChargeRequest(
            request_id=f"sess-{sid}:{n}:1",
            member=member,
            unit=BucketUnit.BYTES,
            now_ms=NOW + n,
            used=used,
            want=0 if final else want,
            min_grant=1_000,
            deadline_ms=DEADLINE,
            context={"session": sid, "n": n},
        )
        log.append(req)
        result = await store.charge(POOL, req)
        assert result.granted <= req.want
        last_grant = result.granted
        granted_total += result.granted
        await asyncio.sleep(0)
    return granted_total


async def test_500_concurrent_sessions_never_exceed_the_pool_and_books_balance(
    store: BalanceStore,
) -> None:
    await store.provision(POOL, [BucketSpec("pool", BucketUnit.BYTES, SIZE)], NOW, resize=True)
    rng = random.Random(20240601)
    log: list[ChargeRequest] = []
    rngs = [random.Random(rng.random()) for _ in range(SESSIONS)]
    await asyncio.gather(*(_run_session(store, rngs[i], i, log) for i in range(SESSIONS)))

    pool = by_id(await store.buckets(POOL))["pool"]
    records = [r for r in await store.records(POOL) if r.fields["kind"] == "usage"]
    committed = sum(int(r.fields["units"]) for r in records)
    assert pool.available >= 0
    assert pool.used + pool.reserved <= SIZE
    assert pool.available + committed + pool.reserved == SIZE
    assert committed == pool.used
    assert len({r.fields["id"] for r in records}) == len(records)  # no record twice
    await assert_conserved(store, POOL)
    live = await store.live_reservations(POOL)
    assert live > 0  # sessions left without CCR-T still hold a reservation

    # A retransmission storm: every request again, concurrently, in random order.
    before = (await store.buckets(POOL), len(await store.records(POOL)))
    storm = log * 2
    rng.shuffle(storm)
    results = await asyncio.gather(*(store.charge(POOL, req) for req in storm))
    assert all(r.status != "insufficient" for r in results)
    after = (await store.buckets(POOL), len(await store.records(POOL)))
    assert after == before

    # The abandoned sessions are reclaimed once their deadline has passed.
    assert await store.reclaim_all(DEADLINE + 1) == live
    pool = by_id(await store.buckets(POOL))["pool"]
    assert pool.reserved == 0
    assert pool.available + pool.used == SIZE
    await assert_conserved(store, POOL)


async def test_exhausted_pool_is_shared_and_never_overdrawn(store: BalanceStore) -> None:
    """Far more demand than supply: every byte is granted at most once."""
    size = 100_000
    await store.provision(POOL, [BucketSpec("pool", BucketUnit.BYTES, size)], NOW, resize=True)

    async def grab(i: int) -> int:
        req = ChargeRequest(
            request_id=f"g{i}",
            member=f"g{i}|1",
            unit=BucketUnit.BYTES,
            now_ms=NOW,
            want=10_000,
            min_grant=500,
            deadline_ms=DEADLINE,
        )
        return (await store.charge(POOL, req)).granted

    grants = await asyncio.gather(*(grab(i) for i in range(SESSIONS)))
    assert sum(grants) <= size
    assert sum(grants) == size - by_id(await store.buckets(POOL))["pool"].available
    assert sum(1 for g in grants if g > 0) > 10  # shared, not taken by the first ten
    await assert_conserved(store, POOL)
