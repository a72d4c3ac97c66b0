"""`ocs serve` audits the balances every ``audit_interval`` seconds and exports what it
finds as ``ocs_audit_discrepancies`` (the Redis checks; the records check needs
``database_url``)."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from ocs.balance import BalanceStore
from ocs.balance.keys import PayerKeys
from ocs.charging.config import ChargingConfig
from ocs.redis_client import RedisClient
from tests.charging.conftest import served, settings_for
from tests.charging.helpers import ACME_POOL

WAIT = 30.0


async def _gauge_becomes(value: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while REGISTRY.get_sample_value("ocs_audit_discrepancies") != value:
        assert loop.time() < deadline, REGISTRY.get_sample_value("ocs_audit_discrepancies")
        await asyncio.sleep(0.05)  # a gauge set by the server's task: polled


async def test_the_server_audits_periodically_and_exports_the_discrepancies(
    store: BalanceStore, redis: RedisClient, redis_url: str, config: ChargingConfig
) -> None:
    settings = settings_for(redis_url, config, audit_interval=0.1)
    async with served(settings):
        await _gauge_becomes(0)
        balances = PayerKeys(ACME_POOL).balances
        await redis.hincrby(balances, "acme-pool:u", 42)  # type: ignore[misc]  # planted
        await _gauge_becomes(1)  # credited != available + reserved + used
        await redis.hincrby(balances, "acme-pool:u", -42)  # type: ignore[misc]
        await _gauge_becomes(0)
    assert REGISTRY.get_sample_value("ocs_audit_last_run_timestamp_seconds") is not None
