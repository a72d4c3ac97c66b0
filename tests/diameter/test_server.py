"""The Diameter server over real sockets: dispatch, errors, duplicates, isolation, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity, make_answer
from ocs.diameter.codec import Avp, Message, decode, u32
from ocs.diameter.constants import FLAG_RETRANSMIT, Application, Command, ResultCode
from ocs.diameter.framer import Framer
from ocs.diameter.node import Node, PeerInfo
from ocs.diameter.peer import LocalConfig
from ocs.diameter.peers import PeerSpec, PeerTable
from ocs.diameter.transport import MAX_IN_FLIGHT, DiameterServer, connect

from .helpers import ccr, cer, dwr

IDENTITY = Identity("ocs.test", "test")
GATEWAYS = PeerTable.of(PeerSpec.of("pgw.test", addresses=["127.0.0.1"]))


class Counter:
    """A CCR handler that counts calls: retransmissions must not reach it twice."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.padding = b""  # an opaque AVP of this size makes answers big

    async def __call__(self, request: Message, peer: PeerInfo) -> Message:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return make_answer(
            request,
            IDENTITY,
            ResultCode.DIAMETER_SUCCESS,
            [
                u32(A.AVP_CC_REQUEST_TYPE, request.get(A.AVP_CC_REQUEST_TYPE)),
                u32(A.AVP_CC_REQUEST_NUMBER, self.calls),
                *([Avp(60000, 0, self.padding)] if self.padding else []),
            ],
        )


class RawClient:
    """A peer written with plain streams, to send exactly the bytes a test wants."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = Framer()
        self.queue: list[bytes] = []

    @classmethod
    async def open(cls, port: int, rcvbuf: int | None = None) -> RawClient:
        if rcvbuf is None:
            return cls(*await asyncio.open_connection("127.0.0.1", port))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(*await asyncio.open_connection(sock=sock))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = 5.0) -> Message:
        while not self.queue:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionError("closed by server")
            self.queue.extend(self.framer.feed(data))
        return decode(self.queue.pop(0))

    async def request(self, msg: Message) -> Message:
        await self.send(msg.encode())
        return await self.recv()

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except (ConnectionError, TimeoutError):
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def handler() -> Counter:
    return Counter()


@pytest.fixture
async def server(handler: Counter) -> AsyncIterator[DiameterServer]:
    node = Node(IDENTITY)
    node.register(Application.CREDIT_CONTROL, Command.CREDIT_CONTROL, handler)
    srv = DiameterServer(
        node, LocalConfig(identity=IDENTITY, peers=GATEWAYS), host="127.0.0.1", port=0
    )
    await srv.start()
    yield srv
    await srv.stop(1.0)


async def opened(port: int, rcvbuf: int | None = None) -> RawClient:
    client = await RawClient.open(port, rcvbuf)
    cea = await client.request(cer())
    assert cea.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    return client


async def test_ccr_is_answered_over_a_socket(server: DiameterServer, handler: Counter) -> None:
    client = await opened(server.port)
    request = ccr(hbh=77, e2e=88)
    answer = await client.request(request)
    assert answer.command == Command.CREDIT_CONTROL and not answer.is_request
    assert (answer.hbh_id, answer.e2e_id) == (77, 88)
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    assert answer.get(A.AVP_ORIGIN_HOST) == "ocs.test"
    assert answer.get(A.AVP_ORIGIN_REALM) == "test"
    assert answer.get(A.AVP_SESSION_ID) == "pgw.test;1;1"
    assert handler.calls == 1
    await client.close()


async def test_retransmission_gets_stored_answer_and_is_handled_once(
    server: DiameterServer, handler: Counter
) -> None:
    client = await opened(server.port)
    first = await client.request(ccr(hbh=5, e2e=500))
    retry = ccr(hbh=6, e2e=500)
    retry.flags |= FLAG_RETRANSMIT
    second = await client.request(retry)
    assert handler.calls == 1
    assert second.hbh_id == 6
    assert second.get(A.AVP_CC_REQUEST_NUMBER) == first.get(A.AVP_CC_REQUEST_NUMBER)
    assert second.encode()[16:] == first.encode()[16:]
    await client.close()


async def test_retransmission_while_original_in_flight_waits_for_it(
    server: DiameterServer, handler: Counter
) -> None:
    handler.gate = asyncio.Event()
    client = await opened(server.port)
    await client.send(ccr(hbh=1, e2e=900).encode())
    retry = ccr(hbh=2, e2e=900)
    retry.flags |= FLAG_RETRANSMIT
    await client.send(retry.encode())
    await asyncio.sleep(0.05)
    handler.gate.set()
    answers = [await client.recv(), await client.recv()]
    assert handler.calls == 1
    assert sorted(a.hbh_id for a in answers) == [1, 2]
    await client.close()


async def test_unknown_command_gets_3001(server: DiameterServer) -> None:
    client = await opened(server.port)
    request = ccr()
    request.command = 999
    answer = await client.request(request)
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_COMMAND_UNSUPPORTED
    assert answer.command == 999 and answer.is_error
    await client.close()


async def test_dwr_answered(server: DiameterServer) -> None:
    client = await opened(server.port)
    dwa = await client.request(dwr())
    assert dwa.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    await client.close()


async def test_garbage_from_one_peer_does_not_affect_another(
    server: DiameterServer, handler: Counter
) -> None:
    good = await opened(server.port)
    bad = await opened(server.port)
    await bad.send(b"\xff" * 64)
    assert await bad.closed()
    await bad.close()
    truncated = await RawClient.open(server.port)
    await truncated.send(cer().encode()[:30])
    await truncated.close()
    answer = await good.request(ccr())
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    await good.close()


async def test_oversized_message_is_refused_and_closed(server: DiameterServer) -> None:
    client = await opened(server.port)
    header = bytes([1]) + (8 << 20).to_bytes(3, "big") + bytes([0x80]) + (272).to_bytes(3, "big")
    await client.send(header + bytes(12) + bytes(100))
    answer = await client.recv()
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_INVALID_MESSAGE_LENGTH
    assert await client.closed()
    await client.close()


async def test_peer_that_never_reads_does_not_grow_server_memory(handler: Counter) -> None:
    node = Node(IDENTITY)
    node.register(Application.CREDIT_CONTROL, Command.CREDIT_CONTROL, handler)
    server = DiameterServer(
        node,
        LocalConfig(identity=IDENTITY, peers=GATEWAYS),
        host="127.0.0.1",
        port=0,
        write_buffer_high=65536,
    )
    await server.start()
    client = await opened(server.port, rcvbuf=4096)
    handler.padding = bytes(16 * 1024)
    # 3,000 requests whose answers (48 MB) fit in no socket buffer; the client never reads.
    for i in range(3000):
        client.writer.write(ccr(hbh=i + 100, e2e=i + 100).encode())
    await asyncio.sleep(0.5)
    [conn] = [c for c in server.connections if c.info is not None]
    assert conn.transport is not None
    buffered = conn.transport.get_write_buffer_size()
    # The documented bound: the high-water mark plus the answers of requests already in flight.
    assert buffered <= conn.write_buffer_high + MAX_IN_FLIGHT * (17 * 1024)
    assert handler.calls < 3000
    assert conn._read_paused
    handled = handler.calls
    await asyncio.sleep(0.2)
    assert handler.calls == handled  # nothing more is read from a peer that does not read
    client.writer.transport.abort()
    await client.close()
    await server.stop(1.0)


async def test_client_connect_and_graceful_stop_sends_dpr(handler: Counter) -> None:
    node = Node(IDENTITY)
    node.register(Application.CREDIT_CONTROL, Command.CREDIT_CONTROL, handler)
    srv = DiameterServer(
        node, LocalConfig(identity=IDENTITY, peers=GATEWAYS), host="127.0.0.1", port=0
    )
    await srv.start()
    client_identity = Identity("pgw.test", "test")
    proto = await connect(
        Node(client_identity), LocalConfig(identity=client_identity), "127.0.0.1", srv.port
    )
    answer = await proto.send_request(ccr())
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    assert "pgw.test" in node.peers
    await srv.stop(2.0)
    await asyncio.wait_for(proto.closed, 2.0)
    assert "pgw.test" not in node.peers
