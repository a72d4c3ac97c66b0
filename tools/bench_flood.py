"""The pre-CER flood probe of issue 14, measured: `ocs serve` on its default limits, N
connections that each send a CER as large as the pre-CER budget allows but never finish it,
then a configured peer's CCRs. Prints one JSON document: the server's RSS idle and under the
flood (/proc/PID/status), how many flood connections the server still holds, and the CCR
latency of the configured peer (closed loop, one CCR at a time) without and with the flood.

    .venv/bin/python tools/bench_flood.py --redis-url redis://127.0.0.1:6379/11

The flood comes from 127.0.0.2, 127.0.0.3, ... (every 127.0.0.0/8 address is the loopback on
Linux), 63 connections per address: under the default of 64 per address.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tools"))

import loadgen  # noqa: E402

from ocs.diameter import avp_codes as A  # noqa: E402
from ocs.diameter.codec import decode  # noqa: E402
from ocs.diameter.framer import Framer  # noqa: E402

PEER = "pgw.bench"
LISTENING = re.compile(rb"listening on ([^ ]+):(\d+)")


def cer() -> bytes:
    return loadgen.cer(PEER).encode()


def ccr(n: int) -> bytes:
    """A CCR-I of the demo's pool SIMs (what tools/loadgen.py sends), ids ``n``."""
    imsi = f"26201000000{n % 1000:04d}"
    msg = loadgen.ccr(f"{PEER};flood;{n}", 1, 0, imsi, 0, 100_000, 1, PEER)
    msg.hbh_id = msg.e2e_id = n
    return msg.encode()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def connect_from(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def latencies(port: int, count: int, first: int) -> tuple[list[float], Counter[int]]:
    """``count`` CCR-I, one at a time, over one configured peer connection: seconds each,
    and the Result-Codes."""
    reader, writer = await connect_from("127.0.0.1", port)
    framer = Framer()

    async def roundtrip(data: bytes) -> int:
        writer.write(data)
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                raise ConnectionError("closed by the server")
            if answers := framer.feed(chunk):
                return int(decode(answers[0]).get(A.AVP_RESULT_CODE, 0))

    await roundtrip(cer())
    out, codes = [], Counter[int]()
    for n in range(first, first + count):
        started = time.perf_counter()
        codes[await roundtrip(ccr(n))] += 1
        out.append(time.perf_counter() - started)
    writer.close()
    return out, codes


def summary(values: list[float], codes: Counter[int]) -> dict[str, object]:
    ms = sorted(v * 1000 for v in values)
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
        "max_ms": round(ms[-1], 3),
        "result_codes": dict(codes),
    }


async def run(args: argparse.Namespace, port: int, pid: int) -> dict[str, object]:
    await asyncio.sleep(1.0)
    idle = rss(pid)
    before = await latencies(port, args.ccrs, 1)
    budget = 4096  # default max_cer_size
    partial = bytes([1]) + budget.to_bytes(3, "big") + bytes(budget - 8)
    flood = []
    for i in range(args.connections):
        reader, writer = await connect_from(f"127.0.0.{2 + i % args.sources}", port)
        writer.write(partial)
        flood.append((reader, writer))
    await asyncio.sleep(1.0)
    under_flood = await latencies(port, args.ccrs, args.ccrs + 1)
    flooded = max(rss(pid) for _ in range(3))
    held = sum(1 for reader, _ in flood if not reader.at_eof())
    for _, writer in flood:
        writer.close()
    return {
        "benchmark": "pre-CER flood",
        "connections": args.connections,
        "bytes_each": len(partial),
        "held_by_server": held,
        "rss_idle_mb": round(idle / 2**20, 1),
        "rss_flood_mb": round(flooded / 2**20, 1),
        "rss_growth_mb": round((flooded - idle) / 2**20, 1),
        "ccr_without_flood": summary(*before),
        "ccr_under_flood": summary(*under_flood),
        "ccrs": args.ccrs,
        "loadavg": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--sources", type=int, default=16)
    parser.add_argument("--ccrs", type=int, default=500)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
        env.update(OCS_REDIS_URL=args.redis_url, OCS_DATA_DIR=data)
        subprocess.run(
            [sys.executable, "-m", "ocs.cli", "catalog", "apply", str(ROOT / "policies/demo")],
            env=env,
            check=True,
            capture_output=True,
        )
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "ocs.cli", "serve", "--port", str(port)),
                *("--http-port", "0", "--metrics-port", "0", "--log-level", "WARNING"),
                *("--peer", f"{PEER}=127.0.0.1"),
            ],
            env=env,
            stdout=subprocess.PIPE,
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not LISTENING.search(line):
                raise SystemExit(f"ocs serve did not start: {line!r}")
            print(json.dumps(asyncio.run(run(args, port, server.pid))))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)


if __name__ == "__main__":
    main()
