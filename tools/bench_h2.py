"""Which HTTP/2 server for Nchf: ``ocs.http2`` (granian embedded in the worker's event loop,
what `ocs serve` runs), hypercorn, and granian on its own (its own process and loop), side by
side in one run, with the same application and the same load.

Each server runs in its own process (uvloop; granian alone: one worker, its own runtime)
and answers ``POST /nchf-convergedcharging/v3/chargingdata`` the way the Nchf adapter shapes
its work, minus charging: it reads the whole body, parses it (``json.loads``),
builds a ChargingDataResponse-sized answer and serialises it. h2load (Debian's
nghttp2-client) drives it over h2c with prior knowledge, the way an SMF connects:
``--clients`` connections with ``--streams`` concurrent streams each, ``--requests`` requests
per round. Rounds alternate the servers (ocs, hypercorn, granian, ocs, ...) ``--rounds``
times; reported per server: the median requests/s, the median p50 and p99 latency (from
h2load's per-request log), and the ratio of requests/s to ocs's.

    .venv/bin/python tools/bench_h2.py --rounds 3

``--serve NAME --port P`` runs one server (what the benchmark starts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PATH = "/nchf-convergedcharging/v3/chargingdata"
SERVERS = ("ocs", "hypercorn", "granian")
REQUEST = {
    "subscriberIdentifier": "imsi-262010000000001",
    "nfConsumerIdentification": {"nodeFunctionality": "SMF", "nFName": "smf-bench"},
    "invocationTimeStamp": "2026-12-06T04:00:00Z",
    "invocationSequenceNumber": 1,
    "multipleUnitUsage": [
        {
            "ratingGroup": 10,
            "requestedUnit": {},
            "usedUnitContainer": [{"localSequenceNumber": 1, "totalVolume": 1234567}],
            "uPFID": "upf-1",
        }
    ],
    "pDUSessionChargingInformation": {
        "chargingId": 1,
        "pduSessionInformation": {"pduSessionID": 1, "dnnId": "iot.demo", "ratType": "NR"},
    },
}


def answer(body: bytes) -> bytes:
    """The application's work: parse the request, build and serialise a response."""
    doc = json.loads(body)
    units = [
        {
            "ratingGroup": u["ratingGroup"],
            "resultCode": "SUCCESS",
            "grantedUnit": {"totalVolume": 10_000_000},
            "validityTime": 600,
            "volumeQuotaThreshold": 2_000_000,
            "triggers": [
                {"triggerType": t, "triggerCategory": "IMMEDIATE_REPORT"}
                for t in ("VALIDITY_TIME", "QUOTA_EXHAUSTED", "QUOTA_THRESHOLD")
            ],
            "uPFID": u.get("uPFID"),
        }
        for u in doc.get("multipleUnitUsage", [])
    ]
    out = {
        "invocationTimeStamp": "2026-12-06T04:00:00.000+00:00",
        "invocationSequenceNumber": doc["invocationSequenceNumber"],
        "multipleUnitInformation": units,
    }
    return json.dumps(out, separators=(",", ":")).encode()


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The same application for hypercorn and granian (ASGI 3)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    data = answer(body)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": data})


def serve(name: str, port: int) -> None:
    if name == "granian":
        from granian.constants import HTTPModes, Interfaces, Loops
        from granian.server import Server

        Server(
            "tools.bench_h2:asgi_app",
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            http=HTTPModes.http2,
            workers=1,
            loop=Loops.uvloop,
            log_enabled=False,
        ).serve()
        return
    import uvloop

    uvloop.install()
    asyncio.run(_serve_async(name, port))


async def _serve_async(name: str, port: int) -> None:
    if name == "hypercorn":
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.errorlog = None
        await hypercorn_serve(asgi_app, config)  # type: ignore[arg-type]
        return
    from ocs.http2 import HttpServer, Request, Response

    async def handler(request: Request) -> Response:
        return Response(200, answer(request.body), (("content-type", "application/json"),))

    server = HttpServer(handler)  # granian embedded in this loop, as `ocs serve` runs it
    await server.start("127.0.0.1", port)
    await asyncio.Event().wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not listen within 30 s")


def _h2load(port: int, args: argparse.Namespace, body: Path, log: Path) -> dict[str, float]:
    command = [
        "h2load", "-n", str(args.requests), "-c", str(args.clients), "-m", str(args.streams),
        "-d", str(body), "-H", "content-type: application/json", "--log-file", str(log),
        f"http://127.0.0.1:{port}{PATH}",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True).stdout
    rate = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    ok = int(re.search(r"(\d+) succeeded", out).group(1))  # type: ignore[union-attr]
    times = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line)
    return {
        "req_s": rate,
        "succeeded": ok,
        "p50_ms": times[len(times) // 2] / 1000,
        "p99_ms": times[int(len(times) * 0.99)] / 1000,
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.servers}
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.json"
        body.write_text(json.dumps(REQUEST))
        for round_ in range(args.rounds):
            for name in args.servers:
                port = _free_port()
                proc = subprocess.Popen(
                    [sys.executable, __file__, "--serve", name, "--port", str(port)],
                    cwd=ROOT,
                    env=dict(os.environ, PYTHONPATH=str(ROOT)),
                )
                try:
                    _wait_listening(port, proc)
                    # warm-up, then the measured run
                    warm = argparse.Namespace(**{**vars(args), "requests": args.requests // 10})
                    _h2load(port, warm, body, Path(tmp) / "warm.log")
                    result = _h2load(port, args, body, Path(tmp) / f"{name}.log")
                finally:
                    proc.terminate()
                    proc.wait(10)
                results[name].append(result)
                print(json.dumps({"round": round_ + 1, "server": name, **result}), flush=True)
    summary: dict[str, Any] = {}
    ours = statistics.median(r["req_s"] for r in results["ocs"]) if "ocs" in results else None
    for name, runs in results.items():
        rate = statistics.median(r["req_s"] for r in runs)
        summary[name] = {
            "req_s": round(rate),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "vs_ocs": round(rate / ours, 2) if ours else None,
        }
    return {
        "summary": summary,
        "requests": args.requests,
        "clients": args.clients,
        "streams": args.streams,
        "rounds": args.rounds,
        "loadavg": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=SERVERS, help="run one server (internal)")
    parser.add_argument("--port", type=int)
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=4, help="h2c connections")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams each")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    print(json.dumps(bench(args)))


if __name__ == "__main__":
    main()
