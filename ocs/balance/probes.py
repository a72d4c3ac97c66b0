"""Measurements of the shared balance store for gauges, taken by the periodic charging task
(``ocs.charging.runtime``) rather than per request. Here, not in ``ocs.observability``: the
observability package imports no feature package (it only knows metrics, health, logs)."""

from __future__ import annotations

from typing import Any

from ocs.balance.keys import PAYERS
from ocs.balance.slots import locate_all
from ocs.redis_client import RedisClient


async def outstanding_reservations(redis: RedisClient) -> int:
    """Reservations held on every registered payer: one pipelined ZCARD of each payer's
    reservation index (a Redis Cluster client splits the pipeline by slot)."""
    members: Any = await redis.smembers(PAYERS)
    if not members:
        return 0
    pipe = redis.pipeline(transaction=False)
    tags = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in members]
    for k in await locate_all(redis, tags):  # a reserved upper level counts its own
        pipe.zcard(k.reservation_index)
    counts: list[Any] = await pipe.execute()
    return sum(int(n) for n in counts)
