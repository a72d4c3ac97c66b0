from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from ocs.balance import BalanceStore
from tests.balance.fixtures import db_url, flushed_client, redis_base_url

__all__ = ["redis_base_url"]

BALANCE_DB = 13


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    return db_url(redis_base_url, BALANCE_DB)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    async for client in flushed_client(redis_url):
        yield client


@pytest.fixture
def store(redis: Redis) -> BalanceStore:
    return BalanceStore(redis)
