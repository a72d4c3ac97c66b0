"""Interop with freeDiameter (Debian `freediameterd` 1.2.1), a third-party Diameter node.

freeDiameterd runs as a relay agent (no application of its own, so its CER advertises the
Relay application) and is told to connect to two servers of ours, over plain TCP:

    pgw.test (realm test)  <--TCP-->  fd.test (realm fd.realm)  <--TCP-->  ocs.test (realm local)

It completes CER/CEA with both, exchanges DWR/DWA with both (it sends DWR to our OCS after its
TwTimer, the minimum 6 s; our pgw side runs a 1 s watchdog so it sends DWR to freeDiameter), and
relays a CCR that pgw.test sends with Destination-Realm "local" to ocs.test by its built-in
realm-based routing; the CCA comes back the same way. See docs/interop.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity, make_answer
from ocs.diameter.codec import Message, u32
from ocs.diameter.constants import FLAG_REQUEST, Application, Command, ResultCode
from ocs.diameter.framer import Framer
from ocs.diameter.node import Node, PeerInfo
from ocs.diameter.peer import LocalConfig
from ocs.diameter.peers import PeerSpec, PeerTable
from ocs.diameter.transport import DiameterProtocol, DiameterServer

from .helpers import CLIENT_HOST, CLIENT_REALM, ccr
from .test_cli_serve import free_port

pytestmark = pytest.mark.interop

FD_BINARY = "freeDiameterd"
FD_EXTENSIONS = Path("/usr/lib/freeDiameter")
FD_HOST, FD_REALM = "fd.test", "fd.realm"
OCS = Identity("ocs.test", "local")  # helpers.ccr() sends Destination-Realm "local"
PGW = Identity(CLIENT_HOST, CLIENT_REALM)
FD_TW = 6  # seconds: freeDiameter's minimum TwTimer
# dict_dcca needs dict_nasreq loaded first; dict_dcca_3gpp adds the 3GPP Ro/Gy AVPs.
DICTIONARIES = ("dict_nasreq", "dict_dcca", "dict_dcca_3gpp")


@dataclass
class Tap:
    """(is request, command code) of every message a server's connections receive and send."""

    received: list[tuple[bool, int]] = field(default_factory=list)
    sent: list[tuple[bool, int]] = field(default_factory=list)

    def install(self, server: DiameterServer) -> None:
        make = server._factory

        def tapped() -> DiameterProtocol:
            proto = make()
            rx, tx = Framer(), Framer()
            data_received, write = proto.data_received, proto._write

            def on_data(data: bytes) -> None:
                self.received.extend(_summary(raw) for raw in rx.feed(data))
                data_received(data)

            def on_write(data: bytes) -> None:
                self.sent.extend(_summary(raw) for raw in tx.feed(data))
                write(data)

            proto.data_received = on_data  # type: ignore[method-assign]
            proto._write = on_write  # type: ignore[method-assign]
            return proto

        server._factory = tapped  # type: ignore[method-assign]


def _summary(raw: bytes) -> tuple[bool, int]:
    return bool(raw[4] & FLAG_REQUEST), int.from_bytes(raw[5:8], "big")


class Ocs:
    """The OCS side: answers CCR with a static CCA and keeps every request it saw."""

    def __init__(self) -> None:
        self.requests: list[Message] = []

    async def __call__(self, request: Message, peer: PeerInfo) -> Message:
        self.requests.append(request)
        return make_answer(
            request,
            OCS,
            ResultCode.DIAMETER_SUCCESS,
            [
                u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
                u32(A.AVP_CC_REQUEST_TYPE, request.get(A.AVP_CC_REQUEST_TYPE)),
                u32(A.AVP_CC_REQUEST_NUMBER, request.get(A.AVP_CC_REQUEST_NUMBER)),
            ],
        )


def fd_config(port: int, peers: dict[str, int]) -> str:
    lines = [
        f'Identity = "{FD_HOST}";',
        f'Realm = "{FD_REALM}";',
        f"Port = {port};",
        "SecPort = 0;",  # no TLS listener; 1.2.1 runs without TLS_Cred (with a notice)
        "No_SCTP;",
        "No_IPv6;",
        'ListenOn = "127.0.0.1";',
        f"TwTimer = {FD_TW};",
        "TcTimer = 6;",
        "AppServThreads = 2;",
        *(f'LoadExtension = "{FD_EXTENSIONS / name}.fdx";' for name in DICTIONARIES),
        *(
            f'ConnectPeer = "{host}" {{ ConnectTo = "127.0.0.1"; Port = {peer_port}; No_TLS; }};'
            for host, peer_port in peers.items()
        ),
    ]
    return "\n".join(lines) + "\n"


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Setup:
    ocs_node: Node
    pgw_node: Node
    ocs_tap: Tap
    pgw_tap: Tap
    handler: Ocs
    log: Path

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    async def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """wait_until, with freeDiameterd's log in the failure message."""
        try:
            await wait_until(condition, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- freeDiameterd log ---\n{self.log_tail()}") from None


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Setup]:
    if shutil.which(FD_BINARY) is None:
        pytest.skip(
            "freeDiameterd not installed: apt-get install freediameter freediameter-extensions"
        )
    missing = [n for n in DICTIONARIES if not (FD_EXTENSIONS / f"{n}.fdx").exists()]
    if missing:
        pytest.skip(
            f"freeDiameter extensions missing ({', '.join(missing)}): "
            "apt-get install freediameter-extensions"
        )
    handler = Ocs()
    ocs_node, pgw_node = Node(OCS), Node(PGW)
    ocs_node.register(Application.CREDIT_CONTROL, Command.CREDIT_CONTROL, handler)
    # freeDiameter is the routing agent both connect to: configured as a peer relaying the
    # gateway's requests to us (and ours to the gateway)
    relay_for = lambda host: PeerTable.of(  # noqa: E731
        PeerSpec.of(FD_HOST, realm=FD_REALM, addresses=["127.0.0.1"], relays_for=[host])
    )
    ocs = DiameterServer(
        ocs_node,
        LocalConfig(identity=OCS, peers=relay_for(PGW.origin_host)),
        host="127.0.0.1",
        port=0,
    )
    pgw = DiameterServer(
        pgw_node,
        LocalConfig(identity=PGW, watchdog_interval=1.0, peers=relay_for(OCS.origin_host)),
        host="127.0.0.1",
        port=0,
    )
    ocs_tap, pgw_tap = Tap(), Tap()
    ocs_tap.install(ocs)
    pgw_tap.install(pgw)
    await ocs.start()
    await pgw.start()
    conf = tmp_path / "freeDiameter.conf"
    conf.write_text(fd_config(free_port(), {OCS.origin_host: ocs.port, PGW.origin_host: pgw.port}))
    log = tmp_path / "freeDiameterd.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            FD_BINARY,
            "-c",
            str(conf),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Setup(ocs_node, pgw_node, ocs_tap, pgw_tap, handler, log)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(Exception):
            await pgw.stop(1.0)
        await ocs.stop(1.0)


async def test_freediameter_peers_watchdogs_and_relays_a_ccr(relay: Setup) -> None:
    # CER/CEA: freeDiameter connects to both of our servers and both reach OPEN.
    await relay.wait(
        lambda: FD_HOST in relay.ocs_node.peers and FD_HOST in relay.pgw_node.peers,
        30,
        "freeDiameterd to complete CER/CEA with ocs.test and pgw.test",
    )
    assert (True, Command.CAPABILITIES_EXCHANGE) in relay.ocs_tap.received
    assert (False, Command.CAPABILITIES_EXCHANGE) in relay.ocs_tap.sent

    # A CCR from pgw.test, addressed to our realm, is routed by freeDiameter to ocs.test.
    request = ccr(session="pgw.test;fd;1", hbh=1, e2e=0x5EED)
    answer = await relay.pgw_node.send_request(FD_HOST, request)
    assert answer.command == Command.CREDIT_CONTROL and not answer.is_request
    assert answer.e2e_id == 0x5EED
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    assert answer.get(A.AVP_ORIGIN_HOST) == OCS.origin_host
    assert answer.get(A.AVP_SESSION_ID) == "pgw.test;fd;1"
    assert answer.get(A.AVP_CC_REQUEST_NUMBER) == 0
    [relayed] = relay.handler.requests
    assert relayed.get(A.AVP_ORIGIN_HOST) == PGW.origin_host
    route = [a.value for a in relayed.avps if a.key == A.AVP_ROUTE_RECORD]
    assert route == [PGW.origin_host]  # freeDiameter recorded the hop it relayed from

    # DWR/DWA both ways: our 1 s watchdog on the pgw side gets DWAs from freeDiameter, and
    # freeDiameter's own watchdog (TwTimer 6 s, +/- 2 s jitter) sends DWR to the quiet OCS side.
    await relay.wait(
        lambda: (False, Command.DEVICE_WATCHDOG) in relay.pgw_tap.received,
        10,
        "a DWA from freeDiameterd to our DWR",
    )
    assert (True, Command.DEVICE_WATCHDOG) in relay.pgw_tap.sent
    await relay.wait(
        lambda: (True, Command.DEVICE_WATCHDOG) in relay.ocs_tap.received,
        FD_TW + 6,
        "a DWR from freeDiameterd",
    )
    await wait_until(lambda: (False, Command.DEVICE_WATCHDOG) in relay.ocs_tap.sent, 5, "our DWA")
    assert FD_HOST in relay.ocs_node.peers and FD_HOST in relay.pgw_node.peers
    # freeDiameter parsed everything we sent with its own dictionaries without complaint.
    errors = [
        line for line in relay.log.read_text(errors="replace").splitlines() if "ERROR" in line
    ]
    assert errors == []
