"""Diameter Gy load generator: CER, then sessions of CCR-I, CCR-U x N, CCR-T, at a target
rate or as fast as possible with a window of outstanding requests. Prints throughput,
latency percentiles and Result-Code counts as JSON.

    python tools/loadgen.py --host 127.0.0.1 --port 3868 --sessions 2000 --updates 3 \
        --window 64 [--rate 2000] [--imsi-first 262010000000000 --imsi-count 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from ocs.diameter import avp_codes as A
from ocs.diameter.codec import (
    Avp,
    Message,
    avp,
    build_message,
    decode,
    grouped,
    i32,
    text,
    u32,
    u64,
)
from ocs.diameter.constants import Application, Command, SubscriptionIdType
from ocs.diameter.framer import Framer


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = Framer()
        self.pending: dict[int, asyncio.Future[Message]] = {}
        self.next_id = 1
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            for raw in self.framer.feed(data):
                msg = decode(raw)
                fut = self.pending.pop(msg.hbh_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                elif msg.is_request and msg.command == Command.DEVICE_WATCHDOG:
                    answer = msg.answer_header()
                    answer.avps = [u32(A.AVP_RESULT_CODE, 2001), *_origin()]
                    self.writer.write(answer.encode())

    async def request(self, msg: Message) -> Message:
        msg.hbh_id = msg.e2e_id = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.pending[msg.hbh_id] = fut
        self.writer.write(msg.encode())
        return await fut


def _origin() -> list[Avp]:
    return [text(A.AVP_ORIGIN_HOST, "loadgen.local"), text(A.AVP_ORIGIN_REALM, "local")]


def cer() -> Message:
    return build_message(
        Command.CAPABILITIES_EXCHANGE,
        Application.COMMON,
        [
            *_origin(),
            avp(A.AVP_HOST_IP_ADDRESS, "127.0.0.1"),
            u32(A.AVP_VENDOR_ID, 0),
            text(A.AVP_PRODUCT_NAME, "ocs-loadgen"),
            u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
            u32(A.AVP_SUPPORTED_VENDOR_ID, 10415),
        ],
        proxiable=False,
    )


def ccr(sid: str, rtype: int, n: int, imsi: str, used: int, want: int, rg: int) -> Message:
    mscc: list[Avp] = []
    if want:
        mscc.append(grouped(A.AVP_REQUESTED_SERVICE_UNIT, [u64(A.AVP_CC_TOTAL_OCTETS, want)]))
    if used:
        mscc.append(grouped(A.AVP_USED_SERVICE_UNIT, [u64(A.AVP_CC_TOTAL_OCTETS, used)]))
    mscc.append(u32(A.AVP_RATING_GROUP, rg))
    return build_message(
        Command.CREDIT_CONTROL,
        Application.CREDIT_CONTROL,
        [
            text(A.AVP_SESSION_ID, sid),
            *_origin(),
            text(A.AVP_DESTINATION_REALM, "local"),
            u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
            text(A.AVP_SERVICE_CONTEXT_ID, "32251@3gpp.org"),
            i32(A.AVP_CC_REQUEST_TYPE, rtype),
            u32(A.AVP_CC_REQUEST_NUMBER, n),
            avp(A.AVP_EVENT_TIMESTAMP, datetime.now(UTC)),
            grouped(
                A.AVP_SUBSCRIPTION_ID,
                [
                    i32(A.AVP_SUBSCRIPTION_ID_TYPE, SubscriptionIdType.END_USER_IMSI),
                    text(A.AVP_SUBSCRIPTION_ID_DATA, imsi),
                ],
            ),
            grouped(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, mscc),
            grouped(
                A.AVP_SERVICE_INFORMATION,
                [
                    grouped(
                        A.AVP_PS_INFORMATION,
                        [
                            text(A.AVP_3GPP_SGSN_MCC_MNC, "26201"),
                            text(A.AVP_CALLED_STATION_ID, "iot.demo"),
                        ],
                    )
                ],
            ),
        ],
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(args.host, args.port)
    client = Client(reader, writer)
    cea = await asyncio.wait_for(client.request(cer()), 5)
    if cea.get(A.AVP_RESULT_CODE) != 2001:
        raise SystemExit(f"CER refused: {cea.get(A.AVP_RESULT_CODE)}")
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    window = asyncio.Semaphore(args.window)
    interval = 1.0 / args.rate if args.rate else 0.0
    first = int(args.imsi_first)
    started = time.perf_counter()
    next_send = started

    async def one(msg: Message) -> None:
        try:
            t0 = time.perf_counter()
            answer = await asyncio.wait_for(client.request(msg), args.timeout)
            latencies.append(time.perf_counter() - t0)
            codes[str(answer.get(A.AVP_RESULT_CODE))] += 1
        except TimeoutError:
            codes["timeout"] += 1
        finally:
            window.release()

    async def session(i: int) -> None:
        nonlocal next_send
        sid = f"loadgen.local;{int(started)};{i}"
        imsi = str(first + i % args.imsi_count).zfill(15)
        steps = [(1, 0, args.quota)] + [(2, args.quota // 2, args.quota)] * args.updates
        steps.append((3, args.quota // 2, 0))
        for n, (rtype, used, want) in enumerate(steps):
            await window.acquire()
            if interval:
                next_send += interval
                delay = next_send - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await one(ccr(sid, rtype, n, imsi, used, want, args.rating_group))

    await asyncio.gather(*(session(i) for i in range(args.sessions)))
    elapsed = time.perf_counter() - started
    writer.close()
    client.task.cancel()
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e3, 3)

    return {
        "requests": len(latencies) + codes.get("timeout", 0),
        "seconds": round(elapsed, 3),
        "throughput_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": pct(100)},
        "result_codes": dict(codes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3868)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=3, help="CCR-U per session")
    parser.add_argument("--window", type=int, default=64, help="outstanding requests")
    parser.add_argument("--rate", type=float, default=0.0, help="CCR/s; 0 = as fast as possible")
    parser.add_argument("--quota", type=int, default=1_000_000)
    parser.add_argument("--rating-group", type=int, default=10)
    parser.add_argument("--imsi-first", default="262010000000000")
    parser.add_argument("--imsi-count", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=5.0)
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
