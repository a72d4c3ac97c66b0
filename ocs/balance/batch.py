"""Automatic pipelining of the real-time path's Redis commands.

Every CCR in flight issues its commands (the charge script, the session writes) through one
:class:`CommandBatcher`. Commands queued during one event-loop iteration go to Redis together
(no MULTI: each command keeps its own atomicity, a Lua script being one command), and each
caller gets its own replies or error. Under load one write carries the commands of many CCRs,
so the client-side cost of a round trip is paid once per batch instead of once per command.

Two ways to Redis, same semantics:

* a single Redis over TCP or a Unix socket (no TLS): one connection taken from the client's
  pool for good (:class:`_RespConnection`), which writes each batch in one ``write``
  (commands packed by hiredis) and matches replies in order. Redis runs commands one at a
  time, so one connection loses nothing; it is what redis-py's pipeline does, without its
  per-command Python (connection checkout, retry wrapper, response callbacks). Replies are raw
  RESP (``HGETALL`` gives a flat list). A reply that does not come within the client's socket
  timeout closes the connection (every caller waiting on it gets ``ConnectionError``); the
  next batch reconnects.
* Redis Cluster, TLS or anything else: a redis-py pipeline per batch (the cluster pipeline
  splits it by node).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sys
import termios
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    UnixDomainSocketConnection,
)
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.typing import EncodableT

from ocs.redis_client import RedisClient

MAX_BATCH: Final = 512  # commands per write; a longer queue is split over several
WRITE_BEHIND_DELAY: Final = 0.002  # seconds a deferred command waits for a batch to join
DEFAULT_TIMEOUT: Final = 0.5
Command = Sequence[EncodableT]


class _Group:
    """The commands of one caller, and the replies received so far."""

    __slots__ = ("fut", "need", "replies", "sent")

    def __init__(self, fut: asyncio.Future[list[Any]], need: int, sent: float) -> None:
        self.fut = fut
        self.need = need
        self.replies: list[Any] = []
        self.sent = sent


# Error replies whose class tells the caller more than "the command failed": the ones a
# restarting or failing-over Redis sends (loading, read-only replica, cluster down) are
# outages (``ocs.charging.errors.STORE_OUTAGES``), not command errors. redis-py maps them
# the same way when it parses a reply itself.
_ERROR_CLASSES: Final[tuple[tuple[str, type[RedisError]], ...]] = (
    ("NOSCRIPT", NoScriptError),
    ("LOADING", BusyLoadingError),
    ("READONLY", ReadOnlyError),
    ("MASTERDOWN", MasterDownError),
    ("CLUSTERDOWN", ClusterDownError),
    ("TRYAGAIN", TryAgainError),
    ("OOM", OutOfMemoryError),
)


def _reply_error(message: str) -> RedisError:
    for prefix, cls in _ERROR_CLASSES:
        if message.startswith(prefix):
            return cls(message)
    return ResponseError(message)


class _RespConnection:
    """One connection taken from the client's pool (so redis-py did the connect, AUTH and
    SELECT, and closing the client closes it), read by a task of ours. ``tasks`` keeps the
    task that gives the connection back to the pool, so that closing the batcher waits for
    it."""

    def __init__(
        self, redis: Redis, conn: AbstractConnection, tasks: set[asyncio.Task[None]]
    ) -> None:
        self.redis = redis
        self.conn = conn
        reader, writer = conn._reader, conn._writer
        assert reader is not None and writer is not None
        self.reader = reader
        self.writer = writer
        sock = writer.transport.get_extra_info("socket")
        self.fd: int = sock.fileno() if sock is not None else -1
        self.parser = hiredis.Reader()
        self.pending: deque[_Group] = deque()
        self.closed = False
        self.tasks = tasks
        self.given_back: asyncio.Task[None] | None = None
        self.task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        error: Exception = RedisConnectionError("connection to Redis closed")
        try:
            while data := await reader.read(1 << 16):
                self._received(data)
                if self.closed:
                    return
        except (OSError, RuntimeError) as exc:  # a closed transport, a reset connection
            error = RedisConnectionError(f"connection to Redis lost: {exc}")
        self.fail(error)

    def _received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        pending = self.pending
        while (reply := parser.gets()) is not False:
            if isinstance(reply, hiredis.ReplyError):
                reply = _reply_error(str(reply))
            if not pending:
                self.fail(RedisConnectionError("unexpected reply from Redis"))
                return
            group = pending[0]
            group.replies.append(reply)
            if len(group.replies) == group.need:
                pending.popleft()
                if not group.fut.done():
                    group.fut.set_result(group.replies)

    def fail(self, exc: Exception) -> None:
        """Every caller still waiting gets ``exc``; the connection goes back to the pool
        disconnected (the pool reconnects it for its next user)."""
        if self.closed:
            return
        self.closed = True
        while self.pending:
            group = self.pending.popleft()
            if not group.fut.done():
                group.fut.set_exception(exc)
        self.writer.transport.abort()
        task = self.given_back = asyncio.get_running_loop().create_task(self._give_back())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _give_back(self) -> None:
        try:
            await self.conn.disconnect()
        finally:
            await self.redis.connection_pool.release(self.conn)

    def send(self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]) -> None:
        now = time.monotonic()
        chunks: list[bytes] = []
        for commands, fut in batch:
            for args in commands:
                chunks.append(hiredis.pack_command(tuple(args)))  # type: ignore[arg-type]
            self.pending.append(_Group(fut, len(commands), now))
        try:
            self.writer.write(b"".join(chunks))
        except (OSError, RuntimeError) as exc:
            # the transport closed under us (Redis went away between the last read and this
            # write; uvloop raises RuntimeError "unable to perform operation on
            # <TCPTransport closed=True>"): every caller gets a connection error, the next
            # batch reconnects. Never an exception out of a loop callback (a traceback).
            self.fail(RedisConnectionError(f"connection to Redis lost: {exc}"))

    def overdue(self, timeout: float) -> bool:
        """The oldest command has waited more than ``timeout`` for its reply and no reply is
        waiting to be read. Replies that came while this event loop was busy (a burst of
        requests, the process preempted) sit in the socket or the reader's buffer until the
        loop polls again, after this check: they are the loop's delay, not Redis', and
        failing the connection for them would fail every request in flight."""
        if not self.pending or time.monotonic() - self.pending[0].sent <= timeout:
            return False
        return not self._replies_waiting()

    def _replies_waiting(self) -> bool:
        if getattr(self.reader, "_buffer", None):  # read from the socket, not yet parsed
            return True
        if self.fd < 0:
            return False
        try:
            raw = fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return False
        return int.from_bytes(raw, sys.byteorder) > 0

    async def close(self, timeout: float) -> None:
        if self.pending:
            await asyncio.wait([g.fut for g in self.pending], timeout=timeout)
        self.fail(RedisConnectionError("closed"))
        await self.task
        if self.given_back is not None:
            await asyncio.gather(self.given_back, return_exceptions=True)


class CommandBatcher:
    def __init__(
        self, redis: RedisClient, *, max_batch: int = MAX_BATCH, own_connection: bool = True
    ) -> None:
        """``own_connection=False``: a redis-py pipeline (pooled connections) per batch even
        on a single Redis, for writes that are off the answer's path."""
        self.redis = redis
        self.max_batch = max_batch
        self._queue: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        self._queued = 0
        self._scheduled = False
        self._deferred: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._direct = _direct_params(redis) if own_connection else None
        self._conn: _RespConnection | None = None
        self._connecting: asyncio.Lock | None = None
        self.batches = 0  # writes (or pipelines) sent, for tests and benchmarks
        self.commands = 0

    async def execute(self, *args: EncodableT) -> Any:
        """One command; its reply, or raises its error."""
        (reply,) = await self.execute_many((args,))
        return reply

    async def execute_many(self, commands: Sequence[Command]) -> list[Any]:
        """Several commands, sent in this order in one batch; their replies. Raises the
        first error reply (after every command of the group has run)."""
        replies = await self.submit(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def submit(
        self, commands: Sequence[Command], *, defer: bool = False
    ) -> asyncio.Future[list[Any]]:
        """Queue commands for the next batch without waiting: the future gets their replies
        (error replies as exception objects in the list) or a connection error.

        ``defer``: nobody waits for these (write-behind): on our own connection they go
        with the next batch that someone does wait for, or on their own after
        ``WRITE_BEHIND_DELAY`` (a redis-py pipeline, for a cluster or TLS, is a task per
        batch: those are sent at once, as before, so no batch is left behind in a task).
        When requests come one at a time, the answer written behind a CCR then shares the
        write (and the read of the replies) of the next CCR's charge instead of costing its
        own system calls. Order is kept: every command goes out in the order it was queued."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((commands, fut))
        self._queued += len(commands)
        if self._queued >= self.max_batch:
            self._flush()
        elif defer and self._direct is not None:  # pipelines (cluster, TLS) go right away
            if not self._scheduled and self._deferred is None:
                self._deferred = loop.call_later(WRITE_BEHIND_DELAY, self._flush)
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        if not self._queue:
            return
        batch, self._queue, self._queued = self._queue, [], 0
        live = [(cmds, fut) for cmds, fut in batch if not fut.done()]  # drop timed-out callers
        if not live:
            return
        self.batches += 1
        self.commands += sum(len(cmds) for cmds, _ in live)
        conn = self._conn
        if self._direct is not None and conn is not None and not conn.closed:
            if conn.overdue(self._direct.get("timeout", DEFAULT_TIMEOUT)):
                conn.fail(RedisConnectionError("Redis did not answer in time"))
            else:
                conn.send(live)
                return
        send = self._send_direct(live) if self._direct is not None else self._send_pipeline(live)
        task = asyncio.get_running_loop().create_task(send)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def warm_up(self) -> None:
        """Open the connection now, in the background, so that the first batch does not wait
        for a connect (nothing to do for pipelines, or when connected)."""
        if self._direct is None or (self._conn is not None and not self._conn.closed):
            return
        task = asyncio.get_running_loop().create_task(self._warm_up())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _warm_up(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, RedisError):
            await self._connect()

    # -- a connection of our own to a single Redis ------------------------------------------
    async def _send_direct(
        self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]
    ) -> None:
        try:
            conn = await self._connect()
        except (OSError, TimeoutError, RedisError) as exc:  # refused, timed out, AUTH ...
            error = RedisConnectionError(f"cannot connect to Redis: {exc}")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(error)
            return
        conn.send(batch)

    async def _connect(self) -> _RespConnection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            conn = self._conn
            if conn is not None and not conn.closed:
                return conn
            assert isinstance(self.redis, Redis)
            pooled = await self.redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            conn = self._conn = _RespConnection(self.redis, pooled, self._running)
            return conn

    # -- redis-py (cluster, TLS) -----------------------------------------------------------
    async def _send_pipeline(
        self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]
    ) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for cmds, _ in batch:
                    for args in cmds:
                        pipe.execute_command(*args)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # connection-level: every caller of the batch gets it
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except asyncio.CancelledError:
            for _, fut in batch:
                if not fut.done():
                    fut.cancel()
            raise
        at = 0
        for cmds, fut in batch:
            n = len(cmds)
            if not fut.done():
                fut.set_result(list(replies[at : at + n]))
            at += n

    async def close(self) -> None:
        """Send what is queued, wait for the batches in flight, give our connection back."""
        if self._queue:
            self._flush()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close(self._timeout())

    def _timeout(self) -> float:
        return float((self._direct or {}).get("timeout", DEFAULT_TIMEOUT))


def _direct_params(redis: RedisClient) -> dict[str, Any] | None:
    """Where to open our own connection: a plain TCP or Unix-socket single Redis; else None."""
    if not isinstance(redis, Redis):
        return None
    pool = redis.connection_pool
    kwargs = pool.connection_kwargs
    params: dict[str, Any] = {"timeout": kwargs.get("socket_timeout") or DEFAULT_TIMEOUT}
    if pool.connection_class not in (Connection, UnixDomainSocketConnection):
        return None  # TLS or a custom connection class: leave it to redis-py
    return params
