"""What one price online and offline (issue 12) costs on the real-time path.

1. ``charge.lua`` Redis time per call (``INFO commandstats``, ``cmdstat_evalsha``), the script
   before issue 12 (``--before``, default the commit before the validate-then-write rule)
   against the current one, alternating rounds:

   * ``pool``: a CCR-U on a prepaid pool with plenty left (commit + new reservation), the
     common path of every pool;
   * ``wallet_rate`` (before only): a CCR-U on a wallet, money at the first tier's rate;
   * ``wallet_price``: the same CCR-U paying an exact price (ARGV[15]);
   * ``wallet_counters``: the same with the period counters checked and moved (ARGV[16]),
     the path of a tiered or allowance wallet plan.

2. Python per CCR (``time.process_time``): ``ocs.charging.pricing.prices`` of a usage on a
   flat wallet plan, and on a tiered one (period id, counter fields, ``Quote.price`` with
   counters), against ``Quote.price`` alone (what the record cost before).

Runs against ``--redis-url`` (a spare database, flushed first). Prints one JSON object.

    .venv/bin/python tools/bench_price.py --redis-url redis://127.0.0.1:6393/9
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from ocs.balance import BalanceStore  # noqa: E402
from ocs.balance.keys import PayerKeys  # noqa: E402
from ocs.balance.models import BucketSpec, BucketUnit  # noqa: E402
from ocs.balance.store import script_text  # noqa: E402
from ocs.charging.pricing import prices  # noqa: E402
from ocs.rating import ServiceKind, UsageContext, resolve  # noqa: E402
from ocs.rating.loader import load_catalogue  # noqa: E402
from tools.bench_lifecycle import script_at  # noqa: E402

BEFORE = "9aa73b9"  # main before issue 12's scripts
NOW = 1_700_000_000_000


async def _loop(redis: Redis, sha: str, tag: str, n: int, extra: list[Any]) -> float:
    k = PayerKeys(tag)
    keys = [k.buckets, k.balances, k.reservations, k.reservation_index, k.done("%d"), k.stream]
    keys += [k.lifecycle, k.counters, k.events]
    await redis.config_resetstat()
    for i in range(n):
        args = [f"r{i}", NOW + i, "bytes", 1000, 1000, 0, 1, 1000, 2**50, 60_000, "s|1",
                "session", "{}", tag]  # fmt: skip
        if extra:
            args += [a if not callable(a) else a(i) for a in extra]
        await redis.evalsha(sha, len(keys), *[x.replace("%d", str(i)) for x in keys], *args)
    info = await redis.info("commandstats")
    entry = info.get("cmdstat_evalsha", {"calls": 1, "usec": 0})
    return round(float(entry["usec"]) / max(int(entry["calls"]), 1), 2)


async def bench_scripts(url: str, n: int, rounds: int, before: str) -> dict[str, Any]:
    redis = Redis.from_url(url)
    await redis.flushdb()
    store = BalanceStore(redis)
    old, new = script_at(before), script_text("charge.lua")
    old_sha, new_sha = await redis.script_load(old), await redis.script_load(new)
    counters = [1, lambda i: json.dumps([["2023-11-01|s|data", i * 1000, 1000]])]
    variants: list[tuple[str, str, str, list[Any]]] = [
        ("pool_before", old_sha, "prepaid_pool", []),
        ("pool_after", new_sha, "prepaid_pool", []),
        ("wallet_rate_before", old_sha, "wallet", []),
        ("wallet_price_after", new_sha, "wallet", [1]),
        ("wallet_counters_after", new_sha, "wallet", counters),
    ]
    runs: dict[str, list[float]] = {name: [] for name, *_ in variants}
    for rnd in range(rounds):  # alternating, so that load changes hit all alike
        for name, sha, kind, extra in variants:
            tag = f"bench:{kind}:{name}{rnd}"
            unit = BucketUnit.BYTES if kind == "prepaid_pool" else BucketUnit.MONEY
            await store.provision(tag, [BucketSpec("b", unit, 10**15)], 0, resize=False)
            runs[name].append(await _loop(redis, sha, tag, n, extra))
    await store.batch.close()
    await redis.aclose()
    return {name: {"runs": r, "median": sorted(r)[len(r) // 2]} for name, r in runs.items()}


PLANS = """
tenant: {id: b, home_network: "26201", time_zone: Europe/Berlin, currency: EUR}
countries: [{code: DE, mcc: ["262"]}]
zone_sets: [{id: z, default: home, zones: [{id: home, name: Home, networks: ["26201"]}]}]
accounts: [{id: a, currency: EUR}]
wallets: [{id: w, account: a, currency: EUR, balance: 1000}]
plans:
  - id: flat
    currency: EUR
    versions:
      - effective_from: "2020-01-01T00:00:00+00:00"
        zone_set: z
        tariffs:
          - {service: data, zone: "*", per: 1000000, increment: 10000, minimum_charge: 5,
             rates: {any: {tiers: [{from: 0, price: "3"}]}}}
  - id: tiered
    currency: EUR
    versions:
      - effective_from: "2020-01-01T00:00:00+00:00"
        zone_set: z
        allowances: [{id: free, service: data, units: 1000000}]
        tariffs:
          - {service: data, zone: "*", per: 1000000, increment: 10000, counter: t,
             rates: {any: {tiers: [{from: 0, price: "3"}, {from: 50000000, price: "1"}]}}}
sims:
  - {imsi: "262010000000001", account: a, twins: [{id: m, payer: {kind: wallet, id: w},
     plans: [{plan: flat, from: "2020-01-01T00:00:00+00:00"}]}]}
  - {imsi: "262010000000002", account: a, twins: [{id: m, payer: {kind: wallet, id: w},
     plans: [{plan: tiered, from: "2020-01-01T00:00:00+00:00"}]}]}
"""


def bench_python(n: int, folder: Path) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "c.yaml").write_text(PLANS)
    catalogue = load_catalogue(folder)
    out: dict[str, float] = {}
    for name, imsi in (("flat", "262010000000001"), ("tiered", "262010000000002")):
        ctx = UsageContext(
            tenant="b", imsi=imsi, event_time=datetime.now(UTC), service=ServiceKind.DATA,
            quantity=0,
        )  # fmt: skip
        resolution = resolve(catalogue, ctx)
        quote = resolution.quotes[0]
        known: dict[str, int] = {}
        start = time.process_time()
        for i in range(n):
            quote.price(331_667 + i)
        out[f"{name}_quote_price_us"] = round((time.process_time() - start) / n * 1e6, 2)
        start = time.process_time()
        for i in range(n):
            prices(catalogue, resolution, 331_667 + i, NOW + i, known)
        out[f"{name}_prices_us"] = round((time.process_time() - start) / n * 1e6, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", default=BEFORE)
    args = parser.parse_args()
    result = {
        "scripts_redis_us_per_call": asyncio.run(
            bench_scripts(args.redis_url, args.calls, args.rounds, args.before)
        ),
        "python_us_per_ccr": bench_python(args.calls * 5, Path("/tmp/ocs-bench-price")),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
