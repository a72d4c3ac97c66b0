"""asyncio transport: one :class:`DiameterProtocol` per TCP (or TLS) connection, carrying out
the actions of its sans-I/O :class:`~ocs.diameter.peer.PeerConnection`, and
:class:`DiameterServer` with an explicit lifecycle (start, serve, graceful stop).

Backpressure: a peer that stops reading makes our transport's write buffer grow; above the
high-water mark we stop reading from that peer (no new requests are accepted from it) until the
buffer drains, and if it has not drained below the mark within ``message_timeout`` the
connection is aborted (a peer that reads a byte a second is not a peer either). The number of
requests in flight per connection is capped the same way, so one peer can never make the
server buffer without bound. Errors in one connection never reach
another: every callback catches and closes only its own connection.

Limits (:class:`ConnectionLimits`): at most ``max_connections`` connections in all and
``max_per_address`` from one source address; a connection over either is aborted as soon as
it is accepted. When the total is reached, the oldest connection still waiting for its CER
gives its place to the new one (a flood of silent connections cannot lock a configured peer
out; a configured peer completes its CER in one round trip). A TLS handshake must end within
the CER timeout. Every refusal is counted through ``on_refusal(reason)``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from .codec import Message
from .constants import DisconnectCause
from .node import Node, PeerInfo
from .peer import (
    Action,
    Close,
    Deliver,
    Dispatch,
    LocalConfig,
    Opened,
    PeerConnection,
    PeerState,
    Refused,
    Send,
)
from .peers import (
    REFUSED_EVICTED,
    REFUSED_MAX_CONNECTIONS,
    REFUSED_MAX_PER_ADDRESS,
    REFUSED_SLOW_READER,
    ConnectionOrigin,
    certificate_names,
)

log = logging.getLogger("ocs.diameter")

MAX_IN_FLIGHT = 1024  # requests being answered per connection before we stop reading

RefusalCounter = Callable[[str], None]


def _no_count(_reason: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 1024
    max_per_address: int = 64


def connection_origin(transport: asyncio.BaseTransport) -> ConnectionOrigin:
    """The remote address and, over TLS, the names of the client certificate."""
    peername = transport.get_extra_info("peername")
    address = str(peername[0]) if isinstance(peername, tuple) and peername else None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return ConnectionOrigin(address)
    cert = ssl_object.getpeercert()
    return ConnectionOrigin(address, tls=True, cert_names=certificate_names(cert))


class DiameterProtocol(asyncio.Protocol):
    def __init__(
        self,
        node: Node,
        config: LocalConfig,
        *,
        initiator: bool = False,
        write_buffer_high: int = 4 << 20,
        on_close: Callable[[DiameterProtocol], None] | None = None,
        on_open: Callable[[DiameterProtocol], bool] | None = None,
        on_refusal: RefusalCounter = _no_count,
    ) -> None:
        self.node = node
        self.config = config
        self.initiator = initiator
        self.write_buffer_high = write_buffer_high
        self._on_close = on_close
        self._on_open = on_open  # the server's admission: False aborts the connection
        self._on_refusal = on_refusal
        self.address: str | None = None
        self.loop = asyncio.get_running_loop()
        self.peer = PeerConnection(config, initiator=initiator, now=self.loop.time())
        self.transport: asyncio.Transport | None = None
        self.info: PeerInfo | None = None
        self.opened: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_paused = False
        self._write_stall: asyncio.TimerHandle | None = None  # aborts a peer that stopped reading
        self._read_paused = False
        self._out: list[bytes] = []  # written in this loop iteration, flushed as one write

    # -- asyncio callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport: no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        origin = connection_origin(transport)
        self.address = origin.address
        if self._on_open is not None and not self._on_open(self):
            self.transport.abort()
            return
        self.peer.origin = origin
        self.transport.set_write_buffer_limits(high=self.write_buffer_high)
        self._run(self.peer.start(self.loop.time()))
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        try:
            actions = self.peer.receive_data(data, self.loop.time())
        except Exception:  # a bug must cost this connection, never the server
            log.exception("peer state machine failed; closing connection")
            self._close("internal error")
            return
        self._run(actions)
        timer = self._timer
        if timer is not None and self.peer.next_deadline() < timer.when():
            # the deadline moved earlier (the CER opened the connection: Tw instead of the
            # CER timeout; a message started: its message_timeout)
            timer.cancel()
            self._arm_timer()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._write_stall is not None:
            self._write_stall.cancel()
        if self.info is not None:
            self.node.peer_closed(self.info)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("Diameter connection closed"))
        self._pending.clear()
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("connection closed before CEA"))
            self.opened.exception()  # mark retrieved
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_close is not None:
            self._on_close(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()
        if self._write_stall is None:
            self._write_stall = self.loop.call_later(
                self.config.message_timeout, self._write_stalled
            )

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None
        self._update_reading()

    def _write_stalled(self) -> None:
        self._write_stall = None
        transport = self.transport
        if self._write_paused and transport is not None and not transport.is_closing():
            self._on_refusal(REFUSED_SLOW_READER)
            log.info(
                "aborting connection from %s: it read none of our answers for %g s",
                self.address,
                self.config.message_timeout,
            )
            transport.abort()  # the unsent answers are dropped, not flushed

    # -- actions ---------------------------------------------------------------------------
    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._write(action.data)
            elif isinstance(action, Dispatch):
                self._dispatch(action.request)
            elif isinstance(action, Deliver):
                fut = self._pending.pop(action.answer.hbh_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(action.answer)
            elif isinstance(action, Opened):
                remote = action.peer
                spec = remote.spec
                self.info = PeerInfo(
                    remote.origin_host,
                    remote.origin_realm,
                    self.send_request,
                    spec.tenants if spec is not None else frozenset(),
                )
                if spec is not None and not spec.configured:
                    log.warning(
                        "admitted unknown peer %r (realm %r) from %s: accept_unknown_peers is on",
                        remote.origin_host,
                        remote.origin_realm,
                        self.peer.origin.describe(),
                    )
                self.node.peer_opened(self.info)
                if not self.opened.done():
                    self.opened.set_result(None)
            elif isinstance(action, Refused):
                log.info("refused (%s): %s", action.reason, action.detail)
                self._on_refusal(action.reason)
            elif isinstance(action, Close):
                log.info("closing connection: %s", action.reason)
                self._close(action.reason)

    def _write(self, data: bytes) -> None:
        """Queue ``data``; what is queued in one event-loop iteration goes out in one write
        (one syscall for a burst of answers instead of one each)."""
        out = self._out
        out.append(data)
        if len(out) == 1:
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        self._out = []
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _close(self, reason: str) -> None:
        self._flush()  # an error answer queued just before the close still goes out
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def _dispatch(self, request: Message) -> None:
        info = self.info
        if info is None:  # cannot happen: the peer only dispatches once open
            return
        task = self.loop.create_task(self._answer(request, info))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        self._update_reading()

    async def _answer(self, request: Message, info: PeerInfo) -> None:
        raw = await self.node.handle(request, info)
        self._write(raw)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("answering failed", exc_info=task.exception())
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        should_pause = self._write_paused or len(self._tasks) >= MAX_IN_FLIGHT
        if should_pause and not self._read_paused:
            transport.pause_reading()
            self._read_paused = True
        elif not should_pause and self._read_paused:
            transport.resume_reading()
            self._read_paused = False

    # -- timers ----------------------------------------------------------------------------
    def _arm_timer(self) -> None:
        if self.peer.closed:
            return
        self._timer = self.loop.call_at(self.peer.next_deadline(), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self._run(self.peer.on_timer(self.loop.time()))
        except Exception:
            log.exception("peer timer failed; closing connection")
            self._close("internal error")
            return
        self._arm_timer()

    # -- requests we originate -------------------------------------------------------------
    async def send_request(self, request: Message, timeout: float = 10.0) -> Message:
        if not self.peer.is_open:
            raise ConnectionError("Diameter connection is not open")
        hbh, raw = self.peer.request(request)
        fut: asyncio.Future[Message] = self.loop.create_future()
        self._pending[hbh] = fut
        self._write(raw)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(hbh, None)

    async def disconnect(self, timeout: float) -> None:
        """Graceful close: DPR, wait for DPA (or the peer closing), then close."""
        self._run(self.peer.disconnect(self.loop.time(), DisconnectCause.REBOOTING))
        self._arm_timer()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            self._close("DPA timeout")

    async def drain(self, timeout: float) -> None:
        """Wait for in-flight requests of this connection to be answered."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


class DiameterServer:
    """Listens, accepts peers within :class:`ConnectionLimits`, and shuts down gracefully."""

    def __init__(
        self,
        node: Node,
        config: LocalConfig,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        write_buffer_high: int = 4 << 20,
        limits: ConnectionLimits | None = None,
        on_refusal: RefusalCounter = _no_count,
    ) -> None:
        self.node = node
        self.config = config
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.write_buffer_high = write_buffer_high
        self.limits = limits if limits is not None else ConnectionLimits()
        self.on_refusal = on_refusal
        self.connections: set[DiameterProtocol] = set()
        self._admitted: dict[DiameterProtocol, None] = {}  # in order of arrival
        self._per_address: dict[str | None, int] = {}
        self._server: asyncio.Server | None = None

    def _factory(self) -> DiameterProtocol:
        proto = DiameterProtocol(
            self.node,
            self.config,
            write_buffer_high=self.write_buffer_high,
            on_close=self._closed,
            on_open=self._admit,
            on_refusal=self.on_refusal,
        )
        self.connections.add(proto)
        return proto

    def _admit(self, proto: DiameterProtocol) -> bool:
        """Within the limits? Called once the connection is accepted (and TLS set up)."""
        limits = self.limits
        address = proto.address
        if self._per_address.get(address, 0) >= limits.max_per_address:
            self._refuse(proto, REFUSED_MAX_PER_ADDRESS)
            return False
        if len(self._admitted) >= limits.max_connections:
            waiting = next((c for c in self._admitted if c.peer.state is PeerState.WAIT_CER), None)
            if waiting is None:
                self._refuse(proto, REFUSED_MAX_CONNECTIONS)
                return False
            self.on_refusal(REFUSED_EVICTED)
            self._forget(waiting)
            waiting._close("evicted: connection limit reached before its CER")
        self._admitted[proto] = None
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return True

    def _refuse(self, proto: DiameterProtocol, reason: str) -> None:
        self.connections.discard(proto)
        self.on_refusal(reason)
        log.info("refused connection from %s: %s", proto.address, reason)

    def _forget(self, proto: DiameterProtocol) -> None:
        if proto in self._admitted:
            del self._admitted[proto]
            address = proto.address
            left = self._per_address.get(address, 1) - 1
            if left > 0:
                self._per_address[address] = left
            else:
                self._per_address.pop(address, None)

    def _closed(self, proto: DiameterProtocol) -> None:
        self.connections.discard(proto)
        self._forget(proto)

    async def start(self, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory,
            self.host,
            self.port,
            ssl=self.ssl_context,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,
            ssl_handshake_timeout=self.config.cer_timeout if self.ssl_context else None,
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("Diameter server listening on %s:%s", self.host, self.port)
        peers = self.config.peers
        if peers.accept_unknown:
            log.warning(
                "accept_unknown_peers is on: any Diameter peer is admitted (%d configured)",
                len(peers.peers),
            )
        else:
            log.info("Diameter peers configured: %s", ", ".join(sorted(peers.peers)) or "none")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, answer what is in flight, DPR every open peer, close the rest."""
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + timeout
        conns = list(self.connections)
        await asyncio.gather(*(c.drain(max(0.0, deadline - time.monotonic())) for c in conns))
        await asyncio.gather(
            *(c.disconnect(max(0.1, deadline - time.monotonic())) for c in conns if c.peer.is_open)
        )
        for conn in list(self.connections):
            conn._close("server stopping")
        if self._server is not None:
            await self._server.wait_closed()


async def connect(
    node: Node,
    config: LocalConfig,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> DiameterProtocol:
    """Open a connection as initiator and complete CER/CEA."""
    loop = asyncio.get_running_loop()
    _transport, proto = await asyncio.wait_for(
        loop.create_connection(
            lambda: DiameterProtocol(node, config, initiator=True), host, port, ssl=ssl_context
        ),
        timeout,
    )
    await asyncio.wait_for(asyncio.shield(proto.opened), timeout)
    return proto


def server_ssl_context(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def install_uvloop() -> Any:
    """Use uvloop's event loop policy when available; returns the module or None."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on Linux
        return None
    return uvloop
