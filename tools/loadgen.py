"""Diameter Gy load generator: CER, then sessions of CCR-I, CCR-U x N, CCR-T, at a target
rate (open loop) or as fast as possible with a window of outstanding requests (closed loop).
Prints throughput, latency percentiles and Result-Code counts as JSON.

    python tools/loadgen.py --host 127.0.0.1 --port 3868 --updates 20 --window 64 \
        --warmup 1 --duration 10 [--rate 2000] [--imsi-first 262010000000000 --imsi-count 1000]

A session sends its next request only after the answer to its previous one, as a gateway
does. Requests go to the session that has waited longest for its turn; when none is ready a
new session starts (with ``--sessions N``, at most N sessions in all).

* Closed loop (no ``--rate``): ``--window`` requests are outstanding; each answer releases
  the next request.
* Open loop (``--rate R``): request k is due at start + k/R and is sent then, whether or not
  earlier requests were answered; its latency runs from that scheduled time, so a server
  that falls behind shows its queueing delay (no coordinated omission). With
  ``--max-open N`` at most N sessions are open: a request due when none of them is ready
  waits for the first one that is (its latency still runs from its scheduled time), so the
  mix of CCR-I/U/T offered stays 1 : updates : 1 whatever the server's latency. Without a
  cap a slow server is offered ever more new sessions (CCR-I, the dearest request), which
  makes it slower still.

Requests are patched from pre-encoded templates (Session-Id, CC-Request-Number, IMSI, ids),
so the generator spends a few microseconds per request. Only the requests scheduled in
``[warmup, warmup + duration)`` are measured; those scheduled before the end but answered
after ``--timeout`` count as timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
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


def _origin(host: str = "loadgen.local") -> list[Avp]:
    """Our identity. Each generator (process or connection) has its own Origin-Host: the
    server's duplicate detection is by (Origin-Host, End-to-End id) (RFC 6733 6.2), and the
    random End-to-End ids of two generators started in the same second may overlap."""
    return [text(A.AVP_ORIGIN_HOST, host), text(A.AVP_ORIGIN_REALM, "local")]


def cer(host: str = "loadgen.local") -> Message:
    return build_message(
        Command.CAPABILITIES_EXCHANGE,
        Application.COMMON,
        [
            *_origin(host),
            avp(A.AVP_HOST_IP_ADDRESS, "127.0.0.1"),
            u32(A.AVP_VENDOR_ID, 0),
            text(A.AVP_PRODUCT_NAME, "ocs-loadgen"),
            u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
            u32(A.AVP_SUPPORTED_VENDOR_ID, 10415),
        ],
        proxiable=False,
    )


def ccr(
    sid: str,
    rtype: int,
    n: int,
    imsi: str,
    used: int,
    want: int,
    rg: int,
    host: str = "loadgen.local",
) -> Message:
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
            *_origin(host),
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


TYPE_NAMES = {1: "initial", 2: "update", 3: "terminate"}
IMSI_SENTINEL = "999999999999999"
NUMBER_SENTINEL = 0x5EC0DE5E


class Template:
    """One encoded CCR of each request type, with the offsets of the fields to patch."""

    def __init__(
        self, run_id: int, rtype: int, used: int, want: int, rating_group: int, host: str
    ) -> None:
        self.sid_len = len(self.session_id(run_id, 0))
        sid = "#" * self.sid_len
        raw = ccr(
            sid, rtype, NUMBER_SENTINEL, IMSI_SENTINEL, used, want, rating_group, host
        ).encode()
        self.raw = raw
        self.sid_at = raw.index(sid.encode())
        self.number_at = raw.index(NUMBER_SENTINEL.to_bytes(4, "big"))
        self.imsi_at = raw.index(IMSI_SENTINEL.encode())

    @staticmethod
    def session_id(run_id: int, i: int) -> str:
        # begins with the Origin-Host (loadgen-<run>.local), as RFC 6733 8.8 asks: what real
        # gateways send, and what lets the server skip the CCR-I claim (charging.sessions)
        return f"loadgen-{run_id}.local;{run_id:010d};{i:010d}"

    def build(self, sid: bytes, number: int, imsi: bytes, ids: bytes) -> bytes:
        b = bytearray(self.raw)
        b[12:20] = ids
        b[self.sid_at : self.sid_at + self.sid_len] = sid
        b[self.number_at : self.number_at + 4] = number.to_bytes(4, "big")
        b[self.imsi_at : self.imsi_at + 15] = imsi
        return bytes(b)


def result_code(raw: bytes) -> int | None:
    """The top-level Result-Code of an encoded answer (AVP 268), without a full decode."""
    at, end = 20, len(raw)
    while at + 8 <= end:
        code = int.from_bytes(raw[at : at + 4], "big")
        length = int.from_bytes(raw[at + 5 : at + 8], "big")
        header = 12 if raw[at + 4] & 0x80 else 8
        if code == A.AVP_RESULT_CODE and length == header + 4:
            return int.from_bytes(raw[at + header : at + header + 4], "big")
        if length < 8:
            return None
        at += (length + 3) & ~3
    return None


class SessionLoad:
    """The load both generators offer (Gy here, Nchf in ``tools/nchf_loadgen.py``): sessions
    of ``steps`` requests, each sent after the answer to the one before; the closed loop
    (``--window`` outstanding) and the open loop (request k due at start + k/R, a backlog of
    due times while no session is ready, ``--max-open``); what is measured (requests due in
    ``[warmup, warmup + duration)``). A generator sends a request in :meth:`request`
    (buffered), writes what it buffered in :meth:`flush` and reports each answer to
    :meth:`answered`."""

    def __init__(
        self, args: argparse.Namespace, steps: list[int], type_names: dict[int, str]
    ) -> None:
        self.args = args
        self.type_names = type_names  # request type -> its name in the output
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.steps = steps
        self.ready: deque[tuple[int, int]] = deque()  # (session index, next step)
        self.sessions_started = 0
        self.sessions_done = 0
        self.backlog: deque[float] = deque()  # due times waiting for a ready session
        self.outstanding: dict[int, tuple[float, int, int, int]] = {}  # id -> due, i, step, t
        self.start = 0.0
        self.measure_from = self.measure_to = 0.0
        self.stopped = False
        self.latencies: dict[int, list[float]] = {t: [] for t in type_names}
        self.codes: Counter[str] = Counter()
        self.answered_in_window: Counter[int] = Counter()
        self.sent = 0
        self.timeouts = 0

    def request(self, i: int, step: int, rtype: int) -> int:
        """Buffer step ``step`` (of type ``rtype``) of session ``i``; the id its answer
        will carry."""
        raise NotImplementedError

    def flush(self) -> None:
        """Write what :meth:`request` buffered."""
        raise NotImplementedError

    def measured(self, due: float) -> bool:
        return self.measure_from <= due < self.measure_to

    def answered(
        self, entry: tuple[float, int, int, int], now: float, code: object, *, ends: bool = False
    ) -> bool:
        """The answer ``code`` to the request ``entry`` (due, session, step, type), counted
        if it was due in the measured window; the session's next step is ready (none after
        its last, or ``ends``), and the next request goes (closed loop), or the oldest due
        time of the backlog (open loop). True when the session ended."""
        due, i, step, rtype = entry
        if self.measured(due):
            self.latencies[rtype].append(now - due)
            self.codes[str(code)] += 1
            self.answered_in_window[rtype] += 1
        ended = ends or step + 1 >= len(self.steps)
        if ended:
            self.sessions_done += 1
        else:
            self.ready.append((i, step + 1))
        if not self.args.rate:
            if not self.stopped:
                self.queue_next(now)
        elif self.backlog and self.queue_next(self.backlog[0]):
            self.backlog.popleft()
        return ended

    def may_send(self) -> bool:
        """Whether the connection takes another request now (Nchf: the server's stream
        limit); a request that may not go waits in the backlog (open loop)."""
        return True

    def queue_next(self, due: float) -> bool:
        """Buffer the next request, due at ``due``: the session that has waited longest for
        its turn, else a new one if ``--sessions`` and ``--max-open`` allow; False if none."""
        args = self.args
        if not self.may_send():
            return False
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
        self.outstanding[self.request(i, step, rtype)] = (due, i, step, rtype)
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
        self.timeouts += sum(1 for due, _, _, _ in self.outstanding.values() if self.measured(due))
        self.timeouts += sum(1 for due in self.backlog if self.measured(due))

    async def paced(self, rate: float, end: float) -> None:
        """Send request k at start + k / rate: one timer callback per due time (no coroutine
        wake-up per request), every request already due in one write."""
        finished: asyncio.Future[None] = self.loop.create_future()
        interval = 1.0 / rate
        k = 0
        offset = self.loop.time() - time.perf_counter()  # perf_counter -> loop clock
        args = self.args

        def tick() -> None:
            nonlocal k
            now = time.perf_counter()
            at = 0.0
            while (due := self.start + k * interval) <= now and due < end:
                if self.backlog or not self.queue_next(due):
                    if args.sessions and self.sessions_started >= args.sessions:
                        at = now + 0.0005  # every session started: wait for a ready one
                        break
                    self.backlog.append(due)
                k += 1
            self.flush()
            exhausted = (
                args.sessions
                and not self.ready
                and not self.outstanding
                and self.sessions_started >= args.sessions
            )
            if due >= end or exhausted:
                finished.set_result(None)
            else:
                self.loop.call_at(max(due, at) + offset, tick)

        tick()
        await finished

    def summary(self) -> dict[str, Any]:
        """What both generators print, to the Result-Codes (``cpu_us`` after)."""
        args = self.args
        measured = min(args.duration, max(1e-9, time.perf_counter() - self.measure_from))
        answered = sum(self.answered_in_window.values())
        everything = [x for lat in self.latencies.values() for x in lat]
        codes = dict(self.codes)
        if self.timeouts:
            codes["timeout"] = self.timeouts
        return {
            "mode": f"open loop at {args.rate:g}/s"
            if args.rate
            else f"closed loop, window {args.window}",
            "requests": answered + self.timeouts,
            "sent_total": self.sent,
            "sessions": self.sessions_started,
            "max_open": args.max_open,
            "seconds": round(measured, 3),
            "throughput_per_s": round(answered / measured, 1),
            "by_type_per_s": {
                self.type_names[t]: round(n / measured, 1)
                for t, n in sorted(self.answered_in_window.items())
            },
            "latency_ms": percentiles(everything),
            "latency_ms_by_type": {
                self.type_names[t]: percentiles(v) for t, v in self.latencies.items()
            },
            "result_codes": codes,
        }

    def cpu_us(self, cpu_before: float) -> float:
        """The generator's CPU time per request sent, in microseconds."""
        return round((time.process_time() - cpu_before) / max(1, self.sent) * 1e6, 1)


class LoadGen(SessionLoad, asyncio.Protocol):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, [1] + [2] * args.updates + [3], TYPE_NAMES)
        self.framer = Framer()
        self.transport: asyncio.Transport | None = None
        self.cea: asyncio.Future[int | None] = self.loop.create_future()
        self.run_id = getattr(args, "run_id", 0) or int(time.time()) % 10**10
        self.host = f"loadgen-{self.run_id}.local"
        q, rg, host = args.quota, args.rating_group, self.host
        self.templates = {
            1: Template(self.run_id, 1, 0, q, rg, host),
            2: Template(self.run_id, 2, q // 2, q, rg, host),
            3: Template(self.run_id, 3, q // 2, 0, rg, host),
        }
        # RFC 6733 3: End-to-End ids start from the time (high 12 bits) and a random low
        # part, so a second run is not answered from the server's duplicate cache.
        self.next_id = ((int(time.time()) & 0xFFF) << 20) | random.getrandbits(20)
        self.batch: list[bytes] = []  # written by flush()
        self.seconds: list[tuple[float, float, bool]] = []  # --timeline: due, latency, 2001
        self.unmatched = 0

    # -- connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(cer(self.host).encode())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.cea, self.done):
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection closed: {exc}"))
                fut.exception()  # awaited or not: a closed connection at the end is no error

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        for raw in self.framer.feed(data):
            command = int.from_bytes(raw[5:8], "big")
            if raw[4] & 0x80:  # a request from the server (DWR): answer it
                if command == Command.DEVICE_WATCHDOG:
                    answer = decode(raw).answer_header()
                    answer.avps = [u32(A.AVP_RESULT_CODE, 2001), *_origin(self.host)]
                    self.batch.append(answer.encode())
                continue
            if command == Command.CAPABILITIES_EXCHANGE:
                if not self.cea.done():
                    self.cea.set_result(result_code(raw))
                continue
            entry = self.outstanding.pop(int.from_bytes(raw[12:16], "big"), None)
            if entry is None:
                self.unmatched += 1
                continue
            code = result_code(raw)
            if getattr(self.args, "timeline", False) and self.measured(entry[0]):
                self.seconds.append((entry[0] - self.measure_from, now - entry[0], code == 2001))
            self.answered(entry, now, code)
        self.flush()
        if self.stopped and not self.outstanding and not self.done.done():
            self.done.set_result(None)

    # -- requests ----------------------------------------------------------------------------
    def request(self, i: int, step: int, rtype: int) -> int:
        hbh = self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        ids = hbh.to_bytes(4, "big")
        sid = Template.session_id(self.run_id, i).encode()
        imsi = str(int(self.args.imsi_first) + i % self.args.imsi_count).zfill(15).encode()
        self.batch.append(self.templates[rtype].build(sid, step, imsi, ids + ids))
        return hbh

    def flush(self) -> None:
        if self.batch and self.transport is not None:
            self.transport.write(b"".join(self.batch))
        self.batch.clear()


def timeline(samples: list[tuple[float, float, bool]]) -> list[dict[str, Any]]:
    """Per second of the measured window (by scheduled time): answers, p99, max, and the
    answers other than 2001."""
    by_second: dict[int, list[tuple[float, bool]]] = {}
    for due, latency, ok in samples:
        by_second.setdefault(int(due), []).append((latency, ok))
    out = []
    for second, rows in sorted(by_second.items()):
        stats = percentiles([latency for latency, _ in rows])
        out.append(
            {
                "s": second,
                "n": len(rows),
                "p99": stats["p99"],
                "max": stats["max"],
                "not_2001": sum(1 for _, ok in rows if not ok),
            }
        )
    return out


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)

    def pct(p: float) -> float:
        if not values:
            return 0.0
        return round(values[min(len(values) - 1, int(p / 100 * len(values)))] * 1e3, 3)

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": pct(100)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    cpu_before = time.process_time()
    if args.sessions and not args.duration:
        args.duration = 3600.0  # until the sessions are done
    _, gen = await loop.create_connection(lambda: LoadGen(args), args.host, args.port)
    code = await asyncio.wait_for(gen.cea, 5)
    if code != 2001:
        raise SystemExit(f"CER refused: {code}")
    await gen.run()
    assert gen.transport is not None
    gen.transport.close()
    extra = {"timeline": timeline(gen.seconds)} if args.timeline else {}
    return {
        **gen.summary(),
        "unmatched_answers": gen.unmatched,
        "generator_cpu_us_per_request": gen.cpu_us(cpu_before),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3868)
    parser.add_argument("--sessions", type=int, default=0, help="at most N sessions (0: no limit)")
    parser.add_argument("--updates", type=int, default=3, help="CCR-U per session")
    parser.add_argument("--window", type=int, default=64, help="outstanding requests")
    parser.add_argument("--rate", type=float, default=0.0, help="CCR/s; 0 = as fast as possible")
    parser.add_argument("--quota", type=int, default=1_000_000)
    parser.add_argument("--rating-group", type=int, default=10)
    parser.add_argument("--imsi-first", default="262010000000000")
    parser.add_argument("--imsi-count", type=int, default=1000)
    parser.add_argument(
        "--max-open", type=int, default=0, help="open loop: at most N open sessions (0: no cap)"
    )
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds not measured")
    parser.add_argument("--duration", type=float, default=0.0, help="measured seconds")
    parser.add_argument("--json-line", action="store_true", help="one line of JSON")
    parser.add_argument(
        "--timeline", action="store_true", help="also p99/max per second of the window"
    )
    parser.add_argument(
        "--run-id",
        type=int,
        default=0,
        help="Session-Id part (default: the time; distinct per process)",
    )
    run_and_print(run, parser.parse_args())


def run_and_print(
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
    args: argparse.Namespace,
) -> None:
    """``run(args)`` on uvloop (1,000 sessions when neither ``--sessions`` nor
    ``--duration`` is given); its result printed as JSON."""
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
