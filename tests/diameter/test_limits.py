"""Who may connect and what a connection may cost, over real sockets: configured peers, the
Origin-Host of every request, connection limits with their refusal counts.

Every address of 127.0.0.0/8 is the loopback on Linux: clients bind 127.0.0.2, 127.0.0.3, ...
to be other source addresses."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter as Tally
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Message, text
from ocs.diameter.constants import Application, Command, ResultCode
from ocs.diameter.node import Node
from ocs.diameter.peer import LocalConfig
from ocs.diameter.peers import PeerSpec, PeerTable
from ocs.diameter.transport import ConnectionLimits, DiameterServer

from .helpers import ccr, cer
from .test_cli_serve import OcsServe
from .test_server import IDENTITY, Counter, RawClient, opened

GATEWAY = PeerSpec.of("pgw.test", addresses=["127.0.0.1"])
OTHER = PeerSpec.of("pgw-b.test", addresses=["127.0.0.5"])


async def client_from(source: str, port: int) -> RawClient:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return RawClient(*await asyncio.open_connection(sock=sock))


def as_host(msg: Message, host: str) -> Message:
    msg.avps = [
        text(A.AVP_ORIGIN_HOST, host) if a.key == A.AVP_ORIGIN_HOST else a for a in msg.avps
    ]
    return msg


class Served:
    def __init__(self, server: DiameterServer, handler: Counter, refused: Tally[str]) -> None:
        self.server, self.handler, self.refused = server, handler, refused

    @property
    def port(self) -> int:
        return self.server.port


async def serve(limits: ConnectionLimits) -> Served:
    refused: Tally[str] = Tally()
    handler = Counter()
    node = Node(IDENTITY)
    node.register(Application.CREDIT_CONTROL, Command.CREDIT_CONTROL, handler)
    server = DiameterServer(
        node,
        LocalConfig(identity=IDENTITY, peers=PeerTable.of(GATEWAY, OTHER)),
        host="127.0.0.1",
        port=0,
        limits=limits,
        on_refusal=lambda reason: refused.update([reason]),
    )
    await server.start()
    return Served(server, handler, refused)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    s = await serve(ConnectionLimits(max_connections=4, max_per_address=2))
    yield s
    await s.server.stop(1.0)


async def test_unknown_peer_gets_3010_and_is_closed(served: Served) -> None:
    client = await client_from("127.0.0.1", served.port)
    cea = await client.request(cer(origin_host="rogue.test"))
    assert cea.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_UNKNOWN_PEER
    assert await client.closed()
    await client.close()
    assert served.refused["unknown_peer"] == 1


async def test_configured_peer_from_another_address_gets_3010(served: Served) -> None:
    client = await client_from("127.0.0.9", served.port)
    cea = await client.request(cer())
    assert cea.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_UNKNOWN_PEER
    assert await client.closed()
    await client.close()
    assert served.refused["source_address"] == 1


async def test_a_peer_cannot_send_requests_as_another(served: Served) -> None:
    """A second configured peer that forges the first one's Origin-Host gets 3010 and the
    application never sees the request; the first peer is answered as before."""
    victim = await client_from("127.0.0.1", served.port)
    assert (await victim.request(cer())).get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    attacker = await client_from("127.0.0.5", served.port)
    cea = await attacker.request(cer(origin_host="pgw-b.test"))
    assert cea.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    forged = await attacker.request(ccr(hbh=5, e2e=4242))  # Origin-Host pgw.test
    assert forged.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_UNKNOWN_PEER
    assert served.handler.calls == 0
    answer = await victim.request(ccr(hbh=6, e2e=4242))
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    assert served.handler.calls == 1
    assert served.refused["forged_origin_host"] == 1
    for c in (victim, attacker):
        await c.close()


async def test_connections_over_the_per_address_limit_are_refused(served: Served) -> None:
    held = [await client_from("127.0.0.2", served.port) for _ in range(2)]
    extra = await client_from("127.0.0.2", served.port)
    assert await extra.closed(2.0)
    assert served.refused["max_connections_per_address"] == 1
    peer = await client_from("127.0.0.1", served.port)  # another address is not affected
    assert (await peer.request(cer())).get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    assert (await peer.request(ccr())).get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    for c in (*held, extra, peer):
        await c.close()


async def test_silent_connections_make_room_for_a_configured_peer(served: Served) -> None:
    """At the total limit the oldest connection still without CER is closed for the new one:
    silent connections cannot lock a configured peer out."""
    silent = [await client_from(f"127.0.0.{2 + i}", served.port) for i in range(4)]
    peer = await client_from("127.0.0.1", served.port)
    assert (await peer.request(cer())).get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    assert (await peer.request(ccr())).get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    assert await silent[0].closed(2.0)
    assert served.refused["pre_cer_evicted"] == 1
    for c in (*silent, peer):
        await c.close()


async def test_when_every_connection_is_an_open_peer_a_new_one_is_refused() -> None:
    s = await serve(ConnectionLimits(max_connections=2, max_per_address=2))
    try:
        a = await client_from("127.0.0.1", s.port)
        assert (await a.request(cer())).get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
        b = await client_from("127.0.0.5", s.port)
        cea = await b.request(cer(origin_host="pgw-b.test"))
        assert cea.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
        c = await client_from("127.0.0.7", s.port)
        assert await c.closed(2.0)
        assert s.refused["max_connections"] == 1
        assert (await a.request(ccr())).get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
        for client in (a, b, c):
            await client.close()
    finally:
        await s.server.stop(1.0)


async def test_closed_connections_give_their_place_back(served: Served) -> None:
    for _ in range(3):
        pair = [await client_from("127.0.0.2", served.port) for _ in range(2)]
        for c in pair:
            await c.close()
        await asyncio.sleep(0.05)
    assert served.refused["max_connections_per_address"] == 0
    assert len(served.server._admitted) == 0


async def test_a_peer_that_stops_mid_message_is_closed() -> None:
    """After its CER the peer starts a CCR and never finishes it: closed after
    ``message_timeout``, long before the CER timeout the connection's timer was first set to."""
    refused: Tally[str] = Tally()
    node = Node(IDENTITY)
    config = LocalConfig(
        identity=IDENTITY, peers=PeerTable.of(GATEWAY), cer_timeout=30.0, message_timeout=0.2
    )
    server = DiameterServer(
        node, config, host="127.0.0.1", port=0, on_refusal=lambda r: refused.update([r])
    )
    await server.start()
    try:
        client = await client_from("127.0.0.1", server.port)
        assert (await client.request(cer())).get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
        await client.send(ccr().encode()[:30])
        assert await client.closed(10.0)
        await client.close()
        assert refused["slow_message"] == 1
    finally:
        await server.stop(1.0)


# -- the probe of issue 14: a flood of connections that never send their CER ----------------
FLOOD = 1000
FLOOD_SOURCES = 16  # 63 connections a source address: under the default 64 of each
MEMORY_BUDGET = 200 << 20  # bytes over the idle server


def rss(pid: int) -> int:
    """Resident set size of a process, bytes (/proc/PID/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def test_a_thousand_silent_connections_stay_small_and_a_peer_is_still_answered(
    tmp_path: Path,
) -> None:
    """`ocs serve` on its default limits: 1,000 connections each holding a CER as large as
    the pre-CER budget allows, but never finishing it, add far less than 200 MB to the
    server, and a configured peer connecting afterwards gets its CCR answered."""
    server = await OcsServe.start(
        tmp_path,
        *("--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING"),
        *("--peer", "pgw.test=127.0.0.1"),
    )
    flood: list[RawClient] = []
    try:
        await asyncio.sleep(0.5)
        idle = rss(server.proc.pid)
        budget = 4096  # the default max_cer_size: a header claiming it, all but 4 bytes sent
        partial = bytes([1]) + budget.to_bytes(3, "big") + bytes(budget - 8)
        for i in range(FLOOD):
            client = await client_from(f"127.0.0.{2 + i % FLOOD_SOURCES}", server.port)
            client.writer.write(partial)
            flood.append(client)
        await asyncio.gather(*(c.writer.drain() for c in flood))
        peer = await client_from("127.0.0.1", server.port)
        assert (await peer.request(cer())).get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
        answer = await peer.request(ccr())
        assert answer.command == Command.CREDIT_CONTROL and not answer.is_request
        assert answer.get(A.AVP_RESULT_CODE) is not None
        await asyncio.sleep(0.5)  # every flood byte read by now
        grown = max(rss(server.proc.pid) for _ in range(3)) - idle
        assert grown < MEMORY_BUDGET, f"server grew {grown >> 20} MiB"
        still_open = [c for c in flood if not c.reader.at_eof()]
        assert len(still_open) == FLOOD  # held, not refused: the memory above is theirs
        await peer.close()
    finally:
        for c in flood:
            c.writer.close()
        assert await server.stop() == 0


async def test_a_peer_that_stops_reading_our_answers_is_aborted() -> None:
    """Its answers pile up above the write buffer's high-water mark and do not drain within
    ``message_timeout``: the connection is aborted, its unsent answers dropped."""
    refused: Tally[str] = Tally()
    handler = Counter()
    node = Node(IDENTITY)
    node.register(Application.CREDIT_CONTROL, Command.CREDIT_CONTROL, handler)
    config = LocalConfig(identity=IDENTITY, peers=PeerTable.of(GATEWAY), message_timeout=0.3)
    server = DiameterServer(
        node,
        config,
        host="127.0.0.1",
        port=0,
        write_buffer_high=65536,
        on_refusal=lambda r: refused.update([r]),
    )
    await server.start()
    try:
        client = await opened(server.port, rcvbuf=4096)
        handler.padding = bytes(16 * 1024)
        for i in range(500):  # 8 MB of answers; the client never reads
            client.writer.write(ccr(hbh=i + 100, e2e=i + 100).encode())
        for _ in range(100):
            if refused["slow_reader"]:
                break
            await asyncio.sleep(0.05)
        assert refused["slow_reader"] == 1
        assert [c for c in server.connections if c.info is not None] == []
        client.writer.transport.abort()
        await client.close()
    finally:
        await server.stop(1.0)
