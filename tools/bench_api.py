"""Benchmark of the HTTP API: top-ups per second and balance-read latency.

The API runs in a child process (what ``ocs api`` runs: uvicorn, uvloop; or ``ocs serve
--workers N`` with ``--workers``) on a real Redis; this process drives it
over keep-alive HTTP/1.1 connections with a minimal client (so the client's own cost stays
small). Prints one JSON document with, next to throughput and latency, the CPU seconds the
server processes spent per request (from ``/proc/<pid>/stat``, far less sensitive than
throughput to other load on a shared machine), Redis's (INFO cpu) and the client's own CPU
per top-up, and the load average.

    .venv/bin/python tools/bench_api.py --redis-url redis://127.0.0.1:6379/11

``--py-spy FILE`` records a py-spy profile of the server during the top-ups (py-spy must be
on PATH or next to the interpreter; ``--py-spy-format`` picks flamegraph, raw or speedscope).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocs.api.auth import Scope, create_token  # noqa: E402
from ocs.config import Settings  # noqa: E402
from ocs.rating.loader import _StrictLoader  # noqa: E402
from ocs.redis_client import client_for_url  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(redis_url: str, port: int, data_dir: str, hot_routes: bool, gc_file: str) -> None:
    """The child process without ``--workers``: what ``ocs api`` runs (one process). On
    SIGTERM it writes every garbage-collector pause (end time, generation, seconds) to
    ``gc_file``."""
    import gc
    import signal

    import uvloop

    from ocs.api import start_api

    settings = Settings(
        redis_url=redis_url, http_port=port, data_dir=Path(data_dir), log_level="WARNING"
    )
    pauses: list[tuple[float, int, float]] = []  # (wall time at the end, generation, s)
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((time.time(), info["generation"], time.perf_counter() - started[0]))

    gc.callbacks.append(on_gc)

    async def serve() -> None:
        await start_api(settings, hot_routes=hot_routes)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    uvloop.run(serve())
    Path(gc_file).write_text(json.dumps(pauses))


def _start_serve(args: argparse.Namespace, port: int, data_dir: str) -> subprocess.Popen[bytes]:
    """``--server serve``: ``ocs serve --workers N`` (Diameter, RAR/ASR listener and the HTTP
    API in every worker; no metrics port)."""
    command = [
        sys.executable,
        "-m",
        "ocs.cli",
        "serve",
        f"--workers={args.workers}",
        f"--redis-url={args.redis_url}",
        f"--http-port={port}",
        f"--port={_free_port()}",
        "--metrics-port=0",
        f"--data-dir={data_dir}",
        "--log-level=WARNING",
    ]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(
        self, method: str, path: str, token: str, body: bytes = b"", extra: str = ""
    ) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return int(status_line.split()[1]), data


async def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError("API did not start")


def _bench_wallets(n: int) -> dict[str, Any]:
    """A catalogue document with ``n`` wallets, each paying for one SIM (so every top-up
    has a session lookup for RAR, as bob-wallet's do)."""
    return {
        "wallets": [
            {"id": f"bench-{i}", "account": "bob", "currency": "EUR", "balance": 1000}
            for i in range(n)
        ],
        "sims": [
            {
                "imsi": f"26201999{i:07d}",
                "msisdn": f"4917999{i:05d}",
                "account": "bob",
                "twins": [
                    {
                        "id": "main",
                        "payer": {"kind": "wallet", "id": f"bench-{i}"},
                        "plans": [{"plan": "consumer-data", "from": "2024-06-01T00:00:00Z"}],
                    }
                ],
            }
            for i in range(n)
        ],
    }


async def _available(conn: Conn, token: str, wallet: str) -> int:
    status, body = await conn.request("GET", f"/v1/wallets/{wallet}", token)
    assert status == 200, body
    return int(json.loads(body)["available"])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its live descendants so far (Linux
    ``/proc``; the workers of ``ocs serve --workers N`` are children of the supervisor)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += _cpu_seconds(int(child))
    return total


async def _redis_cpu(url: str) -> float:
    """CPU seconds Redis used so far (INFO cpu: main thread, user + system)."""
    redis = client_for_url(url, timeout=10)
    try:
        info = await redis.info("cpu")
    finally:
        await redis.aclose()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _py_spy(pid: int, out: str, fmt: str) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [exe, "record", "-p", str(pid), "-o", out, "-f", fmt, "-r", "250", "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _gc_summary(
    pauses: list[tuple[float, int, float]], windows: dict[str, list[float]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per phase and generation: how many collections, their total and longest pause."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for phase, (start, end) in windows.items():
        gens: dict[str, dict[str, float]] = {}
        for at, gen, seconds in pauses:
            if start <= at <= end:
                g = gens.setdefault(str(gen), {"count": 0, "total_ms": 0.0, "max_ms": 0.0})
                g["count"] += 1
                g["total_ms"] = round(g["total_ms"] + seconds * 1000, 3)
                g["max_ms"] = round(max(g["max_ms"], seconds * 1000), 3)
        out[phase] = gens
    return out


async def _ping_floor(url: str, n: int, concurrency: int) -> list[float]:
    """Round trips (seconds) of Redis PING on raw connections, as many at once as the reads:
    the latency this loaded machine gives any request/response on loopback to a server
    written in C, the floor under the balance-read latency."""
    parts = urlsplit(url)
    conns = [
        await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 6379)
        for _ in range(concurrency)
    ]
    out: list[float] = []

    async def pings(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(n // concurrency):
            t0 = time.perf_counter()
            writer.write(b"PING\r\n")
            await reader.readline()
            out.append(time.perf_counter() - t0)

    await asyncio.gather(*(pings(r, w) for r, w in conns))
    for _, w in conns:
        w.close()
    return out


def _ms(values: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in values]
    return {
        "p50": round(statistics.median(ms), 3),
        "p90": round(_pct(ms, 0.90), 3),
        "p99": round(_pct(ms, 0.99), 3),
        "max": round(max(ms), 3),
    }


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def _run(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    redis = client_for_url(args.redis_url, timeout=10)
    await redis.flushdb()
    token = await create_token(redis, "demo", Scope.ADMIN)
    await redis.aclose()
    await _wait_port(port)
    docs = {
        p.name: yaml.load(p.read_text(), Loader=_StrictLoader)
        for p in sorted((ROOT / "policies" / "demo").glob("*.yaml"))
    }
    wallets = ["bob-wallet"]
    if args.wallets > 1:
        docs["bench.yaml"] = _bench_wallets(args.wallets)
        wallets = [w["id"] for w in docs["bench.yaml"]["wallets"]]
    conn = await Conn.open(port)
    status, body = await conn.request(
        "POST", "/v1/catalogue", token, json.dumps({"documents": docs}).encode()
    )
    assert status == 200, body
    before = {w: await _available(conn, token, w) for w in wallets}
    conns = [await Conn.open(port) for _ in range(args.concurrency)]
    payload = json.dumps({"amount": 1, "currency": "EUR"}).encode()
    counter = iter(range(10**9))
    codes: dict[int, int] = {}

    async def top_ups(c: Conn, until: int) -> None:
        while (n := next(counter)) < until:
            status, _ = await c.request(
                "POST",
                f"/v1/wallets/{wallets[n % len(wallets)]}/top-ups",
                token,
                payload,
                f"Idempotency-Key: bench-{n}\r\n",
            )
            codes[status] = codes.get(status, 0) + 1

    spy = _py_spy(pid, args.py_spy, args.py_spy_format) if args.py_spy else None
    if spy is not None:
        await asyncio.sleep(1.0)  # py-spy attaches
    load_before = _loadavg()
    redis0 = await _redis_cpu(args.redis_url)
    server0, client0 = _cpu_seconds(pid), time.process_time()
    windows: dict[str, list[float]] = {"top_ups": [time.time()]}
    started = time.perf_counter()
    await asyncio.gather(*(top_ups(c, args.top_ups) for c in conns))
    windows["top_ups"].append(time.time())
    elapsed = time.perf_counter() - started
    server_top_up = _cpu_seconds(pid) - server0
    client_top_up = time.process_time() - client0
    redis_top_up = await _redis_cpu(args.redis_url) - redis0
    if spy is not None:
        spy.send_signal(2)  # SIGINT: py-spy writes its output
        spy.wait(30)
    credited = sum([await _available(conns[0], token, w) - before[w] for w in wallets])

    latencies: list[float] = []

    async def reads(c: Conn, n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            status, _ = await c.request("GET", "/v1/wallets/bob-wallet", token)
            latencies.append(time.perf_counter() - t0)
            assert status == 200

    per = args.reads // args.read_concurrency
    server0, client0 = _cpu_seconds(pid), time.process_time()
    windows["reads"] = [time.time()]
    r0 = time.perf_counter()
    await asyncio.gather(*(reads(c, per) for c in conns[: args.read_concurrency]))
    windows["reads"].append(time.time())
    floor = await _ping_floor(args.redis_url, args.reads, args.read_concurrency)
    read_elapsed = time.perf_counter() - r0
    server_read = _cpu_seconds(pid) - server0
    client_read = time.process_time() - client0
    for c in [conn, *conns]:
        c.writer.close()
    return {
        "server": "ocs api" if args.workers is None else f"ocs serve --workers {args.workers}",
        "hot_routes": not args.no_hot_routes,
        "top_ups": args.top_ups,
        "top_up_concurrency": args.concurrency,
        "top_ups_per_s": round(args.top_ups / elapsed, 1),
        "top_up_status": codes,
        "top_up_server_cpu_us": round(server_top_up / args.top_ups * 1e6, 1),
        "top_up_client_cpu_us": round(client_top_up / args.top_ups * 1e6, 1),
        "top_up_redis_cpu_us": round(redis_top_up / args.top_ups * 1e6, 1),
        "wallets": len(wallets),
        "credited": credited,
        "credited_expected": args.top_ups,
        "reads": len(latencies),
        "read_concurrency": args.read_concurrency,
        "reads_per_s": round(len(latencies) / read_elapsed, 1),
        "read_server_cpu_us": round(server_read / len(latencies) * 1e6, 1),
        "read_client_cpu_us": round(client_read / len(latencies) * 1e6, 1),
        "read_ms": _ms(latencies),
        "redis_ping_floor_ms": _ms(floor),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "windows": windows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--top-ups", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--read-concurrency", type=int, default=4)
    parser.add_argument(
        "--wallets",
        type=int,
        default=1,
        help="top up N wallets in turn, each paying for one SIM (default: bob-wallet only)",
    )
    parser.add_argument("--py-spy", metavar="FILE", help="profile the server during top-ups")
    parser.add_argument(
        "--py-spy-format", default="raw", choices=("flamegraph", "raw", "speedscope")
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="measure `ocs serve --workers N` (every process of it) instead of `ocs api`",
    )
    parser.add_argument(
        "--no-hot-routes",
        action="store_true",
        help="`ocs api` with every request through FastAPI (create_app(hot_routes=False))",
    )
    args = parser.parse_args()
    port = _free_port()
    import uvloop

    with tempfile.TemporaryDirectory() as data_dir:
        if args.workers is not None:
            serve = _start_serve(args, port, data_dir)
            try:
                result = uvloop.run(_run(args, port, serve.pid))
            finally:
                serve.terminate()
                serve.wait(30)
        else:
            gc_file = str(Path(data_dir) / "gc.json")
            proc = multiprocessing.get_context("spawn").Process(
                target=_serve,
                args=(args.redis_url, port, data_dir, not args.no_hot_routes, gc_file),
                daemon=True,
            )
            proc.start()
            try:
                assert proc.pid is not None
                result = uvloop.run(_run(args, port, proc.pid))
            finally:
                proc.terminate()
                proc.join(10)
            with contextlib.suppress(OSError, ValueError):
                result["server_gc_pauses"] = _gc_summary(
                    json.loads(Path(gc_file).read_text()), result["windows"]
                )
        del result["windows"]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
