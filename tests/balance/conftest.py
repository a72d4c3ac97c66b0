from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ocs.balance import BalanceStore
from ocs.redis_client import RedisClient
from tests.balance.fixtures import flushed_client, redis_base_url
from tests.conftest import backend_url

__all__ = ["redis_base_url"]

BALANCE_DB = 13


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_backend: str) -> str:
    """This suite's DB on the single server, or the session's Redis Cluster."""
    return backend_url(request, redis_backend, BALANCE_DB)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    async for client in flushed_client(redis_url):
        yield client


@pytest.fixture
async def store(redis: RedisClient) -> AsyncIterator[BalanceStore]:
    store = BalanceStore(redis)
    yield store
    await store.batch.close()  # its own connection and reader task
