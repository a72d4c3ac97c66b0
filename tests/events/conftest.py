"""The webhook side against a real Redis (DB 6, flushed) and a real HTTP receiver
(``tools/webhook_receiver.py`` on a free port, in a thread)."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Final

import pytest

from ocs.redis_client import RedisClient
from tests.balance.fixtures import db_url, flushed_client, redis, redis_base_url, store
from tests.conftest import backend_url
from tools.webhook_receiver import Receiver

__all__ = ["redis", "redis_base_url", "store"]

EVENTS_DB: Final = 6  # 7: docs, 8: workers, 9: cli, 10: api, 12: offline, 13: balance, 14: charging
SECRET: Final = "whsec_test-secret-0123456789"


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    return db_url(redis_base_url, EVENTS_DB)


@pytest.fixture
def backend_redis_url(request: pytest.FixtureRequest, redis_backend: str) -> str:
    """This suite's DB on the single server, or the session's Redis Cluster."""
    return backend_url(request, redis_backend, EVENTS_DB)


@pytest.fixture
async def backend_redis(backend_redis_url: str) -> AsyncIterator[RedisClient]:
    async for client in flushed_client(backend_redis_url):
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def receiving(port: int, secret: str = SECRET) -> Iterator[Receiver]:
    """The receiver up on ``port`` until the block ends (then the port refuses)."""
    server = Receiver(port, secret)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving(free_port()) as server:
        yield server
