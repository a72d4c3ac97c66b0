"""Events benchmark: what the outbox and thresholds (issue #16) cost ``charge.lua`` per call.

The common path of a CCR-U (commit 1,000 units, reserve 1,000 on a pool with plenty left),
in Redis microseconds per call (``INFO commandstats``, ``cmdstat_evalsha``), alternating
rounds of these variants, each on a payer of its own:

- ``before``: ``charge.lua`` before the events (git ``--before``, default ``cc46dc0~1``);
- ``events``: the commit that added them (``--after``, default ``cc46dc0``), on a payer
  without thresholds: one ``HMGET`` of the lifecycle hash more;
- ``events_thresholds``: the same on a payer with thresholds (80 %, 100 %, and an absolute
  one), none crossed: the reads of the unit's balances;
- ``now`` and ``now_thresholds``: the script of the working tree (with what came after:
  per-SIM limits, multi-level reservations), for reference.

And the cost of a call that writes an event (``now_event``: a threshold crossed on each
call, each on its own payer). Runs against ``--redis-url`` (a spare database, flushed).

    .venv/bin/python tools/bench_events.py --redis-url redis://127.0.0.1:6393/9
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ocs.balance import BalanceStore
from ocs.balance.keys import PayerKeys
from ocs.balance.models import BucketSpec, BucketUnit
from ocs.balance.store import script_text
from ocs.balance.thresholds import PayerThresholds, put_api_thresholds
from tools.bench_lifecycle import ROOT, script_at

BEFORE = "cc46dc0~1"  # main before the event outbox
AFTER = "cc46dc0"  # the commit that added it
SIZE = 10**15
TEXTS: dict[str, str] = {}  # sha -> script text


def _keys(tag: str) -> list[str]:
    k = PayerKeys(tag)
    return [k.buckets, k.balances, k.reservations, k.reservation_index, k.done("%d"), k.stream,
            k.lifecycle, k.counters, k.events, k.limits]  # fmt: skip


async def _loop(redis: Redis, sha: str, tags: list[str], n: int, used: int) -> float:
    """``n`` calls (one payer each when ``tags`` has ``n`` of them); Redis us per call."""
    await redis.config_resetstat()
    for i in range(n):
        tag = tags[i % len(tags)]
        keys = [k.replace("%d", str(i)) for k in _keys(tag)]
        args = [f"r{i}", 1_700_000_000_000 + i, "bytes", used, 1000, 0, 0, 0, 2**50, 60_000,
                "s|1", "session", "{}", tag, "", "", "", ""]  # fmt: skip
        try:
            await redis.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:  # another client flushed the scripts: load them again
            await redis.script_load(TEXTS[sha])
            await redis.evalsha(sha, len(keys), *keys, *args)
    info = await redis.info("commandstats")
    entry = info.get("cmdstat_evalsha", {"calls": 1, "usec": 0})
    return round(float(entry["usec"]) / max(int(entry["calls"]), 1), 2)


def _script(ref: str) -> str:
    """charge.lua at ``ref`` with the preludes of then (``_events.lua`` once it exists)."""
    text = script_at(ref)
    done = subprocess.run(
        ["git", "show", f"{ref}:ocs/balance/lua/_events.lua"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return text
    shadow, _, rest = text.partition("\nSCRIPT = 'charge.lua'")
    return shadow + "\n" + done.stdout + "SCRIPT = 'charge.lua'" + rest


async def bench(url: str, n: int, rounds: int, before: str, after: str) -> dict[str, Any]:
    redis = Redis.from_url(url)
    await redis.flushdb()
    store = BalanceStore(redis)
    texts = {"before": _script(before), "events": _script(after), "now": script_text("charge.lua")}
    shas = {}
    for name, text in texts.items():
        shas[name] = await redis.script_load(text)
        TEXTS[shas[name]] = text
    new_sha = shas["now"]
    variants = (("before", shas["before"], False), ("events", shas["events"], False),
                ("events_thresholds", shas["events"], True), ("now", new_sha, False),
                ("now_thresholds", new_sha, True))  # fmt: skip
    runs: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for rnd in range(rounds):
        for name, sha, thresholds in variants:
            tag = f"bench:prepaid_pool:{name}{rnd}"
            await store.provision(tag, [BucketSpec("b", BucketUnit.BYTES, SIZE)], 0, resize=False)
            if thresholds:
                t = PayerThresholds("bytes", SIZE, (80, 100), (1000,))
                await put_api_thresholds(redis, tag, t)
            runs[name].append(await _loop(redis, sha, [tag], n, 1000))
    out: dict[str, Any] = {
        name: {"runs": rs, "median_us": sorted(rs)[len(rs) // 2]} for name, rs in runs.items()
    }
    base = out["before"]["median_us"]
    for name in ("events", "events_thresholds", "now", "now_thresholds"):
        out[name]["ratio_to_before"] = round(out[name]["median_us"] / base, 3)
    # every call crosses 80 % of its own payer: the event is written
    events = n // 10
    tags = []
    for i in range(events):
        tag = f"bench:prepaid_pool:ev{i}"
        await store.provision(tag, [BucketSpec("b", BucketUnit.BYTES, 1000)], 0, resize=False)
        await put_api_thresholds(redis, tag, PayerThresholds("bytes", 1000, (80,)))
        tags.append(tag)
    # 900 of 1,000 used by one call (no reservation before it): 90 % used, 80 % crossed
    out["now_event"] = {"us": await _loop(redis, new_sha, tags, events, 900)}
    out["now_event"]["events"] = sum([await redis.xlen(PayerKeys(t).events) for t in tags])
    await redis.flushdb()
    await redis.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--after", default=AFTER)
    args = parser.parse_args()
    result = asyncio.run(bench(args.redis_url, args.calls, args.rounds, args.before, args.after))
    result["refs"] = {"before": args.before, "events": args.after}
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
