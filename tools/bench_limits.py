"""What per-SIM limits (docs/limits.md) cost on the charging path: ``ocs serve`` driven by
``tools/loadgen.py`` as in ``tools/bench_charging.py``, on the demo catalogue without limits
(the anchor) and with a daily and a monthly data cap on every SIM the load uses (the 1,000
SIMs of the demo range, caps far above what the load uses, so every CCR checks and moves two
caps and none is reached), alternating in one run: none, limits, none, limits, ...

For each side: CCR-U/s with ``--window`` requests outstanding, server CPU and Redis CPU per
CCR (``/proc``, ``INFO cpu``: use a Redis of your own), p50/p99 at ``--rate`` CCR/s offered.
Prints one JSON line per side and run, then the medians and the ratios limits / none.

First, the script alone: ``charge.lua`` Redis time per call (``INFO commandstats``) for a
session's CCR-I, CCR-U and CCR-T on one payer, with no cap, one cap and two caps, in
alternating rounds (``--script-rounds``, 0: skip).

    .venv/bin/python tools/bench_limits.py --runs 2 --redis-url redis://127.0.0.1:6394/9
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_charging as bench  # the tools folder is not a package

ROOT = bench.ROOT
CAP = 10**15  # never reached by the load
SIMS = range(262010000000000, 262010000001000)


def limits_folder(into: Path) -> Path:
    """The demo catalogue plus ``sim_limits`` for every SIM of the demo range."""
    for item in (ROOT / "policies" / "demo").glob("*.yaml"):
        shutil.copy(item, into / item.name)
    entries = [
        {"imsi": str(imsi), "data_day_bytes": CAP, "data_month_bytes": CAP, "action": "block"}
        for imsi in SIMS
    ]
    (into / "zz-bench-limits.yaml").write_text(json.dumps({"sim_limits": entries}))
    return into


def one_side(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    args.run_base = (int(time.time() * 10) % 10**6) * 1000
    two_cores = (os.cpu_count() or 1) >= 2
    gen_cpu, server_cpu = (0, 1) if two_cores else (None, None)
    env = dict(os.environ, OCS_REDIS_URL=args.redis_url)
    ocs = [str(Path(sys.executable).parent / "ocs")]
    bench.flush(args.redis_url)
    subprocess.run(
        [*ocs, "catalog", "apply", str(folder)], env=env, check=True, capture_output=True
    )
    port = bench.free_port()
    server = bench.start_server(
        [
            *bench.taskset(server_cpu),
            *(*ocs, "serve", "--port", str(port), "--log-level", "WARNING"),
            "--accept-unknown-peers",
        ],
        env,
    )
    loadavg = os.getloadavg()[0]
    try:
        out = bench.measure(port, server.pid, args, gen_cpu, args.redis_url)
    finally:
        bench.stop(server)
    out["loadavg_before"] = loadavg
    return out


async def script_phase(url: str, rounds: int, sessions: int = 100) -> dict[str, Any]:
    """``charge.lua`` Redis time per call without caps, with one and with two."""
    import redis.asyncio as aredis

    from ocs.balance import BalanceStore, BucketSpec, BucketUnit, ChargeRequest

    payer = "bench:prepaid_pool:limits"
    r = aredis.from_url(url)
    await r.flushdb()
    store = BalanceStore(r)
    await store.provision(payer, [BucketSpec("b", BucketUnit.BYTES, 10**14)], 0, resize=False)
    calls = iter(range(10**9))

    def caps(imsi: str, n: int) -> tuple[str | int, ...]:
        windows = [("data_month_bytes", "m2026-12"), ("data_day_bytes", "d2026-12-06")][:n]
        return tuple(v for c, p in windows for v in (f"{imsi}|*|{c}", CAP, p, 1, "block"))

    async def session(sid: str, limits: tuple[str | int, ...]) -> None:
        now = int(time.time() * 1000)
        for used, want in ((0, 100_000), (50_000, 100_000), (50_000, 0)):
            req = ChargeRequest(f"r{next(calls)}", f"{sid}|10", BucketUnit.BYTES, now,
                                used=used, want=want, min_grant=1000,
                                deadline_ms=now + 600_000, limits=limits)  # fmt: skip
            await store.charge(payer, req)

    sides = {"none": 0, "one_cap": 1, "two_caps": 2}
    usec = {side: [0.0, 0] for side in sides}
    try:
        for rnd in range(rounds):
            for side, n in sides.items():
                await r.config_resetstat()
                for i in range(sessions):
                    imsi = str(262010000000000 + i)
                    await session(f"{side}-{rnd}-{i}", caps(imsi, n))
                stat = (await r.info("commandstats"))["cmdstat_evalsha"]
                usec[side][0] += stat["usec"]
                usec[side][1] += stat["calls"]
    finally:
        await store.batch.close()
        await r.flushdb()
        await r.aclose()
    per_call = {side: round(u / max(c, 1), 2) for side, (u, c) in usec.items()}
    return {
        "script_usec_per_call": per_call,
        "ratio_over_none": {k: round(v / per_call["none"], 3) for k, v in per_call.items()},
        "calls_per_side": usec["none"][1],
    }


KEYS = ("ccr_u_per_s", "server_cpu_us_per_ccr", "redis_cpu_us_per_ccr", "paced_p99_ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="flushed!")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--updates", type=int, default=20, help="CCR-U per session")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--max-open", type=int, default=256)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--quota", type=int, default=bench.GRANTED_OCTETS)
    parser.add_argument("--load-procs", type=int, default=1)
    parser.add_argument("--script-rounds", type=int, default=10)
    args = parser.parse_args()
    if args.script_rounds:
        script = asyncio.run(script_phase(args.redis_url, args.script_rounds))
        print(json.dumps({"phase": "script", **script}), flush=True)
    sides: dict[str, list[dict[str, Any]]] = {"none": [], "limits": []}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"none": ROOT / "policies" / "demo", "limits": limits_folder(Path(tmp))}
        for run in range(args.runs):
            for side, folder in folders.items():
                result = one_side(args, folder)
                codes = result["fast_result_codes"] | result["paced_result_codes"]
                print(json.dumps({"run": run + 1, "side": side, **result}), flush=True)
                # a loaded machine may time some paced requests out; any answer but 2001
                # (a 4012 of a cap) means the two sides did not do the same work
                assert set(codes) <= {"2001", "timeout"}, f"{side}: answers {codes}"
                sides[side].append(result)
    if not args.runs:
        return
    medians = {
        side: {k: statistics.median(r[k] for r in runs) for k in KEYS}
        for side, runs in sides.items()
    }
    ratios = {k: round(medians["limits"][k] / max(medians["none"][k], 1e-9), 3) for k in KEYS}
    print(json.dumps({"benchmark": "limits", "runs": args.runs, "median": medians,
                      "ratio_limits_over_none": ratios}))  # fmt: skip


if __name__ == "__main__":
    main()
