"""What observability costs: the per-MSCC reservation metrics on the charging path, a JSON log
line, a /metrics scrape of a populated registry and a /readyz round trip on the metrics port.

    .venv/bin/python tools/bench_observability.py [--calls 1000000] [--scrapes 200]

CPU time (time.process_time of this process) per operation, the median of 3 runs, and the
load average when it ran. Results: docs/benchmarks-observability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
import urllib.request
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest

from ocs.diameter.constants import FinalUnitAction
from ocs.observability.endpoint import start_ops_server
from ocs.observability.health import Health
from ocs.observability.logs import JsonFormatter
from ocs.observability.metrics import ChargingMetrics, register_all

PAYER = "demo:prepaid_pool:acme-pool"
TERMINATE = FinalUnitAction.TERMINATE


def cpu_per_call(fn: Callable[[], None], n: int) -> float:
    """Median over 3 runs of the CPU seconds per call of ``fn``."""
    runs = []
    for _ in range(3):
        start = time.process_time()
        for _ in range(n):
            fn()
        runs.append((time.process_time() - start) / n)
    return statistics.median(runs)


def populated() -> tuple[CollectorRegistry, ChargingMetrics]:
    registry = CollectorRegistry()
    charging, api, offline = register_all(registry)
    for kind in ("initial", "update", "terminate", "event"):
        for result in (2001, 4012, 5030, 5031, 5012):
            charging.count_ccr(kind, result, 0.002)
    for result in (2001, 4011, 4012, 5030):
        charging.count_mscc(result)
    api.count_topup("EUR", 500)
    offline.drain_pass(10, 0)
    return registry, charging


async def readyz_round_trips(n: int) -> float:
    health = Health()
    for name in ("redis", "catalogue", "diameter"):

        async def ok() -> str | None:
            return None

        health.add(name, ok)
    ops = start_ops_server(0, "127.0.0.1", registry=CollectorRegistry(), health=health)
    url = f"http://127.0.0.1:{ops.port}/readyz"

    def fetch_all() -> float:
        start = time.process_time()
        for _ in range(n):
            with urllib.request.urlopen(url, timeout=5) as got:
                got.read()
        return (time.process_time() - start) / n

    try:
        return await asyncio.to_thread(fetch_all)
    finally:
        await ops.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    registry, charging = populated()

    def grant() -> None:  # the common case: units granted, some left behind
        charging.count_grant(10_000_000, 10_000_000, 5, TERMINATE, PAYER)

    def mscc() -> None:
        charging.count_mscc(2001)

    record = logging.LogRecord("ocs.charging", logging.WARNING, __file__, 1, "m %s", ("x",), None)
    record.session_id, record.origin_host, record.result_code = "pgw;1;2", "pgw.test", 5012
    json_fmt, text_fmt = JsonFormatter(), logging.Formatter("%(asctime)s %(levelname)s %(message)s")

    def scrape() -> None:
        generate_latest(registry)

    rows = [
        ("count_mscc (existing, for scale)", cpu_per_call(mscc, args.calls)),
        ("count_grant, granted (new, per MSCC)", cpu_per_call(grant, args.calls)),
        ("JSON log line (format)", cpu_per_call(lambda: json_fmt.format(record), 100_000)),
        ("text log line (format)", cpu_per_call(lambda: text_fmt.format(record), 100_000)),
        ("/metrics encode, populated registry", cpu_per_call(scrape, args.scrapes)),
        ("/readyz round trip, 3 checks", asyncio.run(readyz_round_trips(args.scrapes))),
    ]
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, seconds in rows:
        print(f"{name:48s} {seconds * 1e6:10.2f} us CPU")


if __name__ == "__main__":
    main()
