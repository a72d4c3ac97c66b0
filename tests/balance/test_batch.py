"""The auto-pipelining batcher against a real Redis: a late reply is told apart from an event
loop that was too busy to read it, and closing gives every connection back to the pool."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from ocs.balance.batch import CommandBatcher
from ocs.redis_client import client_for_url

TIMEOUT = 0.2  # the client's socket timeout: how long a reply may take


class MuteProxy:
    """A TCP relay to Redis whose replies can be held back (``muted``): Redis still runs the
    commands, the client never hears about it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.muted = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, mutable=False)),
            asyncio.create_task(self._pipe(up_reader, writer, mutable=True)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await w.wait_closed()
            self._tasks.difference_update(tasks)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, mutable: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if not (mutable and self.muted):
                    writer.write(data)
                    await writer.drain()
        writer.close()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    if not redis_url.startswith("redis://"):
        pytest.skip("the batcher's own connection is for a single Redis over TCP")
    redis = client_for_url(redis_url, timeout=TIMEOUT)
    assert isinstance(redis, Redis)
    await redis.flushdb()
    try:
        yield redis
    finally:
        await redis.flushdb()
        await redis.aclose()


@pytest.fixture
async def muted_client(redis_url: str) -> AsyncIterator[tuple[Redis, MuteProxy]]:
    parts = urlsplit(redis_url)
    if parts.scheme != "redis":
        pytest.skip("the proxy relays TCP to a single Redis")
    proxy = MuteProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    await proxy.start()
    redis = client_for_url(f"redis://127.0.0.1:{proxy.port}{parts.path}", timeout=TIMEOUT)
    assert isinstance(redis, Redis)
    await redis.flushdb()
    try:
        yield redis, proxy
    finally:
        proxy.muted = False
        await redis.flushdb()
        await redis.aclose()
        await proxy.stop()


def in_use(redis: Redis) -> int:
    return len(redis.connection_pool._in_use_connections)  # type: ignore[attr-defined]


@pytest.mark.parametrize("redis_backend", ["single"], indirect=True)
async def test_replies_waiting_while_the_loop_was_busy_are_not_a_timeout(client: Redis) -> None:
    batcher = CommandBatcher(client)
    assert await batcher.execute("PING") in (b"PONG", "PONG")
    first = batcher.submit([("SET", "batch:k", "v")])
    await asyncio.sleep(0)  # the batch goes out ...
    # ... and the loop is busy far beyond the timeout, as in a burst (blocking on purpose)
    time.sleep(TIMEOUT * 2)  # noqa: ASYNC251
    # Redis answered long ago: the reply sits in the socket, read after the next flush
    second = batcher.submit([("GET", "batch:k")])
    assert await first == [b"OK"]
    assert await second == [b"v"]
    assert batcher.batches == 3  # no reconnection, no batch failed
    await batcher.close()
    assert in_use(client) == 0


@pytest.mark.parametrize("redis_backend", ["single"], indirect=True)
async def test_a_redis_that_stops_answering_fails_the_callers_then_reconnects(
    muted_client: tuple[Redis, MuteProxy],
) -> None:
    redis, proxy = muted_client
    batcher = CommandBatcher(redis)
    assert await batcher.execute("PING") in (b"PONG", "PONG")
    proxy.muted = True
    late = batcher.submit([("INCR", "batch:n")])
    await asyncio.sleep(TIMEOUT * 2)  # no reply arrives: Redis is late
    proxy.muted = False
    after = batcher.submit([("INCR", "batch:n")])
    with pytest.raises(RedisConnectionError, match="did not answer in time"):
        await late
    assert await after == [2]  # a new connection; the late INCR did run in Redis
    await batcher.close()
    assert in_use(redis) == 0  # the failed connection was given back too


@pytest.mark.parametrize("redis_backend", ["single"], indirect=True)
async def test_close_waits_for_every_connection_to_go_back_to_the_pool(client: Redis) -> None:
    batcher = CommandBatcher(client)
    replies = await asyncio.gather(*(batcher.execute("INCR", "batch:c") for _ in range(100)))
    assert sorted(replies) == list(range(1, 101))
    assert in_use(client) == 1  # one connection for every command
    conn = batcher._conn
    assert conn is not None
    conn.fail(RedisConnectionError("cut"))  # as a reset connection does
    assert await batcher.execute("GET", "batch:c") == b"100"
    await batcher.close()
    assert in_use(client) == 0


@pytest.mark.parametrize("redis_backend", ["single"], indirect=True)
async def test_deferred_writes_join_the_next_batch_or_go_on_their_own(client: Redis) -> None:
    batcher = CommandBatcher(client)
    assert await batcher.execute("PING") in (b"PONG", "PONG")
    sent = batcher.batches
    behind = batcher.submit([("SET", "batch:d", "1")], defer=True)
    await asyncio.sleep(0)
    assert batcher.batches == sent  # nobody waits for it: not sent on its own yet
    assert await batcher.execute("GET", "batch:d") == b"1"  # one batch, in queue order
    assert batcher.batches == sent + 1
    assert await behind == [b"OK"]
    alone = batcher.submit([("SET", "batch:e", "2")], defer=True)
    assert await alone == [b"OK"]  # no company came: it went after the delay
    assert batcher.batches == sent + 2
    await batcher.close()
    assert in_use(client) == 0
