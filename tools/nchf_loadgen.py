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
units patched in; answers are not parsed beyond their status and Location. Each update
reports ``--quota``/2 octets used and asks for ``--quota``; the release reports ``--quota``/2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from loadgen import percentiles  # the Gy generator's (tools/ is this script's folder)

CREATE, UPDATE, RELEASE = 1, 2, 3
TYPE_NAMES = {CREATE: "create", UPDATE: "update", RELEASE: "release"}
ROOT = "/nchf-convergedcharging/v3/chargingdata"
WINDOW = 1 << 30  # our receive window: never what paces the run


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


class NchfLoad(asyncio.Protocol):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.transport: asyncio.Transport | None = None
        self.ready_fut: asyncio.Future[None] = self.loop.create_future()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.template = body_template(args)
        q = args.quota
        self.usages = {
            CREATE: usage(args.rating_group, q, 0, 0),
            UPDATE: usage(args.rating_group, q, q // 2, 1),
            RELEASE: usage(args.rating_group, 0, q // 2, 1),
        }
        self.steps = [CREATE] + [UPDATE] * args.updates + [RELEASE]
        self.authority = f"{args.host}:{args.port}".encode()
        self.refs: dict[int, bytes] = {}  # session -> ChargingDataRef
        self.ready: deque[tuple[int, int]] = deque()
        self.sessions_started = 0
        self.sessions_done = 0
        self.backlog: deque[float] = deque()
        self.outstanding: dict[int, tuple[float, int, int, int]] = {}  # stream -> due, i, step, t
        self.blocked: deque[tuple[int, bytes]] = deque()  # bodies waiting for the window
        self.status: dict[int, int] = {}
        self.location: dict[int, bytes] = {}
        self.start = 0.0
        self.measure_from = self.measure_to = 0.0
        self.stopped = False
        self.latencies: dict[int, list[float]] = {CREATE: [], UPDATE: [], RELEASE: []}
        self.codes: Counter[str] = Counter()
        self.answered_in_window: Counter[int] = Counter()
        self.sent = 0
        self.timeouts = 0

    # -- connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.conn.local_settings.initial_window_size = WINDOW - 1
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(WINDOW - 65536)
        transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.ready_fut, self.done):
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection closed: {exc}"))
                fut.exception()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        for event in self.conn.receive_data(data):
            if isinstance(event, ResponseReceived):
                for name, value in event.headers:
                    if name == b":status":
                        self.status[event.stream_id] = int(value)
                    elif name == b"location":
                        self.location[event.stream_id] = value
            elif isinstance(event, DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self.answered(event.stream_id, now)
            elif isinstance(event, StreamReset):
                self.status[event.stream_id] = 0
                self.answered(event.stream_id, now)
            elif isinstance(event, ConnectionTerminated) and self.transport is not None:
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
            if self.conn.local_flow_control_window(stream_id) < len(body):
                return
            self.conn.send_data(stream_id, body, end_stream=True)
            self.blocked.popleft()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def answered(self, stream_id: int, now: float) -> None:
        entry = self.outstanding.pop(stream_id, None)
        status = self.status.pop(stream_id, 0)
        location = self.location.pop(stream_id, b"")
        if entry is None:
            return
        due, i, step, rtype = entry
        if self.measure_from <= due < self.measure_to:
            self.latencies[rtype].append(now - due)
            self.codes[str(status)] += 1
            self.answered_in_window[rtype] += 1
        if rtype == CREATE:
            if status == 201 and location:
                self.refs[i] = location.rstrip(b"/").rsplit(b"/", 1)[1]
            else:
                step = len(self.steps)  # no resource: the session ends here
        if step + 1 < len(self.steps):
            self.ready.append((i, step + 1))
        else:
            self.refs.pop(i, None)
            self.sessions_done += 1
        if not self.args.rate:
            if not self.stopped:
                self.queue_next(now)
        elif self.backlog and self.queue_next(self.backlog[0]):
            self.backlog.popleft()

    # -- requests ----------------------------------------------------------------------------
    def queue_next(self, due: float) -> bool:
        args = self.args
        if self.ready:
            i, step = self.ready.popleft()
        elif (not args.sessions or self.sessions_started < args.sessions) and (
            not args.max_open or self.sessions_started - self.sessions_done < args.max_open
        ):
            i, step = self.sessions_started, 0
            self.sessions_started += 1
        else:
            return False
        rtype = self.steps[step]
        imsi = str(int(args.imsi_first) + (args.run_id * 7919 + i) % args.imsi_count).zfill(15)
        body = self.template.format(imsi=imsi, isn=step, usage=self.usages[rtype]).encode()
        if rtype == CREATE:
            path = ROOT.encode()
        else:
            verb = b"update" if rtype == UPDATE else b"release"
            path = ROOT.encode() + b"/" + self.refs[i] + b"/" + verb
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            stream_id,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":authority", self.authority),
                (b":path", path),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        )
        self.blocked.append((stream_id, body))  # sent as the flow-control windows allow
        self.unblock()
        self.outstanding[stream_id] = (due, i, step, rtype)
        self.sent += 1
        return True

    async def run(self) -> None:
        args = self.args
        self.start = time.perf_counter()
        self.measure_from = self.start + args.warmup
        self.measure_to = self.measure_from + args.duration
        end = self.measure_to
        if args.rate:
            await self.paced(args.rate, end)
        else:
            for _ in range(args.window):
                self.queue_next(self.start)
            self.flush()
            while time.perf_counter() < end and not self.done.done():
                await asyncio.sleep(0.05)
                if args.sessions and not self.outstanding and not self.ready:
                    break
        self.stopped = True
        if self.outstanding and not self.done.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.done), args.timeout)
        for due, _i, _step, _rtype in self.outstanding.values():
            if self.measure_from <= due < self.measure_to:
                self.timeouts += 1
        self.timeouts += sum(
            1 for due in self.backlog if self.measure_from <= due < self.measure_to
        )

    async def paced(self, rate: float, end: float) -> None:
        """Request k at start + k / rate, every request already due in one write."""
        finished: asyncio.Future[None] = self.loop.create_future()
        interval = 1.0 / rate
        k = 0
        offset = self.loop.time() - time.perf_counter()
        args = self.args

        def tick() -> None:
            nonlocal k
            now = time.perf_counter()
            at = 0.0
            while (due := self.start + k * interval) <= now and due < end:
                if self.backlog or not self.queue_next(due):
                    if args.sessions and self.sessions_started >= args.sessions:
                        at = now + 0.0005
                        break
                    self.backlog.append(due)
                k += 1
            self.flush()
            if due >= end:
                finished.set_result(None)
            else:
                self.loop.call_at(max(due, at) + offset, tick)

        tick()
        await finished


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    cpu_before = time.process_time()
    if args.sessions and not args.duration:
        args.duration = 3600.0
    transport, gen = await loop.create_connection(lambda: NchfLoad(args), args.host, args.port)
    await asyncio.wait_for(gen.ready_fut, 5)  # the server's SETTINGS
    await gen.run()
    transport.close()
    measured = min(args.duration, max(1e-9, time.perf_counter() - gen.measure_from))
    answered = sum(gen.answered_in_window.values())
    everything = [x for lat in gen.latencies.values() for x in lat]
    codes = dict(gen.codes)
    if gen.timeouts:
        codes["timeout"] = gen.timeouts
    return {
        "mode": f"open loop at {args.rate:g}/s"
        if args.rate
        else f"closed loop, window {args.window}",
        "requests": answered + gen.timeouts,
        "sent_total": gen.sent,
        "sessions": gen.sessions_started,
        "max_open": args.max_open,
        "seconds": round(measured, 3),
        "throughput_per_s": round(answered / measured, 1),
        "by_type_per_s": {
            TYPE_NAMES[t]: round(n / measured, 1) for t, n in sorted(gen.answered_in_window.items())
        },
        "latency_ms": percentiles(everything),
        "latency_ms_by_type": {TYPE_NAMES[t]: percentiles(v) for t, v in gen.latencies.items()},
        "result_codes": codes,
        "generator_cpu_us_per_request": round(
            (time.process_time() - cpu_before) / max(1, gen.sent) * 1e6, 1
        ),
    }


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
    args = parser.parse_args()
    if not args.sessions and not args.duration:
        args.sessions = 1000
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:  # pragma: no cover
        result = asyncio.run(run(args))
    print(json.dumps(result, indent=None if args.json_line else 2), flush=True)


if __name__ == "__main__":
    main()
