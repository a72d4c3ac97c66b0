"""Responder benchmark: a minimal CCA responder on our stack against a python-diameter 0.9 Node.

One run, one machine, one load client for both. Three kinds of process:

* ``--role ours``: DiameterServer + Node (uvloop) whose CCR handler returns a static CCA.
* ``--role pd``: a python-diameter ``Node`` (threaded) with an application answering the same
  static CCA. ``--pd-app inline`` (default) answers in the node's own thread, the fastest way
  python-diameter offers; ``--pd-app threading`` uses its ``SimpleThreadingApplication`` (one
  thread per request).
* ``--role client``: asyncio + uvloop + our framer. CER, then CCR-Updates with a window of
  ``--window`` requests outstanding for ``--duration`` seconds (after ``--warmup``); counts
  answers and measures latency from write to answer. Prints one JSON line.

Without ``--role`` the script orchestrates: for each responder it starts the server process,
then the client process, and prints one JSON line with both results and the ratio. On a machine
with two or more cores the client is pinned to CPU 0 and the responder to CPU 1, so each gets a
core of its own.

    .venv/bin/python tools/bench_responder.py --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity, make_answer
from ocs.diameter.codec import Avp, Message, avp, build_message, decode, grouped, text, u32, u64
from ocs.diameter.constants import Application, CcRequestType, Command, ResultCode
from ocs.diameter.framer import Framer

CLIENT = Identity("client.bench", "bench")
SERVER = Identity("ocs.bench", "bench")
GRANTED_OCTETS = 1_000_000
RATING_GROUP = 1


# -- the request the client sends --------------------------------------------------------------
def ccr_update() -> Message:
    """A CCR-Update as a PGW sends it: two Subscription-Ids, one MSCC with USU and RSU."""
    avps = [
        text(A.AVP_SESSION_ID, "pgw.bench;1700000000;42"),
        *CLIENT.origin_avps(),
        text(A.AVP_DESTINATION_REALM, SERVER.origin_realm),
        u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
        text(A.AVP_SERVICE_CONTEXT_ID, "32251@3gpp.org"),
        u32(A.AVP_CC_REQUEST_TYPE, CcRequestType.UPDATE_REQUEST),
        u32(A.AVP_CC_REQUEST_NUMBER, 1),
        grouped(
            A.AVP_SUBSCRIPTION_ID,
            [u32(A.AVP_SUBSCRIPTION_ID_TYPE, 0), text(A.AVP_SUBSCRIPTION_ID_DATA, "491700000001")],
        ),
        grouped(
            A.AVP_SUBSCRIPTION_ID,
            [
                u32(A.AVP_SUBSCRIPTION_ID_TYPE, 1),
                text(A.AVP_SUBSCRIPTION_ID_DATA, "262010000000001"),
            ],
        ),
        grouped(
            A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
            [
                grouped(A.AVP_REQUESTED_SERVICE_UNIT, [u64(A.AVP_CC_TOTAL_OCTETS, GRANTED_OCTETS)]),
                grouped(
                    A.AVP_USED_SERVICE_UNIT,
                    [
                        u64(A.AVP_CC_TOTAL_OCTETS, 734_003),
                        u64(A.AVP_CC_INPUT_OCTETS, 34_003),
                        u64(A.AVP_CC_OUTPUT_OCTETS, 700_000),
                    ],
                ),
                u32(A.AVP_RATING_GROUP, RATING_GROUP),
            ],
        ),
    ]
    return build_message(Command.CREDIT_CONTROL, Application.CREDIT_CONTROL, avps, hbh_id=1)


# -- responder on our stack -------------------------------------------------------------------
def run_ours(port: int) -> None:
    import uvloop

    from ocs.diameter.node import Node, PeerInfo
    from ocs.diameter.peer import LocalConfig
    from ocs.diameter.peers import PeerSpec, PeerTable
    from ocs.diameter.transport import DiameterServer

    mscc = grouped(
        A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
        [
            grouped(A.AVP_GRANTED_SERVICE_UNIT, [u64(A.AVP_CC_TOTAL_OCTETS, GRANTED_OCTETS)]),
            u32(A.AVP_RATING_GROUP, RATING_GROUP),
            u32(A.AVP_RESULT_CODE, ResultCode.DIAMETER_SUCCESS),
        ],
    )
    auth_app = u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL)

    async def static_cca(request: Message, peer: PeerInfo) -> Message:
        static: list[Avp] = [
            auth_app,
            u32(A.AVP_CC_REQUEST_TYPE, request.get(A.AVP_CC_REQUEST_TYPE)),
            u32(A.AVP_CC_REQUEST_NUMBER, request.get(A.AVP_CC_REQUEST_NUMBER)),
            mscc,
        ]
        return make_answer(request, SERVER, ResultCode.DIAMETER_SUCCESS, static)

    async def main() -> None:
        node = Node(SERVER)
        node.register(Application.CREDIT_CONTROL, Command.CREDIT_CONTROL, static_cca)
        peers = PeerTable.of(PeerSpec.of(CLIENT.origin_host, addresses=["127.0.0.1"]))
        server = DiameterServer(
            node, LocalConfig(identity=SERVER, peers=peers), host="127.0.0.1", port=port
        )
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print(f"ready {server.port}", flush=True)
        await stop.wait()
        await server.stop(1.0)

    uvloop.run(main())


# -- responder on python-diameter -------------------------------------------------------------
def run_pd(port: int, app_kind: str) -> None:
    from diameter.message.avp.grouped import GrantedServiceUnit, MultipleServicesCreditControl
    from diameter.message.constants import APP_DIAMETER_CREDIT_CONTROL_APPLICATION
    from diameter.node import Node
    from diameter.node.application import Application as PdApplication
    from diameter.node.application import SimpleThreadingApplication

    def static_cca(app: Any, request: Any) -> Any:
        answer = app.generate_answer(request, result_code=ResultCode.DIAMETER_SUCCESS)
        answer.cc_request_type = request.cc_request_type
        answer.cc_request_number = request.cc_request_number
        answer.multiple_services_credit_control = [
            MultipleServicesCreditControl(
                granted_service_unit=GrantedServiceUnit(cc_total_octets=GRANTED_OCTETS),
                rating_group=RATING_GROUP,
                result_code=ResultCode.DIAMETER_SUCCESS,
            )
        ]
        return answer

    class InlineApplication(PdApplication):  # type: ignore[misc]
        """Answers in the node's thread: no queue, no thread per request."""

        def handle_request(self, message: Any) -> None:
            self.send_answer(static_cca(self, message))

    node = Node(SERVER.origin_host, SERVER.origin_realm, ip_addresses=["127.0.0.1"], tcp_port=port)
    peer = node.add_peer(f"aaa://{CLIENT.origin_host}", CLIENT.origin_realm)
    app: Any
    if app_kind == "threading":
        app = SimpleThreadingApplication(
            APP_DIAMETER_CREDIT_CONTROL_APPLICATION,
            is_auth_application=True,
            request_handler=static_cca,
        )
    else:
        app = InlineApplication(APP_DIAMETER_CREDIT_CONTROL_APPLICATION, is_auth_application=True)
    node.add_application(app, [peer])
    node.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(f"ready {port}", flush=True)
    done.wait()
    os._exit(0)  # python-diameter's stop() waits for its wakeup interval; nothing to flush


# -- load client ------------------------------------------------------------------------------
class LoadClient(asyncio.Protocol):
    def __init__(self, window: int, warmup: float, duration: float) -> None:
        self.window = window
        self.loop = asyncio.get_running_loop()
        self.framer = Framer()
        template = ccr_update().encode()
        self.head, self.tail = template[:12], template[20:]
        self.transport: asyncio.Transport | None = None
        self.cea: asyncio.Future[Message] = self.loop.create_future()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.next_id = 1000
        self.sent_at: dict[int, float] = {}
        self.measure_from = 0.0
        self.measure_to = 0.0
        self.warmup, self.duration = warmup, duration
        self.answers = 0
        self.answers_total = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.first_answer: Message | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"server closed the connection: {exc}"))
        if not self.cea.done():
            self.cea.set_exception(ConnectionError("closed before CEA"))

    def send_cer(self) -> None:
        avps = [
            *CLIENT.origin_avps(),
            avp(A.AVP_HOST_IP_ADDRESS, "127.0.0.1"),
            u32(A.AVP_VENDOR_ID, 0),
            text(A.AVP_PRODUCT_NAME, "bench-client"),
            u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
        ]
        cer = build_message(Command.CAPABILITIES_EXCHANGE, 0, avps, proxiable=False, hbh_id=1)
        assert self.transport is not None
        self.transport.write(cer.encode())

    def start_load(self) -> None:
        now = time.perf_counter()
        self.measure_from = now + self.warmup
        self.measure_to = self.measure_from + self.duration
        batch: list[bytes] = []
        for _ in range(self.window):
            self.queue_one(now, batch)
        assert self.transport is not None
        self.transport.write(b"".join(batch))

    def queue_one(self, now: float, batch: list[bytes]) -> None:
        hbh = self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        self.sent_at[hbh] = now
        ids = hbh.to_bytes(4, "big")
        batch.append(self.head + ids + ids + self.tail)

    def data_received(self, data: bytes) -> None:
        """Answers in, the same number of new requests out, in one write (one syscall)."""
        now = time.perf_counter()
        batch: list[bytes] = []
        for raw in self.framer.feed(data):
            command = int.from_bytes(raw[5:8], "big")
            if command == Command.CAPABILITIES_EXCHANGE:
                if not self.cea.done():
                    self.cea.set_result(decode(raw))
                continue
            if command != Command.CREDIT_CONTROL or raw[4] & 0x80:
                continue  # DWR or anything else: not load
            if self.first_answer is None:
                self.first_answer = decode(raw)
            sent = self.sent_at.pop(int.from_bytes(raw[12:16], "big"), None)
            if sent is None:
                self.errors += 1
                continue
            self.answers_total += 1
            if self.measure_from <= sent and now <= self.measure_to:
                self.answers += 1
                self.latencies.append(now - sent)
            if now < self.measure_to:
                self.queue_one(now, batch)
            elif not self.sent_at and not self.done.done():
                self.done.set_result(None)
        if batch and self.transport is not None:
            self.transport.write(b"".join(batch))


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_client(port: int, window: int, warmup: float, duration: float) -> None:
    import uvloop

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        _transport, client = await loop.create_connection(
            lambda: LoadClient(window, warmup, duration), "127.0.0.1", port
        )
        client.send_cer()
        cea = await asyncio.wait_for(client.cea, 10)
        if cea.get(A.AVP_RESULT_CODE) != ResultCode.DIAMETER_SUCCESS:
            raise SystemExit(f"CER refused: {cea.get(A.AVP_RESULT_CODE)}")
        client.start_load()
        await asyncio.wait_for(client.done, warmup + duration + 30)
        assert client.transport is not None
        client.transport.close()
        first = client.first_answer
        assert first is not None
        lat = sorted(client.latencies)
        return {
            "answers": client.answers,
            "answers_total": client.answers_total,
            "answers_per_s": round(client.answers / duration),
            "p50_ms": round(percentile(lat, 0.50) * 1000, 3),
            "p99_ms": round(percentile(lat, 0.99) * 1000, 3),
            "unmatched": client.errors,
            "result_code": first.get(A.AVP_RESULT_CODE),
            "answer_avps": len(first.avps),
            "answer_bytes": len(first.encode()),
        }

    print(json.dumps(uvloop.run(main())), flush=True)


# -- orchestration ----------------------------------------------------------------------------
def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def measure(name: str, server_args: list[str], args: argparse.Namespace) -> dict[str, Any]:
    two_cores = (os.cpu_count() or 1) >= 2
    me = [sys.executable, str(Path(__file__).resolve())]
    port = free_port()
    server = subprocess.Popen(
        [*me, *server_args, "--port", str(port), *(["--cpu", "1"] if two_cores else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit(f"{name} responder did not start: {line!r}")
        cpu_before = cpu_seconds(server.pid)
        client = subprocess.run(
            [
                *me,
                "--role",
                "client",
                "--port",
                line.split()[1],
                "--window",
                str(args.window),
                "--warmup",
                str(args.warmup),
                "--duration",
                str(args.duration),
                *(["--cpu", "0"] if two_cores else []),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=args.warmup + args.duration + 60,
        )
        if client.returncode != 0:
            raise SystemExit(f"{name} client failed:\n{client.stderr}")
        cpu_after = cpu_seconds(server.pid)
        result: dict[str, Any] = json.loads(client.stdout.strip().splitlines()[-1])
        if cpu_before is not None and cpu_after is not None:
            # CPU the responder spent per answer: robust against other load on the machine.
            cpu = cpu_after - cpu_before
            result["responder_cpu_s"] = round(cpu, 2)
            result["responder_cpu_us_per_answer"] = round(cpu / result["answers_total"] * 1e6, 1)
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


def orchestrate(args: argparse.Namespace) -> None:
    import importlib.metadata

    ours = measure("ocs", ["--role", "ours"], args)
    pd = measure("python-diameter", ["--role", "pd", "--pd-app", args.pd_app], args)
    cores = os.cpu_count() or 1
    out = {
        "benchmark": "cca_responder",
        "ocs": ours,
        "python_diameter": pd,
        "python_diameter_app": args.pd_app,
        "ratio_answers_per_s": round(ours["answers_per_s"] / max(1, pd["answers_per_s"]), 1),
        "ratio_cpu_per_answer": (
            round(pd["responder_cpu_us_per_answer"] / ours["responder_cpu_us_per_answer"], 1)
            if "responder_cpu_us_per_answer" in ours and "responder_cpu_us_per_answer" in pd
            else None
        ),
        "target_ratio": 10,
        "window": args.window,
        "duration_s": args.duration,
        "machine": {
            "nproc": cores,
            "pinning": "client cpu0, responder cpu1" if cores >= 2 else "none (1 core)",
            "python": platform.python_version(),
            "python_diameter": importlib.metadata.version("python-diameter"),
            "platform": platform.platform(),
        },
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    print(json.dumps(out), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["ours", "pd", "client"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    parser.add_argument("--window", type=int, default=64, help="requests outstanding")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--pd-app", choices=["inline", "threading"], default="inline")
    args = parser.parse_args()
    pin(args.cpu)
    if args.role == "ours":
        run_ours(args.port)
    elif args.role == "pd":
        run_pd(args.port, args.pd_app)
    elif args.role == "client":
        run_client(args.port, args.window, args.warmup, args.duration)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
