"""Wireshark's Diameter dissector (tshark) reads what we encode with no malformed packet and no
expert warning or error in the Diameter layer.

We write the pcap ourselves: Ethernet / IPv4 / TCP to port 3868 with correct IPv4 and TCP
checksums, one message per segment, after a TCP handshake so that tshark sees a clean stream.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocs.diameter import avp_codes as A
from ocs.diameter import codec
from ocs.diameter.answers import Identity, make_answer, make_error_answer
from ocs.diameter.codec import text, u32
from ocs.diameter.constants import CcRequestType, ResultCode

from .conftest import HOST, REALM, our_cca, our_ccr, our_cea, our_cer, our_dwa, our_dwr

pytestmark = pytest.mark.interop

DIAMETER_PORT = 3868
SYN, ACK, PSH = 0x02, 0x10, 0x08


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


Endpoint = tuple[tuple[int, int, int, int], int]  # (IPv4 address, TCP port)


def _frame(src: Endpoint, dst: Endpoint, seq: int, ack: int, flags: int, payload: bytes) -> bytes:
    (src_ip, sport), (dst_ip, dport) = src, dst
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    pseudo = bytes(src_ip) + bytes(dst_ip) + struct.pack(">BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack(">H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, bytes(src_ip), bytes(dst_ip)
    )
    ip = ip[:10] + struct.pack(">H", _checksum(ip)) + ip[12:]
    ethernet = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00"
    return ethernet + ip + tcp


def write_pcap(path: Path, exchange: list[tuple[bool, bytes]]) -> None:
    """``exchange``: (from_client, message) in order, on one TCP connection."""
    client: Endpoint = ((10, 0, 0, 1), 40000)
    server: Endpoint = ((10, 0, 0, 2), DIAMETER_PORT)
    seq = {True: 1000, False: 5000}  # next sequence number, by "from client"
    frames = [
        _frame(client, server, seq[True], 0, SYN, b""),
        _frame(server, client, seq[False], seq[True] + 1, SYN | ACK, b""),
        _frame(client, server, seq[True] + 1, seq[False] + 1, ACK, b""),
    ]
    seq = {True: seq[True] + 1, False: seq[False] + 1}
    for from_client, message in exchange:
        src, dst = (client, server) if from_client else (server, client)
        frames.append(_frame(src, dst, seq[from_client], seq[not from_client], PSH | ACK, message))
        seq[from_client] += len(message)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # pcap, LINKTYPE_ETHERNET
    for i, frame in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def _tshark(path: Path, *args: str) -> str:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark not installed: apt-get install tshark")
    done = subprocess.run(
        [tshark, "-r", str(path), "-n", "-d", "tcp.port==3868,diameter", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def _walk(node: Any, up: tuple[Any, ...] = ()) -> Iterator[tuple[str, Any, tuple[Any, ...]]]:
    """(key, value, the dicts holding it, innermost first) for every key of tshark's JSON."""
    if isinstance(node, dict):
        up = (node, *up)
        for key, value in node.items():
            yield key, value, up
            yield from _walk(value, up)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value, up)


def _dissect(path: Path) -> list[dict[str, Any]]:
    """The layers of every frame, as tshark's JSON output (duplicate keys kept as lists)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                previous = out[key]
                out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                out[key] = value
        return out

    frames = json.loads(_tshark(path, "-T", "json", "--no-duplicate-keys"), object_pairs_hook=pairs)
    return [frame["_source"]["layers"] for frame in frames]


def _exchange() -> list[tuple[bool, bytes]]:
    ccr_i = our_ccr(CcRequestType.INITIAL_REQUEST, 0)
    identity = Identity(HOST, REALM)
    error = make_error_answer(
        codec.decode(ccr_i),
        identity,
        ResultCode.DIAMETER_MISSING_AVP,
        failed_avp=text(A.AVP_SUBSCRIPTION_ID_DATA, "unknown"),
        error_message="missing Subscription-Id",
        avps=[u32(A.AVP_CC_REQUEST_NUMBER, 0)],
    )
    return [
        (True, our_cer()),
        (False, our_cea()),
        (True, our_dwr()),
        (False, our_dwa()),
        (True, ccr_i),
        (False, error.encode()),
        (True, our_ccr(CcRequestType.UPDATE_REQUEST, 1)),
        (False, our_cca()),
        (True, our_ccr(CcRequestType.TERMINATION_REQUEST, 2)),
        (False, make_answer(codec.decode(our_dwr()), identity, 2001).encode()),
    ]


def _empty_rsu(expert: dict[str, Any], holders: tuple[dict[str, Any], ...]) -> bool:
    """Wireshark warns "Data is empty" on any AVP without data. The one we send on purpose is
    the empty Requested-Service-Unit of a CCR (RFC 4006 8.18: every member is optional; PGWs
    send it this way to ask the OCS to choose the quota, see the Magma captures)."""
    return expert.get("_ws.expert.message") == "Data is empty" and any(
        h.get("diameter.avp.code") == str(A.AVP_REQUESTED_SERVICE_UNIT) for h in holders
    )


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[bool, bytes]]]:
    path = tmp_path_factory.mktemp("dissector") / "ocs.pcap"
    exchange = _exchange()
    write_pcap(path, exchange)
    return path, exchange


def test_every_message_is_dissected_as_diameter(
    capture: tuple[Path, list[tuple[bool, bytes]]],
) -> None:
    path, exchange = capture
    fields = _tshark(
        path, "-Y", "diameter", "-T", "fields", "-e", "diameter.cmd.code", "-e", "diameter.flags"
    )
    rows = [line.split("\t") for line in fields.splitlines()]
    assert [(int(code), int(flags, 16)) for code, flags in rows] == [
        (codec.decode(m).command, m[4]) for _, m in exchange
    ]


def _problems(path: Path) -> tuple[list[tuple[int, str, Any]], int]:
    """Malformed packets and Diameter expert infos above "note", and how many frames tshark
    dissected as Diameter."""
    problems = []
    dissected = 0
    for number, frame in enumerate(_dissect(path), 1):
        if "_ws.malformed" in frame:
            problems.append((number, "malformed", frame["_ws.malformed"]))
        diameter = frame.get("diameter")
        if diameter is None:
            continue
        dissected += 1
        for key, value, holders in _walk(diameter):
            if key == "_ws.expert":
                for expert in value if isinstance(value, list) else [value]:
                    severity = expert.get("_ws.expert.severity")
                    # 2097152 = chat, 4194304 = note (informational); warn/error are higher
                    if severity is not None and int(severity) <= 4194304:
                        continue
                    if _empty_rsu(expert, holders[:2]):
                        continue
                    problems.append((number, "expert", expert))
            elif key.startswith("_ws.malformed"):
                problems.append((number, "malformed", value))
    return problems, dissected


def test_no_malformed_packet_and_no_expert_warning(
    capture: tuple[Path, list[tuple[bool, bytes]]],
) -> None:
    path, exchange = capture
    problems, dissected = _problems(path)
    assert problems == []
    assert dissected == len(exchange)


def test_the_check_does_catch_a_broken_message(tmp_path: Path) -> None:
    cca = bytearray(our_cca())
    cca[20 + 5 : 20 + 8] = (200).to_bytes(3, "big")  # first AVP claims 200 bytes
    path = tmp_path / "broken.pcap"
    write_pcap(path, [(True, our_dwr()), (False, bytes(cca))])
    problems, dissected = _problems(path)
    assert dissected == 2
    assert problems != []


def test_tshark_reads_our_values(capture: tuple[Path, list[tuple[bool, bytes]]]) -> None:
    path, _ = capture
    out = _tshark(
        path,
        "-Y",
        "diameter.cmd.code == 272 && diameter.flags.request == 0",
        "-T",
        "fields",
        "-e",
        "diameter.Result-Code",
        "-e",
        "diameter.Rating-Group",
        "-e",
        "diameter.Final-Unit-Action",
        "-e",
        "diameter.Redirect-Server-Address",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    )
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows == [
        ["5005", "", "", ""],  # the error answer with Failed-AVP
        ["2001,2001,2001", "10,20", "1", "https://topup.example.org/"],
    ]


def test_pcap_writer_checksums_are_valid(capture: tuple[Path, list[tuple[bool, bytes]]]) -> None:
    path, _ = capture
    out = _tshark(
        path,
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-T",
        "fields",
        "-e",
        "ip.checksum.status",
        "-e",
        "tcp.checksum.status",
    )
    # tshark's checksum status: 0 = bad, 1 = good, 2 = unverified
    assert set(out.splitlines()) == {"1\t1"}
