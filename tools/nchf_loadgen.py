"""Nchf_ConvergedCharging load generator (TS 32.291 v3) over HTTP/2 cleartext with prior
knowledge (h2c, what an SMF speaks): sessions of create, ``--updates`` updates, release, on
one connection with many concurrent streams, at a target rate (open loop) or as fast as
possible with a window of outstanding requests (closed loop). Prints throughput, latency
percentiles and HTTP status counts as JSON, in the shape of tools/loadgen.py (the Gy
generator), so tools/bench_nchf.py sets the two side by side.

    python tools/nchf_loadgen.py --port 8090 --updates 20 --window 64 --warmup 1 --duration 10 \
        [--rate 2000 --max-open 256] [--imsi-first 262010000000000 --imsi-count 1000]

Like the Gy generator: a session sends its next request only after the answer to the
previous one (an update needs the ChargingDataRef of the create's Location); in the open
loop request k is due at start + k/R and its latency runs from that time (no coordinated
omission), ``--max-open`` caps the open sessions so the mix offered stays create :
updates : release. Bodies come from a template with the IMSI, the sequence number and the
units patched in; answers are not parsed beyond their status and Location. The HTTP/2 client
is :class:`H2c`, a few frames by hand (~60 us of CPU a request, against ~250-340 us with the
``h2`` state machine, which paced the benchmark more than the server did). Each update
reports ``--quota``/2 octets used and asks for ``--quota``; the release reports ``--quota``/2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any, cast

from hpack import Decoder
from loadgen import (
    SessionLoad,
    run_and_print,
)  # the Gy generator's (tools/ is this script's folder)

CREATE, UPDATE, RELEASE = 1, 2, 3
TYPE_NAMES = {CREATE: "create", UPDATE: "update", RELEASE: "release"}
ROOT = "/nchf-convergedcharging/v3/chargingdata"
WINDOW = 1 << 30  # our receive window: never what paces the run

# HTTP/2 (RFC 9113) as little as a client of small POSTs needs: frame types and flags
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0, 1, 3, 4, 6, 7, 8, 9,
)  # fmt: skip
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_MAX_STREAMS, SETTINGS_INITIAL_WINDOW = 0x2, 0x3, 0x4


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload
    )


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 5.1) in a ``prefix_bits`` prefix after the bits ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name_index: int, value: bytes) -> bytes:
    """A header field without indexing, its name from the static table, its value not
    Huffman-coded (RFC 7541 6.2.2): nothing to keep in step with the server's decoder."""
    return hpack_int(name_index, 4) + hpack_int(len(value), 7) + value


class H2c:
    """The client side of one h2c connection with prior knowledge, in as few Python steps as
    a generator of small POSTs needs: request header blocks built from the static table
    (``:method POST`` 3, ``:scheme http`` 6, ``:authority`` 1, ``:path`` 4,
    ``content-type`` 31, ``content-length`` 28), answers' frames parsed by hand and their
    header blocks decoded by ``hpack``, flow control kept in both directions. The ``h2``
    state machine cost ~250-340 us of CPU a request, more than the server's charging
    decision: with it the generators, not the server, set the pace (docs/benchmarks-nchf.md).
    """

    def __init__(self, authority: bytes) -> None:
        self.decoder = Decoder()
        self.buffer = bytearray()
        self.out: list[bytes] = []
        self.next_stream = 1
        self.send_window = 65535  # the server's connection window for our DATA
        self.stream_window = 65535  # its initial window of each stream
        self.max_streams = 100
        self.received = 0  # DATA bytes since our last WINDOW_UPDATE
        self.head = b"\x83\x86" + literal(1, authority)  # pseudo-headers first (RFC 9113)
        self.json = literal(31, b"application/json")
        self.blocks: dict[int, tuple[bytearray, int]] = {}  # header blocks being continued
        self.statuses: dict[int, int] = {}
        self.locations: dict[int, bytes] = {}
        self.closed = False

    def start(self) -> bytes:
        settings = (
            SETTINGS_ENABLE_PUSH.to_bytes(2, "big")
            + (0).to_bytes(4, "big")
            + SETTINGS_INITIAL_WINDOW.to_bytes(2, "big")
            + (WINDOW - 1).to_bytes(4, "big")
        )
        return (
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, (WINDOW - 65536).to_bytes(4, "big"))
        )

    def headers(self, path: bytes, length: int) -> int:
        """Queue a request's HEADERS; its stream id."""
        stream = self.next_stream
        self.next_stream += 2
        block = self.head + literal(4, path) + self.json + literal(28, str(length).encode())
        self.out.append(frame(HEADERS, END_HEADERS, stream, block))
        return stream

    def data(self, stream: int, body: bytes) -> bool:
        """Queue a request's body if the server's windows take it (False: not now)."""
        if len(body) > self.send_window or len(body) > self.stream_window:
            return False
        self.send_window -= len(body)
        self.out.append(frame(DATA, END_STREAM, stream, body))
        return True

    def pending(self) -> bytes:
        out = b"".join(self.out)
        self.out.clear()
        return out

    def receive(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """The streams whose answer ended: (stream id, status, location); status 0: reset."""
        buf = self.buffer
        buf += data
        ended: list[tuple[int, int, bytes]] = []
        pos, size = 0, len(buf)
        while size - pos >= 9:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            if size - pos - 9 < length:
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            stream = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9 : pos + 9 + length])
            pos += 9 + length
            if kind == DATA:
                self.received += length
                if flags & END_STREAM:
                    ended.append(self._ended(stream))
            elif kind in (HEADERS, CONTINUATION):
                self._header_block(kind, flags, stream, payload, ended)
            elif kind == WINDOW_UPDATE:
                if stream == 0:
                    self.send_window += int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            elif kind == SETTINGS:
                if not flags & ACK:
                    self._settings(payload)
                    self.out.append(frame(SETTINGS, ACK, 0, b""))
            elif kind == PING:
                if not flags & ACK:
                    self.out.append(frame(PING, ACK, 0, payload))
            elif kind == RST_STREAM:
                self.statuses[stream] = 0
                ended.append(self._ended(stream))
            elif kind == GOAWAY:
                self.closed = True
        del buf[:pos]
        if self.received > WINDOW // 2:
            self.out.append(frame(WINDOW_UPDATE, 0, 0, self.received.to_bytes(4, "big")))
            self.received = 0
        return ended

    def _header_block(
        self,
        kind: int,
        flags: int,
        stream: int,
        payload: bytes,
        ended: list[tuple[int, int, bytes]],
    ) -> None:
        if kind == HEADERS:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY:
                payload = payload[5:]
            if not flags & END_HEADERS:
                self.blocks[stream] = (bytearray(payload), flags)
                return
            block, first = payload, flags
        else:
            held, first = self.blocks[stream]
            held += payload
            if not flags & END_HEADERS:
                return
            del self.blocks[stream]
            block = bytes(held)
        for name, value in self.decoder.decode(block, raw=True):
            if name == b":status":
                self.statuses[stream] = int(value)
            elif name == b"location":
                self.locations[stream] = bytes(value)
        if first & END_STREAM:
            ended.append(self._ended(stream))

    def _ended(self, stream: int) -> tuple[int, int, bytes]:
        return stream, self.statuses.pop(stream, 0), self.locations.pop(stream, b"")

    def _settings(self, payload: bytes) -> None:
        for at in range(0, len(payload) - 5, 6):
            key = int.from_bytes(payload[at : at + 2], "big")
            value = int.from_bytes(payload[at + 2 : at + 6], "big")
            if key == SETTINGS_INITIAL_WINDOW:
                self.stream_window = value
            elif key == SETTINGS_MAX_STREAMS:
                self.max_streams = value


def body_template(args: argparse.Namespace) -> str:
    """A ChargingDataRequest with ``{imsi}``, ``{isn}``, ``{usage}`` left to fill."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {
        "subscriberIdentifier": "imsi-IMSI",
        "nfConsumerIdentification": {"nodeFunctionality": "SMF", "nFName": "loadgen"},
        "invocationTimeStamp": stamp,
        "invocationSequenceNumber": 999999999,
        "multipleUnitUsage": ["USAGE"],
        "pDUSessionChargingInformation": {
            "chargingId": 1,
            "pduSessionInformation": {
                "pduSessionID": 1,
                "networkSlicingInfo": {"sNSSAI": {"sst": 1}},
                "pduType": "IPV4",
                "ratType": "NR",
                "dnnId": args.dnn,
                "servingNetworkFunctionID": {
                    "servingNetworkFunctionInformation": {"nodeFunctionality": "AMF"}
                },
            },
        },
    }
    text = json.dumps(body, separators=(",", ":"))
    return (
        text.replace("{", "{{")
        .replace("}", "}}")
        .replace("IMSI", "{imsi}")
        .replace("999999999", "{isn}")
        .replace('"USAGE"', "{usage}")
    )


def usage(rating_group: int, requested: int, used: int, lsn: int) -> str:
    parts = [f'"ratingGroup":{rating_group}']
    if requested:
        parts.append(f'"requestedUnit":{{"totalVolume":{requested}}}')
    if used:
        parts.append(f'"usedUnitContainer":[{{"localSequenceNumber":{lsn},"totalVolume":{used}}}]')
    return "{" + ",".join(parts) + "}"


class NchfLoad(SessionLoad, asyncio.Protocol):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, [CREATE] + [UPDATE] * args.updates + [RELEASE], TYPE_NAMES)
        self.authority = f"{args.host}:{args.port}".encode()
        self.conn = H2c(self.authority)
        self.transport: asyncio.Transport | None = None
        self.ready_fut: asyncio.Future[None] = self.loop.create_future()
        self.template = body_template(args)
        q = args.quota
        self.usages = {
            CREATE: usage(args.rating_group, q, 0, 0),
            UPDATE: usage(args.rating_group, q, q // 2, 1),
            RELEASE: usage(args.rating_group, 0, q // 2, 1),
        }
        self.refs: dict[int, bytes] = {}  # session -> ChargingDataRef
        self.blocked: deque[tuple[int, bytes]] = deque()  # bodies waiting for the window

    # -- connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.conn.start())

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.ready_fut, self.done):
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection closed: {exc}"))
                fut.exception()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        for stream_id, status, location in self.conn.receive(data):
            self.stream_ended(stream_id, status, location, now)
        if self.conn.closed and self.transport is not None:  # GOAWAY
            self.transport.close()
        if not self.ready_fut.done():
            self.ready_fut.set_result(None)
        self.unblock()
        self.flush()
        if self.stopped and not self.outstanding and not self.done.done():
            self.done.set_result(None)

    def unblock(self) -> None:
        while self.blocked:
            stream_id, body = self.blocked[0]
            if not self.conn.data(stream_id, body):  # the server's window is full
                return
            self.blocked.popleft()

    def flush(self) -> None:
        data = self.conn.pending()
        if data and self.transport is not None:
            self.transport.write(data)

    def stream_ended(self, stream_id: int, status: int, location: bytes, now: float) -> None:
        entry = self.outstanding.pop(stream_id, None)
        if entry is None:
            return
        i, rtype = entry[1], entry[3]
        created = rtype != CREATE or (status == 201 and bool(location))
        if rtype == CREATE and created:
            self.refs[i] = location.rstrip(b"/").rsplit(b"/", 1)[1]
        # no resource created: the session ends here
        if self.answered(entry, now, status, ends=not created):
            self.refs.pop(i, None)

    # -- requests ----------------------------------------------------------------------------
    def may_send(self) -> bool:
        return len(self.outstanding) < self.conn.max_streams  # the server's stream limit

    def request(self, i: int, step: int, rtype: int) -> int:
        args = self.args
        imsi = str(int(args.imsi_first) + (args.run_id * 7919 + i) % args.imsi_count).zfill(15)
        body = self.template.format(imsi=imsi, isn=step, usage=self.usages[rtype]).encode()
        if rtype == CREATE:
            path = ROOT.encode()
        else:
            verb = b"update" if rtype == UPDATE else b"release"
            path = ROOT.encode() + b"/" + self.refs[i] + b"/" + verb
        stream_id = self.conn.headers(path, len(body))
        self.blocked.append((stream_id, body))  # sent as the flow-control windows allow
        self.unblock()
        return stream_id


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    cpu_before = time.process_time()
    if args.sessions and not args.duration:
        args.duration = 3600.0
    transport, gen = await loop.create_connection(lambda: NchfLoad(args), args.host, args.port)
    await asyncio.wait_for(gen.ready_fut, 5)  # the server's SETTINGS
    await gen.run()
    transport.close()
    return {**gen.summary(), "generator_cpu_us_per_request": gen.cpu_us(cpu_before)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--sessions", type=int, default=0, help="at most N sessions (0: no limit)")
    parser.add_argument("--updates", type=int, default=3, help="updates per session")
    parser.add_argument("--window", type=int, default=64, help="outstanding requests")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests/s; 0 = as fast as possible"
    )
    parser.add_argument("--quota", type=int, default=1_000_000, help="octets requested")
    parser.add_argument("--rating-group", type=int, default=10)
    parser.add_argument("--dnn", default="iot.demo")
    parser.add_argument("--imsi-first", default="262010000000000")
    parser.add_argument("--imsi-count", type=int, default=1000)
    parser.add_argument(
        "--max-open", type=int, default=0, help="open loop: at most N open sessions (0: no cap)"
    )
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds not measured")
    parser.add_argument("--duration", type=float, default=0.0, help="measured seconds")
    parser.add_argument("--json-line", action="store_true", help="one line of JSON")
    parser.add_argument("--run-id", type=int, default=0, help="spreads the SIMs between processes")
    run_and_print(run, parser.parse_args())


if __name__ == "__main__":
    main()
