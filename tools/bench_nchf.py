"""Nchf benchmark: Nchf_ConvergedCharging updates against Gy CCR-Us on the same `ocs serve`
worker and the same shared pool, in one run (issue 15: at least half the Gy throughput per
worker, p99 under 10 ms at 2,000 updates/s offered).

One `ocs serve` (one worker, real Redis, ``policies/demo`` applied) with Diameter and Nchf on.
Each run measures both paths on it, in alternating order (run 1 Gy first, run 2 Nchf first,
...), each with its own load generator in separate processes:

* Gy: ``tools/loadgen.py`` (sessions of CCR-I, ``--updates`` CCR-U, CCR-T);
* Nchf: ``tools/nchf_loadgen.py`` over h2c (create, ``--updates`` updates, release).

Per path two phases, as in tools/bench_charging.py: as fast as possible with ``--window``
requests outstanding (updates/s), then an open loop at ``--rate`` requests/s offered with
at most ``--max-open`` sessions (p50/p99 from the scheduled send time). The server's CPU per
request comes from ``/proc``, Redis's from ``INFO cpu``. After both, the pool's invariant
(credited = available + committed + reserved) is checked: both protocols charged it.

    .venv/bin/python tools/bench_nchf.py --runs 3 --load-procs 2 --redis-url redis://127.0.0.1:6392/9

With ``--baseline DIR`` (the source tree of an earlier commit, e.g. ``git archive 38cbbff |
tar -x -C DIR``, run with this tree's virtualenv and its compiled codec copied in) each run
also starts that tree's server and measures both paths on it, the two servers in alternating
order: before and after side by side, each as its own Nchf/Gy ratio.

``server_busy`` is the server's CPU per request times the requests answered per second: near
1.0 the server (pinned to one core) is what limits the rate; well below it, the load
generators or Redis do, and the ratio says nothing of the server.

Prints one JSON line per run and, with ``--runs N``, the median run by the Nchf/Gy ratio.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "bench_charging", ROOT / "tools" / "bench_charging.py"
)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)  # the Gy side, the server, CPU and the pool invariant


def nchf_loadgen(
    port: int, args: argparse.Namespace, cpu: int | None, *extra: str
) -> dict[str, Any]:
    """``--load-procs`` Nchf generators at once, each with its own SIMs, summed."""
    procs = max(1, args.load_procs)
    split = list(extra)
    for flag, kind in (("--rate", float), ("--max-open", int)):
        if flag in split:
            at = split.index(flag) + 1
            split[at] = str(kind(split[at]) / procs if kind is float else int(split[at]) // procs)
    share = 1000 // procs
    cmds = [
        [
            *bench.taskset(cpu),
            sys.executable,
            str(ROOT / "tools" / "nchf_loadgen.py"),
            *("--port", str(port), "--updates", str(args.updates), "--quota", str(args.quota)),
            *("--warmup", str(args.warmup), "--duration", str(args.duration), "--json-line"),
            *("--imsi-first", str(262010000000000 + i * share), "--imsi-count", str(share)),
            *split,
        ]
        for i in range(procs)
    ]
    running = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds
    ]
    results = []
    for proc in running:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"nchf_loadgen failed:\n{err}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    summed: dict[str, Any] = bench._sum_loadgen(results)
    return summed


def measure_nchf(
    port: int, pid: int, args: argparse.Namespace, cpu: int | None, redis_url: str
) -> dict[str, Any]:
    before = bench.cpu_seconds(pid)
    redis_before = bench.redis_cpu(redis_url)
    fast = nchf_loadgen(port, args, cpu, "--window", str(args.window))
    middle = bench.cpu_seconds(pid)
    redis_middle = bench.redis_cpu(redis_url)
    paced = nchf_loadgen(
        port, args, cpu, "--rate", str(args.rate), "--window", "1000000",
        "--max-open", str(args.max_open),
    )  # fmt: skip
    after = bench.cpu_seconds(pid)
    out: dict[str, Any] = {
        "updates_per_s": fast["by_type_per_s"].get("update", 0.0),
        "requests_per_s": fast["throughput_per_s"],
        "fast_latency_ms": fast["latency_ms"],
        "fast_statuses": fast["result_codes"],
        "paced_offered_per_s": args.rate,
        "paced_answered_per_s": paced["throughput_per_s"],
        "paced_p50_ms": paced["latency_ms"]["p50"],
        "paced_p99_ms": paced["latency_ms"]["p99"],
        "paced_update_p99_ms": paced["latency_ms_by_type"].get("update", {}).get("p99"),
        "paced_max_ms": paced["latency_ms"]["max"],
        "paced_statuses": paced["result_codes"],
        "loadgen_cpu_us_per_request": fast.get("generator_cpu_us_per_request"),
    }
    sent = max(1, fast["sent_total"])
    if before is not None and middle is not None:
        out["server_cpu_us_per_request"] = round((middle - before) / sent * 1e6, 1)
        out["server_busy"] = round(
            out["server_cpu_us_per_request"] * out["requests_per_s"] / 1e6, 2
        )
    if middle is not None and after is not None:
        out["paced_server_cpu_us_per_request"] = round(
            (after - middle) / max(1, paced["sent_total"]) * 1e6, 1
        )
    out["redis_cpu_us_per_request"] = round((redis_middle - redis_before) / sent * 1e6, 1)
    return out


def serve(
    args: argparse.Namespace, env: dict[str, str], cpu: int | None, tree: Path | None
) -> tuple[Any, int, int]:
    """One ``ocs serve`` (one worker, Diameter and Nchf): this tree's, or ``tree``'s."""
    ocs = [str(Path(sys.executable).parent / "ocs")]
    if tree is not None:  # the console script's folder comes first on sys.path, then this
        env = dict(env, PYTHONPATH=str(tree))
    port, nchf_port = bench.free_port(), bench.free_port()
    server = bench.start_server(
        [
            *bench.taskset(cpu),
            *(*ocs, "serve", "--port", str(port), "--nchf-port", str(nchf_port)),
            *("--http-port", "0", "--metrics-port", "0", "--log-level", "WARNING"),
            "--accept-unknown-peers",
        ],
        env,
    )
    return server, port, nchf_port


def both_paths(
    args: argparse.Namespace, env: dict[str, str], index: int, tree: Path | None
) -> dict[str, Any]:
    """Gy and Nchf on one server (alternating order by run), their ratio and the pool's
    invariant after both."""
    two_cores = (os.cpu_count() or 1) >= 2
    gen_cpu, server_cpu = (0, 1) if two_cores else (None, None)
    bench.flush(args.redis_url)
    subprocess.run(  # applied by the server's own tree (its catalogue format)
        [
            str(Path(sys.executable).parent / "ocs"),
            "catalog",
            "apply",
            str(ROOT / "policies" / "demo"),
        ],
        env=env if tree is None else dict(env, PYTHONPATH=str(tree)),
        check=True,
        capture_output=True,
    )
    server, port, nchf_port = serve(args, env, server_cpu, tree)
    order = ["gy", "nchf"] if index % 2 == 0 else ["nchf", "gy"]
    results: dict[str, Any] = {}
    try:
        for side in order:
            if side == "gy":
                gy = bench.measure(port, server.pid, args, gen_cpu, args.redis_url)
                if "server_cpu_us_per_ccr" in gy:
                    gy["server_busy"] = round(
                        gy["server_cpu_us_per_ccr"] * gy["ccr_per_s"] / 1e6, 2
                    )
                results["gy"] = gy
            else:
                results["nchf"] = measure_nchf(nchf_port, server.pid, args, gen_cpu, args.redis_url)
    finally:
        bench.stop(server)
    gy, nchf = results["gy"], results["nchf"]
    if not gy["ccr_u_per_s"] or not nchf["updates_per_s"]:  # a broken baseline, say
        raise SystemExit(
            f"{'this tree' if tree is None else tree}: nothing charged "
            f"(Gy {gy['fast_result_codes']}, Nchf {nchf['fast_statuses']})"
        )
    ratio = round(nchf["updates_per_s"] / max(1.0, gy["ccr_u_per_s"]), 2)
    return {
        "server": "this tree" if tree is None else str(tree),
        "order": order,
        "gy": gy,
        "nchf": nchf,
        "ratio_nchf_updates_to_gy_ccr_u": ratio,
        "ratio_server_cpu_per_request": round(
            nchf.get("server_cpu_us_per_request", 0)
            / max(1e-9, gy.get("server_cpu_us_per_ccr", 0)),
            2,
        ),
        "targets": {
            "ratio_at_least": 0.5,
            "p99_ms_at_rate": 10.0,
            "met_ratio": ratio >= 0.5,
            "met_p99": nchf["paced_p99_ms"] <= 10.0 and args.rate >= 2000,
        },
        "pool_invariant": bench.pool_invariant(args.redis_url),
    }


def one_run(args: argparse.Namespace, index: int) -> dict[str, Any]:
    args.run_base = (int(time.time() * 10) % 10**6) * 1000
    loadavg_before = os.getloadavg()[0]
    two_cores = (os.cpu_count() or 1) >= 2
    env = dict(os.environ, OCS_REDIS_URL=args.redis_url)
    env.pop("PYTHONPATH", None)
    out: dict[str, Any] = {"benchmark": "nchf"}
    if args.baseline is None:
        out.update(both_paths(args, env, index, None))
    else:  # before and after, in alternating order
        trees: list[tuple[str, Path | None]] = [("after", None), ("before", args.baseline)]
        if index % 2:
            trees.reverse()
        for name, tree in trees:
            args.run_base = (int(time.time() * 10) % 10**6) * 1000
            out[name] = both_paths(args, env, index, tree)
        out["servers_order"] = [name for name, _ in trees]
        out["ratio_nchf_updates_to_gy_ccr_u"] = out["after"]["ratio_nchf_updates_to_gy_ccr_u"]
        out["ratio_before"] = out["before"]["ratio_nchf_updates_to_gy_ccr_u"]
        out["nchf_updates_after_to_before"] = round(
            out["after"]["nchf"]["updates_per_s"]
            / max(1.0, out["before"]["nchf"]["updates_per_s"]),
            2,
        )
    out.update(
        {
            "load": {
                "updates_per_session": args.updates,
                "window": args.window,
                "load_procs": args.load_procs,
                "rate": args.rate,
                "max_open": args.max_open,
                "warmup_s": args.warmup,
                "duration_s": args.duration,
                "quota_octets": args.quota,
            },
            "machine": {
                "nproc": os.cpu_count(),
                "pinning": "load generators cpu0, server cpu1" if two_cores else "none",
                "loadavg_before": loadavg_before,
                "loadavg_after": os.getloadavg()[0],
                "python": platform.python_version(),
                "redis": bench.redis_version(args.redis_url),
            },
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="flushed!")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--updates", type=int, default=20, help="updates (CCR-U) per session")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rate", type=float, default=2000.0, help="requests/s offered")
    parser.add_argument("--max-open", type=int, default=256, help="open sessions, phase 2")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--quota", type=int, default=bench.GRANTED_OCTETS, help="octets")
    parser.add_argument("--load-procs", type=int, default=1, help="generator processes per side")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="an earlier source tree whose server is measured beside this one's",
    )
    args = parser.parse_args()
    runs = []
    for index in range(args.runs):
        run = one_run(args, index)
        runs.append(run)
        print(json.dumps(run), flush=True)
    if len(runs) > 1:
        median = statistics.median_low(r["ratio_nchf_updates_to_gy_ccr_u"] for r in runs)
        chosen = next(r for r in runs if r["ratio_nchf_updates_to_gy_ccr_u"] == median)
        summary = dict(chosen, median_of_runs=len(runs))
        summary["all_runs_ratio"] = [r["ratio_nchf_updates_to_gy_ccr_u"] for r in runs]
        if args.baseline is None:
            summary["all_runs_nchf_p99_ms"] = [r["nchf"]["paced_p99_ms"] for r in runs]
        else:
            summary["all_runs_ratio_before"] = [r["ratio_before"] for r in runs]
            summary["all_runs_after_to_before"] = [r["nchf_updates_after_to_before"] for r in runs]
            summary["all_runs_nchf_p99_ms"] = [r["after"]["nchf"]["paced_p99_ms"] for r in runs]
            summary["all_runs_nchf_p99_ms_before"] = [
                r["before"]["nchf"]["paced_p99_ms"] for r in runs
            ]
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
