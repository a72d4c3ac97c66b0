from __future__ import annotations

import pytest

from tests.balance.fixtures import redis, redis_base_url, store
from tests.conftest import backend_url

__all__ = ["redis", "redis_base_url", "store"]

BALANCE_DB = 13


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_backend: str) -> str:
    """This suite's DB on the single server, or the session's Redis Cluster."""
    return backend_url(request, redis_backend, BALANCE_DB)
