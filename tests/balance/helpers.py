from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster

from ocs.balance import BalanceStore, BucketState, ChargeRequest, ChargeResult, Rate
from ocs.balance.models import NOT_PRICED, BucketUnit
from ocs.redis_client import RedisClient

NOW = 1_700_000_000_000
DEADLINE = NOW + 60_000


async def charge(
    store: BalanceStore,
    payer: str,
    rid: str,
    *,
    member: str = "s1|1",
    used: int = 0,
    want: int = 0,
    unit: BucketUnit = BucketUnit.BYTES,
    rate: Rate = NOT_PRICED,
    min_grant: int = 0,
    mode: str = "session",
    now: int = NOW,
    deadline: int = DEADLINE,
) -> ChargeResult:
    return await store.charge(
        payer,
        ChargeRequest(
            request_id=rid,
            member=member,
            unit=unit,
            now_ms=now,
            used=used,
            want=want,
            min_grant=min_grant,
            rate=rate,
            deadline_ms=deadline,
            mode=mode,
            context={"test": rid},
        ),
    )


def by_id(buckets: list[BucketState]) -> dict[str, BucketState]:
    return {b.id: b for b in buckets}


async def assert_conserved(store: BalanceStore, payer: str) -> None:
    """credited = available + reserved + used per bucket, and used = the stream's records."""
    streamed: dict[str, int] = {}
    for rec in await store.records(payer):
        if rec.fields["kind"] in ("usage", "refund", "level"):
            for bid, amount in rec.alloc:
                streamed[bid] = streamed.get(bid, 0) + amount
    for b in await store.buckets(payer):
        if b.unlimited:
            continue
        assert b.credited == b.available + b.reserved + b.used, b
        assert b.used == streamed.get(b.id, 0), b
        assert b.available >= 0, b


async def script_loads(redis: RedisClient) -> list[int]:
    """The SCRIPT LOAD calls each master (one: a single server) has served so far."""
    if isinstance(redis, RedisCluster):
        per_node: dict[Any, Any] = await redis.info(
            "commandstats", target_nodes=RedisCluster.PRIMARIES
        )
        infos = list(per_node.values())
    else:
        infos = [await redis.info("commandstats")]
    return [int(i.get("cmdstat_script|load", {}).get("calls", 0)) for i in infos]
