"""Background RAR/ASR of the API: SIMs queued in one event-loop iteration are looked up
together, in one task, after every change of that iteration."""

from __future__ import annotations

import asyncio

from ocs.api.asgi import build_state
from ocs.config import Settings
from ocs.redis_client import RedisClient


async def test_signals_of_one_iteration_share_one_lookup(
    settings: Settings, redis: RedisClient
) -> None:
    api = build_state(settings, redis)
    try:
        api.signal_later("demo", [("001010000000001", None)], "rar")
        api.signal_later("demo", [("001010000000002", "491700000002")], "rar")
        api.signal_later("demo", [("001010000000003", None)], "asr")
        assert not api.tasks  # nothing is looked up before the requests of this iteration end
        await asyncio.sleep(0)
        assert len(api.tasks) == 2  # one lookup per operation, not one per request
        api.signal_later("demo", [("001010000000004", None)], "rar")
        await api.drain()  # sends what is queued, waits for the lookups
        assert not api.tasks
    finally:
        await api.store.batch.close()
