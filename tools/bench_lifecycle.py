"""Lifecycle benchmark: what issue #7 costs on the real-time path and in the periodic pass.

1. ``charge.lua`` on the common path (the payer can cover the request: CCR-U commit + new
   reservation on a pool with plenty left), the script before issue #7 (git ``3c1c3ea``,
   6 keys) against the current one (7 keys, lifecycle only on the short path). Redis-side
   microseconds per call from ``INFO commandstats`` (``cmdstat_evalsha``), which is what the
   hot path pays inside Redis; client CPU per call beside it.
   A third variant runs the current script on a payer with an auto top-off threshold
   (``threshold_percent``) configured, far above it: the threshold's common path.
   ``--before REF`` picks the script to compare with (default: before issue #7).
2. ``charge.lua`` on the short path with an auto top-off bought on every call (no cap), and
   with one bought because the call left the payer below its threshold.
3. One lifecycle pass over ``--pools`` pools: nothing due, then every period due (renewal to
   the invoice), wall and CPU time of this process; then every period due again with
   ``--sims`` SIMs per pool (none with a live session), with and without the RAR lookup of
   their sessions after the renewals.

Runs against ``--redis-url`` (a spare database, flushed first). Prints one JSON object.

    .venv/bin/python tools/bench_lifecycle.py --redis-url redis://127.0.0.1:6394/9
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from ocs.balance import BalanceStore
from ocs.balance.keys import PayerKeys
from ocs.balance.models import BucketSpec, BucketUnit
from ocs.balance.store import script_text
from ocs.lifecycle import Lifecycle, pool_rules
from ocs.rating.loader import check_documents

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "3c1c3ea"  # the commit before charge.lua learnt the lifecycle


async def _stat(redis: Redis) -> tuple[int, float]:
    info = await redis.info("commandstats")
    entry = info.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(entry["calls"]), float(entry["usec"])


async def _loop(
    redis: Redis, sha: str, keys: list[str], n: int, tag: str, want: int, used: int
) -> dict[str, float]:
    await redis.config_resetstat()
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        args = [f"r{i}", 1_700_000_000_000 + i, "bytes", used, want, 0, 0, 0, 2**50, 60_000,
                "s|1", "session", "{}", tag]  # fmt: skip
        await redis.evalsha(sha, len(keys), *[k.replace("%d", str(i)) for k in keys], *args)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    calls, usec = await _stat(redis)
    return {
        "calls": n,
        "redis_us_per_call": round(usec / max(calls, 1), 2),
        "client_cpu_us_per_call": round(cpu / n * 1e6, 1),
        "calls_per_s": round(n / wall),
    }


def _keys(tag: str, with_life: bool) -> list[str]:
    k = PayerKeys(tag)
    keys = [k.buckets, k.balances, k.reservations, k.reservation_index, k.done("%d"), k.stream]
    # the script of today reads KEYS[7] (thresholds) on every call and writes KEYS[9] (events)
    return [*keys, k.lifecycle, k.counters, k.events] if with_life else keys


def script_at(ref: str, name: str = "charge.lua") -> str:
    """``name`` as Redis ran it at git ``ref``: with the ``_shadow.lua`` prelude once the
    scripts have one (``ocs.balance.store.script_text``)."""

    def show(path: str) -> str | None:
        done = subprocess.run(
            ["git", "show", f"{ref}:ocs/balance/lua/{path}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout if done.returncode == 0 else None

    text = show(name)
    if text is None:
        raise SystemExit(f"no ocs/balance/lua/{name} at {ref}")
    return (show("_shadow.lua") or "") + text


def scripts(before: str = BEFORE) -> tuple[str, str]:
    """charge.lua at git ``before`` and now."""
    return script_at(before), script_text("charge.lua")


THRESHOLD_RULE = {"addon": "a", "account": "x", "u": "bytes", "units": 1000, "prio": 50,
                  "ms": 86_400_000, "cap": 0, "price": 1, "currency": "EUR", "pct": 10}  # fmt: skip


async def _threshold(redis: Redis, tag: str, pool: str, size: int) -> None:
    """Give ``tag`` an auto top-off with a 10 % threshold of ``size`` on bucket ``pool``
    (lifecycle.lua marks the bucket, as ``PUT .../auto-renewal`` does)."""
    await redis.hset(PayerKeys(tag).lifecycle, mapping={"size": size, "period": "p"})
    lifecycle = Lifecycle(redis, signal_sessions=False)
    await lifecycle.set_api_top_off(tag, {**THRESHOLD_RULE, "pool": pool})


async def bench_charge(
    redis: Redis, n: int, rounds: int, old_text: str, new_text: str
) -> dict[str, Any]:
    store = BalanceStore(redis)
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": [], "after_threshold": []}
    variants = (
        ("before", old_text, False),
        ("after", new_text, True),
        ("after_threshold", new_text, True),
    )
    for rnd in range(rounds):  # alternating, so that load changes hit all alike
        for name, text, life in variants:
            tag = f"bench:prepaid_pool:{name}{rnd}"
            bucket = [BucketSpec(name, BucketUnit.BYTES, 10**15)]
            await store.provision(tag, bucket, 0, resize=False)
            if name == "after_threshold":
                await _threshold(redis, tag, name, 10**15 // 100)  # far below 10**15
            sha = await redis.script_load(text)
            runs[name].append(await _loop(redis, sha, _keys(tag, life), n, tag, 1000, 1000))
    out: dict[str, Any] = {
        name: {
            "runs": [r["redis_us_per_call"] for r in rs],
            "median": sorted(rs, key=lambda r: r["redis_us_per_call"])[len(rs) // 2],
        }
        for name, rs in runs.items()
    }
    # the short path: each call, on a payer of its own with an empty pool, buys a top-off
    short = n // 4
    rule = {"addon": "a", "pool": "short", "account": "x", "u": "bytes", "units": 1000,
            "prio": 50, "ms": 86_400_000, "cap": 0, "price": 1, "currency": "EUR"}  # fmt: skip
    for i in range(short):
        tag = f"bench:prepaid_pool:short{i}"
        await store.provision(tag, [BucketSpec("short", BucketUnit.BYTES, 0)], 0, resize=False)
        await redis.hset(
            PayerKeys(tag).lifecycle, mapping={"topoff": json.dumps(rule), "period": "p"}
        )
    sha = await redis.script_load(new_text)
    keys = [k.replace("short", "short%d") for k in _keys("bench:prepaid_pool:short", True)]
    out["after_top_off_bought"] = await _loop(
        redis, sha, keys, short, "bench:prepaid_pool:short", 1000, 0
    )
    # below the threshold after the call: 1,000 units, threshold 10 % of 10,000 = 1,000,
    # each call reserves 1 unit and buys the add-on
    for i in range(short):
        tag = f"bench:prepaid_pool:low{i}"
        await store.provision(tag, [BucketSpec("low", BucketUnit.BYTES, 1000)], 0, resize=False)
        await _threshold(redis, tag, "low", 10_000)
    keys = [k.replace("low", "low%d") for k in _keys("bench:prepaid_pool:low", True)]
    out["after_threshold_top_off_bought"] = await _loop(
        redis, sha, keys, short, "bench:prepaid_pool:low", 1, 0
    )
    return out


def _catalogue(pools: int) -> Any:
    docs = {
        "c.yaml": {
            "tenant": {"id": "bench", "home_network": "00101", "time_zone": "UTC"},
            "accounts": [{"id": "acc", "bill_day": 1}],
            "pools": [
                {"id": f"p{i}", "account": "acc", "size": 1000, "renewal": {"fee": 100}}
                for i in range(pools)
            ],
        }
    }
    report = check_documents(docs)
    assert report.catalogue is not None, report.errors
    return report.catalogue


async def bench_pass(redis: Redis, pools: int, sims: int) -> dict[str, Any]:
    catalogue = _catalogue(pools)
    rules = pool_rules(catalogue)
    with_sims = [
        replace(r, sims=tuple((f"00101{i:05d}{j:05d}", None) for j in range(sims)))
        for i, r in enumerate(rules)
    ]
    lifecycle = Lifecycle(redis)  # no SIMs on these pools: the session lookup is skipped
    quiet = Lifecycle(redis, signal_sessions=False)
    t0 = 1_793_491_200_000  # 2026-11-01T00:00:00Z
    day = 86_400_000
    await lifecycle.setup(rules, t0 + 1000)
    out: dict[str, Any] = {"pools": pools, "sims_per_pool": sims}
    passes = (
        ("nothing_due", t0 + 2000, lifecycle, rules),
        ("all_due", t0 + 31 * day, lifecycle, rules),
        ("all_due_sims_signalled", t0 + 62 * day, lifecycle, with_sims),
        ("all_due_sims_not_signalled", t0 + 92 * day, quiet, with_sims),
    )
    for name, now, runner, these in passes:
        cpu, wall = time.process_time(), time.perf_counter()
        report = await runner.run_once(these, now)
        out[name] = {
            "wall_s": round(time.perf_counter() - wall, 3),
            "cpu_s": round(time.process_time() - cpu, 3),
            "outcomes": dict(report.outcomes),
            "signals": dict(report.signals),
        }
    return out


async def run(args: argparse.Namespace, old_text: str, new_text: str) -> dict[str, Any]:
    redis = Redis.from_url(args.redis_url)
    try:
        await redis.flushdb()
        result = {
            "charge": await bench_charge(redis, args.calls, args.rounds, old_text, new_text),
            "pass": await bench_pass(redis, args.pools, args.sims),
        }
        await redis.flushdb()
    finally:
        await redis.aclose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--pools", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sims", type=int, default=10, help="SIMs per pool (last passes)")
    parser.add_argument("--before", default=BEFORE, help="git ref of the charge.lua to compare")
    args = parser.parse_args()
    old_text, new_text = scripts(args.before)
    result = asyncio.run(run(args, old_text, new_text))
    result["before"] = args.before
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
