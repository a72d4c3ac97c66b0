"""Benchmark: resolve the twin and rate one usage context (issue 4).

Builds a synthetic catalogue in memory and loads it through the same validation and compile
path as the loader (`catalogue_load_s`: validate + compile, i.e. the cost of a hot reload; the
YAML parsing of a real folder comes on top): 10,000 price plans (2 versions each), 1,000
zones (10 zone sets x 100), and SIMs with 1 to 16 twins each (every SIM with index % 16 == 15
has 16). Then times `rate()` per context with time.perf_counter_ns and prints one JSON line.

    .venv/bin/python tools/bench_rating.py [--sims 10000] [--iterations 200000]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any

from ocs.rating import RatType, ServiceKind, UsageContext, rate
from ocs.rating.loader import check_documents

ZONE_SETS = 10
ZONES_PER_SET = 100
START = "2024-01-01T00:00:00+00:00"
CHANGE = "2025-01-01T00:00:00+00:00"
RATS = [RatType.EUTRAN, RatType.NR, RatType.LTE_M, RatType.NB_IOT]


def plmn(zone: int, k: int) -> str:
    return f"{200 + zone:03d}{k + 1:02d}"


def build_documents(plans: int, sims: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    zone_sets = [
        {
            "id": f"zs{s}",
            "default": "z0",
            "zones": [
                {"id": f"z{z}", "networks": [plmn(z, k) for k in range(3)]}
                for z in range(ZONES_PER_SET)
            ],
        }
        for s in range(ZONE_SETS)
    ]
    bands = [
        {
            "id": "std",
            "default": "off",
            "bands": [
                {
                    "id": "peak",
                    "windows": [
                        {
                            "days": ["mon", "tue", "wed", "thu", "fri"],
                            "start": "08:00",
                            "end": "20:00",
                        }
                    ],
                },
                {"id": "wknd", "windows": [{"days": ["sat", "sun"]}]},
            ],
        }
    ]

    def tiers(base: int) -> dict[str, Any]:
        return {
            "tiers": [
                {"from": 0, "price": f"{base}.25"},
                {"from": 100_000_000, "price": f"{base}"},
                {"from": 1_000_000_000, "price": f"0.{base}"},
            ]
        }

    plan_docs = []
    for p in range(plans):
        versions = []
        for v, start in enumerate((START, CHANGE)):
            zones = rng.sample(range(ZONES_PER_SET), 5)
            tariffs = [
                {
                    "service": "data",
                    "zone": f"z{z}",
                    "per": 1_000_000,
                    "increment": 1000,
                    "minimum_charge": 1,
                    "rates": {"peak": tiers(2 + v), "any": tiers(1 + v)},
                }
                for z in zones
            ]
            tariffs.append(
                {
                    "service": "data",
                    "zone": "*",
                    "per": 1_000_000,
                    "increment": 10_000,
                    "rates": {"any": tiers(5)},
                }
            )
            tariffs.append({"service": "sms", "zone": "*", "rates": {"any": tiers(9)}})
            versions.append(
                {
                    "effective_from": start,
                    "zone_set": f"zs{p % ZONE_SETS}",
                    "time_bands": "std",
                    "allowances": [
                        {
                            "id": "inc",
                            "service": "data",
                            "zones": [f"z{zones[0]}"],
                            "units": 50_000_000,
                        }
                    ],
                    "tariffs": tariffs,
                }
            )
        plan_docs.append({"id": f"p{p}", "currency": "EUR", "versions": versions})

    sim_docs = []
    for i in range(sims):
        n_twins = 16 if i % 16 == 15 else 1 + rng.randrange(16)
        twins = []
        for k in range(n_twins):
            last = k == n_twins - 1
            flt: dict[str, Any] = (
                {}
                if last
                else {
                    "apn": [f"apn{k}.iot"],
                    "rat": [r.value for r in RATS[: 1 + k % 4]],
                    **({"rating_group": [k, 100 + k]} if k % 2 else {}),
                    **({"not": {"cidr": ["10.0.0.0/8"]}} if k % 3 == 0 else {}),
                }
            )
            first_plan = rng.randrange(plans)
            twins.append(
                {
                    "id": f"t{k}",
                    "priority": k,
                    "filter": flt,
                    "payer": {"kind": "wallet", "id": "w"},
                    "plans": [
                        {"plan": f"p{first_plan}", "from": START},
                        {"plan": f"p{rng.randrange(plans)}", "from": "2024-07-01T00:00:00Z"},
                    ],
                }
            )
        sim_docs.append({"imsi": f"9990100{i:08d}", "account": "a", "twins": twins})

    return {
        "bench.yaml": {
            "tenant": {"id": "bench", "home_network": plmn(0, 0), "time_zone": "Europe/Berlin"},
            "countries": [{"code": "DE", "mcc": ["200"]}],
            "zone_sets": zone_sets,
            "time_bands": bands,
            "plans": plan_docs,
            "accounts": [{"id": "a"}],
            "wallets": [{"id": "w", "account": "a", "currency": "EUR"}],
            "sims": sim_docs,
        }
    }


def contexts(catalogue: Any, count: int, seed: int) -> list[UsageContext]:
    """Usage that matches a random twin of a random SIM (so on average half the filters of
    a SIM are evaluated), in a random visited network, at a random time."""
    rng = random.Random(seed)
    imsis = sorted(catalogue.sims_by_imsi)
    base = datetime(2024, 3, 1, tzinfo=UTC)
    out = []
    for _ in range(count):
        sim = catalogue.sims_by_imsi[rng.choice(imsis)]
        k = rng.randrange(len(sim.twins))
        zone = rng.randrange(ZONES_PER_SET)
        out.append(
            UsageContext(
                tenant="bench",
                imsi=sim.imsi,
                event_time=base + timedelta(seconds=rng.randrange(400 * 86400)),
                service=ServiceKind.DATA,
                quantity=rng.randrange(1, 5_000_000),
                apn=f"apn{k}.iot" if k < len(sim.twins) - 1 else "other.apn",
                rating_group=k if k % 2 else None,
                mcc=plmn(zone, 0)[:3],
                mnc=plmn(zone, rng.randrange(3))[3:],
                rat_type=RatType.EUTRAN,
                destination_ip=ip_address("192.0.2.10"),
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=10_000)
    parser.add_argument("--sims", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)

    documents = build_documents(args.plans, args.sims, args.seed)
    t0 = time.perf_counter()
    report = check_documents(documents)  # validate + compile: the cost of a (hot) reload
    load_s = time.perf_counter() - t0
    del documents
    catalogue = report.catalogue
    if catalogue is None:
        for issue in report.errors[:20]:
            print(issue, file=sys.stderr)
        return 1
    ctxs = contexts(catalogue, 10_000, args.seed)
    counters = {"9990100000000000/t0|data": 150_000_000}
    for ctx in ctxs[:2000]:  # warm up
        rate(catalogue, ctx, counters)
    samples = []
    clock = time.perf_counter_ns
    n = len(ctxs)
    for i in range(args.iterations):
        ctx = ctxs[i % n]
        start = clock()
        rate(catalogue, ctx, counters)
        samples.append(clock() - start)
    samples.sort()
    summary = catalogue.summary()
    result = {
        "bench": "rating.resolve_twin+rate",
        "median_us": round(statistics.median(samples) / 1000, 2),
        "p99_us": round(samples[int(len(samples) * 0.99)] / 1000, 2),
        "mean_us": round(statistics.fmean(samples) / 1000, 2),
        "iterations": args.iterations,
        "plans": summary["plans"],
        "plan_versions": summary["plan_versions"],
        "zones": summary["zones"],
        "sims": summary["sims"],
        "twins": summary["twins"],
        "max_twins_per_sim": max(len(s.twins) for s in catalogue.sims_by_imsi.values()),
        "catalogue_load_s": round(load_s, 2),
        "gc_enabled": gc.isenabled(),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
