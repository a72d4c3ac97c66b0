"""Scale-out benchmark: the same load against `ocs serve --workers 1` and `--workers 2` (real
Redis, policies/demo), in one run on one machine.

For each worker count: flush the Redis database at ``--redis-url``, `ocs catalog apply
policies/demo`, start `ocs serve --workers N`, then drive it from ``--load-procs`` load
processes sharing ``--connections`` Diameter connections (one ``tools/loadgen.py`` ``LoadGen``
per connection, with its own session ids and its own slice of the demo's 1,000 pool SIMs; the
kernel spreads the connections over the workers by SO_REUSEPORT; 4 processes by default,
because on a busy machine a single load process, scheduled late, paced the whole run: 1,883
CCR/s from one process with 4 connections, 3,869 from two with 2 each, same server), closed
loop with ``--window`` requests
outstanding per connection, sessions of CCR-I, ``--updates`` CCR-U, CCR-T. ``--runs R``
repeats the round (1 worker, 2 workers, ...) R times, alternating. Reported per worker count:

* CCR/s (answered in the measured window, all connections) and CCR-U/s;
* server CPU per CCR: user+system seconds of the server processes (the workers and, with
  N > 1, the supervisor) from /proc over the loadgen run, divided by the CCRs sent; and how
  the CPU split over the workers (a worker that got no connection shows ~0);
* Redis CPU per CCR (``INFO cpu``, used_cpu_user + used_cpu_sys of the redis-server; the
  per-shard figure docs/scaling.md uses) and Redis calls per CCR (``INFO stats``
  total_commands_processed, which counts the calls made inside the Lua scripts too);
* the pool invariant (credited = available + committed + reserved) after the run;
* at the end, the CPU of the charging metrics per CCR with and without prometheus_client's
  multiprocess mode (what the workers use), each in a fresh process.

Nothing is pinned: the workers need both cores, and the load generators and Redis share them.
The last JSON line has the median run per worker count, the ratio of CCR/s (2 workers /
1 worker) and the load average.

    .venv/bin/python tools/bench_workers.py --redis-url redis://127.0.0.1:6379/9 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_charging import (  # noqa: E402 - tools/ is not a package
    GRANTED_OCTETS,
    cpu_seconds,
    flush,
    free_port,
    pool_invariant,
    redis_version,
    start_server,
    stop,
)


def server_pids(pid: int) -> list[int]:
    """The server process and its children (the workers of a supervisor)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(c) for c in children)]


def redis_counters(url: str) -> tuple[float, int, int]:
    """redis-server CPU seconds, commands processed, bytes of memory used."""
    from redis import Redis

    client = Redis.from_url(url)
    try:
        cpu: Any = client.info("cpu")
        stats: Any = client.info("stats")
        memory: Any = client.info("memory")
    finally:
        client.close()
    return (
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        int(stats["total_commands_processed"]),
        int(memory["used_memory"]),
    )


# -- the load: one process, one LoadGen (tools/loadgen.py) per connection ---------------------
async def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Connections ``--first`` .. ``--first + --connections - 1`` of ``--total`` at once, each
    with its own session ids (its run id) and its own slice of the demo's 1,000 pool SIMs;
    sums their measured windows."""
    import loadgen as lg

    loop = asyncio.get_running_loop()
    share = max(1, 1000 // args.total)
    base = (int(time.time()) % 10**8) * 100  # ten digits, distinct per connection and run
    gens = []
    for c in range(args.first, args.first + args.connections):
        one = argparse.Namespace(
            **vars(args),
            rate=0.0,
            sessions=0,
            max_open=0,  # closed loop: the window bounds the open sessions
            rating_group=10,
            imsi_first=str(262010000000000 + c * share),
            imsi_count=share,
            timeout=5.0,
            run_id=base + c,  # its Session-Ids and its Origin-Host, loadgen-<run id>.local
        )
        _, gen = await loop.create_connection(
            lambda one=one: lg.LoadGen(one), "127.0.0.1", args.port
        )
        gens.append(gen)
    for gen in gens:
        if await asyncio.wait_for(gen.cea, 5) != 2001:
            raise SystemExit("CER refused")
    cpu = time.process_time()
    await asyncio.gather(*(gen.run() for gen in gens))
    cpu = time.process_time() - cpu
    for gen in gens:
        assert gen.transport is not None
        gen.transport.close()
    answered = sum(sum(g.answered_in_window.values()) for g in gens)
    by_type: Counter[int] = Counter()
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    for g in gens:
        by_type.update(g.answered_in_window)
        codes.update(g.codes)
        latencies.extend(x for lat in g.latencies.values() for x in lat)
        if g.timeouts:
            codes["timeout"] += g.timeouts
    sent = sum(g.sent for g in gens)
    return {
        "ccr_per_s": round(answered / args.duration, 1),
        "ccr_u_per_s": round(by_type[2] / args.duration, 1),
        "sent_total": sent,
        "latency_ms": lg.percentiles(latencies),
        "result_codes": dict(codes),
        "generator_cpu_us_per_request": round(cpu / max(1, sent) * 1e6, 1),
    }


def metrics_cost(calls: int = 200_000) -> dict[str, Any]:
    """CPU per CCR of the charging metrics (count_ccr + count_mscc) in this process: run it
    with and without PROMETHEUS_MULTIPROC_DIR (``--role metrics-cost``) to see what the
    workers' multiprocess mode adds."""
    from ocs.observability.metrics import ChargingMetrics

    metrics = ChargingMetrics()
    cpu = time.process_time()
    for _ in range(calls):
        metrics.count_ccr("update", 2001, 0.002)
        metrics.count_mscc(2001)
    return {
        "multiprocess": bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")),
        "metrics_cpu_us_per_ccr": round((time.process_time() - cpu) / calls * 1e6, 2),
    }


def metrics_costs() -> list[dict[str, Any]]:
    out = []
    for multiprocess in (False, True):
        with tempfile.TemporaryDirectory() as folder:
            env = dict(os.environ)
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            if multiprocess:
                env["PROMETHEUS_MULTIPROC_DIR"] = folder
            done = subprocess.run(
                [sys.executable, __file__, "--role", "metrics-cost"],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def loadgen(port: int, args: argparse.Namespace) -> dict[str, Any]:
    """``--load-procs`` load processes at once, sharing ``--connections`` connections."""
    procs = max(1, min(args.load_procs, args.connections))
    per = args.connections // procs
    cmds = [
        [
            *(sys.executable, __file__, "--role", "loadgen", "--port", str(port)),
            *("--first", str(i * per), "--total", str(per * procs)),
            *("--connections", str(per), "--window", str(args.window)),
            *("--updates", str(args.updates), "--quota", str(args.quota)),
            *("--warmup", str(args.warmup), "--duration", str(args.duration)),
        ]
        for i in range(procs)
    ]
    running = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds
    ]
    results: list[dict[str, Any]] = []
    for proc in running:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"loadgen failed:\n{err}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    sent = sum(r["sent_total"] for r in results)
    codes: Counter[str] = Counter()
    for r in results:
        codes.update(r["result_codes"])
    return {
        "ccr_per_s": round(sum(r["ccr_per_s"] for r in results), 1),
        "ccr_u_per_s": round(sum(r["ccr_u_per_s"] for r in results), 1),
        "sent_total": sent,
        "p99_ms_worst_process": max(r["latency_ms"]["p99"] for r in results),
        "p50_ms_worst_process": max(r["latency_ms"]["p50"] for r in results),
        "result_codes": dict(codes),
        "generator_cpu_us_per_request": round(
            sum(r["generator_cpu_us_per_request"] * r["sent_total"] for r in results)
            / max(1, sent),
            1,
        ),
    }


def measure(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, OCS_REDIS_URL=args.redis_url)
    ocs = str(Path(sys.executable).parent / "ocs")
    flush(args.redis_url)
    subprocess.run(
        [ocs, "catalog", "apply", str(ROOT / "policies" / "demo")],
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = start_server(
        [
            *(ocs, "serve", "--workers", str(workers), "--port", str(port)),
            *("--http-port", "0", "--metrics-port", "0", "--log-level", "WARNING"),
            "--accept-unknown-peers",  # loadgen connects as loadgen-<run>.local
        ],
        env,
    )
    try:
        pids = server_pids(server.pid)
        cpu_before = {pid: cpu_seconds(pid) or 0.0 for pid in pids}
        redis_before = redis_counters(args.redis_url)
        run = loadgen(port, args)
        cpu_after = {pid: cpu_seconds(pid) or 0.0 for pid in pids}
        redis_after = redis_counters(args.redis_url)
        load = os.getloadavg()[0]
    finally:
        stop(server)
    sent = max(1, run["sent_total"])
    cpu = {pid: cpu_after[pid] - cpu_before[pid] for pid in pids}
    worker_cpu = [round(cpu[p], 2) for p in pids[1:]] if workers > 1 else [round(cpu[pids[0]], 2)]
    return {
        "workers": workers,
        "ccr_per_s": run["ccr_per_s"],
        "ccr_u_per_s": run["ccr_u_per_s"],
        "p50_ms_worst_process": run["p50_ms_worst_process"],
        "p99_ms_worst_process": run["p99_ms_worst_process"],
        "result_codes": run["result_codes"],
        "generator_cpu_us_per_ccr": run["generator_cpu_us_per_request"],
        "ccr_sent": sent,
        "server_cpu_us_per_ccr": round(sum(cpu.values()) / sent * 1e6, 1),
        "worker_cpu_s": worker_cpu,
        "supervisor_cpu_s": round(cpu[pids[0]], 3) if workers > 1 else None,
        "redis_cpu_us_per_ccr": round((redis_after[0] - redis_before[0]) / sent * 1e6, 1),
        # commands run inside the Lua scripts count too (INFO stats counts them)
        "redis_calls_per_ccr_incl_lua": round((redis_after[1] - redis_before[1]) / sent, 2),
        # what a CCR leaves in Redis until its TTLs expire (stored answers, results, records)
        "redis_bytes_per_ccr": round((redis_after[2] - redis_before[2]) / sent),
        "pool_invariant": pool_invariant(args.redis_url)["holds"],
        "loadavg_after": load,
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median CCR/s (the lower one of an even count)."""
    ordered = sorted(runs, key=lambda r: r["ccr_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["loadgen", "metrics-cost"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="flushed!")
    parser.add_argument("--workers", default="1,2", help="worker counts, in order")
    parser.add_argument("--runs", type=int, default=1, help="rounds over the worker counts")
    # 16 connections: with 4, all of them landed on one of two workers in 2 runs of 5
    parser.add_argument("--connections", type=int, default=16, help="Diameter connections")
    parser.add_argument("--load-procs", type=int, default=4, help="load processes sharing them")
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, default=8, help="outstanding per connection")
    parser.add_argument("--updates", type=int, default=20, help="CCR-U per session")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--quota", type=int, default=GRANTED_OCTETS, help="octets per grant")
    args = parser.parse_args()
    if args.role == "metrics-cost":
        print(json.dumps(metrics_cost()), flush=True)
        return
    if args.role == "loadgen":
        args.total = args.total or args.connections
        try:
            import uvloop

            print(json.dumps(uvloop.run(drive(args))), flush=True)
        except ImportError:  # pragma: no cover
            print(json.dumps(asyncio.run(drive(args))), flush=True)
        return
    counts = [int(x) for x in args.workers.split(",")]
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for _ in range(args.runs):  # alternating, so a change in the machine's load hits both
        for n in counts:
            result = measure(n, args)
            results[n].append(result)
            print(json.dumps(result), flush=True)
    by_n = {n: _median(runs) for n, runs in results.items()}
    summary: dict[str, Any] = {
        "benchmark": "workers",
        "median_of_runs": args.runs,
        "ccr_per_s": {n: r["ccr_per_s"] for n, r in by_n.items()},
        "all_runs_ccr_per_s": {n: [r["ccr_per_s"] for r in rs] for n, rs in results.items()},
        "server_cpu_us_per_ccr": {n: r["server_cpu_us_per_ccr"] for n, r in by_n.items()},
        "redis_cpu_us_per_ccr": {n: r["redis_cpu_us_per_ccr"] for n, r in by_n.items()},
        "load": {
            "connections": args.connections,
            "load_processes": args.load_procs,
            "window_per_connection": args.window,
            "updates_per_session": args.updates,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
        },
        "machine": {
            "nproc": os.cpu_count(),
            "loadavg_before_end": os.getloadavg(),
            "python": platform.python_version(),
            "redis": redis_version(args.redis_url),
        },
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "metrics_cost": metrics_costs(),
    }
    if 1 in by_n and 2 in by_n:
        summary["ratio_2_over_1"] = round(by_n[2]["ccr_per_s"] / max(1.0, by_n[1]["ccr_per_s"]), 2)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
