"""Bulk SIM state moves (docs/sim-states.md, "Many SIMs at once") against single moves, in
one run, over the real HTTP API (in this process, uvicorn) on a real Redis:

* **bulk**: ``POST /v1/subscriptions/bulk/state`` moving ``--sims`` SIMs (the demo
  catalogue plus that many generated SIMs), one request, alternately to ``suspended`` and
  back to ``active``;
* **single** (the anchor): ``POST /v1/subscriptions/{imsi}/state``, one SIM a request, each
  a whole catalogue change of the same tenant. ``--singles`` of them a round (the same
  moves, suspended and back); the time of ``--sims`` single moves is that many times the
  median per move measured (a round of 10,000 single moves of a 10,000-SIM tenant takes
  hours on the development machine: give ``--singles 10000`` to run them all).

Rounds alternate bulk and single. For each phase: the wall time, the longest Redis command
(``SLOWLOG``, every command logged: ``slowlog-log-slower-than 0`` for the run, restored
after) and the longest ``PING`` of a probe in another process (what a CCR of another tenant
waits for Redis while the move runs). The database of ``--redis-url`` is flushed.

    .venv/bin/python tools/bench_bulk_states.py --redis-url redis://127.0.0.1:6395/11
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis as sync_redis  # noqa: E402
from redis.asyncio import Redis as AsyncRedis  # noqa: E402

from ocs.api import start_api  # noqa: E402
from ocs.api.auth import Scope, create_token  # noqa: E402
from ocs.balance import BalanceStore  # noqa: E402
from ocs.config import Settings  # noqa: E402
from ocs.provisioning.catalogues import TenantCatalogues  # noqa: E402
from ocs.provisioning.keys import state_key  # noqa: E402
from ocs.redis_client import client_for_url  # noqa: E402
from tools.bench_states import demo_state  # noqa: E402

TENANT = "demo"


def _probe(url: str, ready: Any, stop: Any, out: Any) -> None:
    """In another process: PING every millisecond; the longest round trips, per phase."""
    client = sync_redis.Redis.from_url(url)
    client.ping()
    ready.set()
    worst: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        client.ping()
        worst.append(time.perf_counter() - started)
        if len(worst) > 200_000:
            worst = sorted(worst)[-1000:]
        time.sleep(0.001)
    worst.sort()
    out.put({"pings": len(worst), "max_ms": worst[-1] * 1000 if worst else 0.0,
             "p99_ms": worst[int(len(worst) * 0.99)] * 1000 if worst else 0.0})  # fmt: skip


def _name(entry: dict[str, Any]) -> str:
    command = entry["command"]
    return command if isinstance(command, str) else command.decode(errors="replace")


class Phase:
    """Wall time, SLOWLOG's longest command and the probe's longest PING of one phase."""

    def __init__(self, url: str, admin: Any) -> None:
        self.url, self.admin = url, admin

    async def __aenter__(self) -> Phase:
        ctx = multiprocessing.get_context("spawn")
        self.ready, self.stop, self.out = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_probe, args=(self.url, self.ready, self.stop, self.out))
        self.proc.start()
        await asyncio.to_thread(self.ready.wait, 60)  # the probe is pinging
        await self.admin.slowlog_reset()
        self.started = time.perf_counter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.stop.set()
        self.probe = self.out.get(timeout=30)
        self.proc.join(10)
        log = await self.admin.slowlog_get(1_000_000)
        log = [e for e in log if not _name(e).startswith(("SLOWLOG", "PING"))]
        top = max(log, key=lambda e: e["duration"], default=None)
        self.slowest_us = int(top["duration"]) if top else 0
        self.slowest = _name(top)[:60] if top else ""
        self.commands = len(log)
        by_name: dict[str, list[int]] = {}
        for e in log:
            name = _name(e).split(" ", 1)[0]
            if _name(e).startswith(f"SET {state_key(TENANT)} "):
                name = "SET(state)"  # the tenant's catalogue state, one document
            by_name.setdefault(name, []).append(int(e["duration"]))
        worst = sorted(by_name.items(), key=lambda kv: -max(kv[1]))[:6]
        self.by_name = {name: max(d) for name, d in worst}
        # the median of each command the change sends itself (robust to the preemptions of
        # a loaded machine, which a single O(1) command's maximum shows)
        self.median_by_name = {
            name: {"calls": len(d), "p50_us": int(statistics.median(d))}
            for name, d in by_name.items()
            if name in ("EVALSHA", "SET(state)", "HSET", "HSCAN")
        }
        durations = sorted(int(e["duration"]) for e in log)
        self.p999_us = durations[int(len(durations) * 0.999)] if durations else 0

    def view(self) -> dict[str, Any]:
        return {"s": round(self.seconds, 3), "slowest_us": self.slowest_us,
                "slowest": self.slowest, "commands": self.commands,
                "p999_us": self.p999_us, "slowest_by_command": self.by_name,
                "median_by_command": self.median_by_name,
                "ping_max_ms": round(self.probe["max_ms"], 2),
                "ping_p99_ms": round(self.probe["p99_ms"], 2)}  # fmt: skip


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True, help="a Redis DB to flush and use")
    parser.add_argument("--sims", type=int, default=10_000)
    parser.add_argument("--singles", type=int, default=100, help="single moves a round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    data = Path(tempfile.mkdtemp(prefix="bench-bulk-states-"))
    redis = client_for_url(args.redis_url, timeout=60)
    await redis.flushdb()
    admin = AsyncRedis.from_url(args.redis_url, socket_timeout=300)  # SLOWLOG GET of 40,000
    saved = await admin.config_get("slowlog-*")
    await admin.config_set("slowlog-log-slower-than", 0)
    await admin.config_set("slowlog-max-len", 1_000_000)
    state = demo_state()
    imsis = [f"26209{i:010d}" for i in range(args.sims)]
    for imsi in imsis:
        state["sims"][imsi] = {
            "imsi": imsi, "account": "bob", "state": "active",
            "twins": [{"id": "main", "payer": {"kind": "wallet", "id": "bob-wallet"},
                       "plans": [{"plan": "consumer-data", "from": "2024-06-01T00:00:00+02:00"}]}],
        }  # fmt: skip

    def put(target: dict[str, Any]) -> None:
        target.clear()
        target.update(state)

    setup = time.perf_counter()
    await TenantCatalogues(BalanceStore(redis), data).change(TENANT, put, source="bench")
    setup_s = time.perf_counter() - setup
    settings = Settings(redis_url=args.redis_url, data_dir=data, http_port=0, log_level="WARNING")
    server = await start_api(settings, port=0)
    token = await create_token(redis, TENANT, Scope.ADMIN)
    out: dict[str, Any] = {"sims": args.sims, "singles_a_round": args.singles,
                           "setup_s": round(setup_s, 1), "load": os.getloadavg(),
                           "rounds": []}  # fmt: skip
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=3600,
        ) as http:
            for n in range(args.rounds):
                row: dict[str, Any] = {}
                for to in ("suspended", "active"):
                    async with Phase(args.redis_url, admin) as bulk:
                        r = await http.post(
                            "/v1/subscriptions/bulk/state", json={"state": to, "imsis": imsis}
                        )
                    assert r.status_code == 200, r.text[:500]
                    assert r.json()["counts"]["moved"] == args.sims, r.json()["counts"]
                    row[f"bulk_{to}"] = bulk.view()
                sample = imsis[n * args.singles : (n + 1) * args.singles]
                for to in ("suspended", "active"):
                    async with Phase(args.redis_url, admin) as single:
                        for imsi in sample:
                            r = await http.post(
                                f"/v1/subscriptions/{imsi}/state", json={"state": to}
                            )
                            assert r.status_code == 200, r.text[:500]
                    per_move = round(single.seconds * 1000 / len(sample), 2)
                    row[f"single_{to}"] = {**single.view(), "per_move_ms": per_move}
                out["rounds"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        await server.stop()
        for key, value in saved.items():
            await admin.config_set(key, value)
        await admin.aclose()
        await redis.aclose()
    bulk_s = [r[f"bulk_{to}"]["s"] for r in out["rounds"] for to in ("suspended", "active")]
    per_move = [r[f"single_{to}"]["per_move_ms"] for r in out["rounds"]
                for to in ("suspended", "active")]  # fmt: skip
    singles_s = statistics.median(per_move) * args.sims / 1000
    out["summary"] = {
        "bulk_s_median": round(statistics.median(bulk_s), 2),
        "single_move_ms_median": round(statistics.median(per_move), 2),
        f"{args.sims}_single_moves_s": round(singles_s, 1),
        "ratio_singles_to_bulk": round(singles_s / statistics.median(bulk_s), 1),
        "bulk_slowest_us_max": max(r[f"bulk_{t}"]["slowest_us"] for r in out["rounds"]
                                   for t in ("suspended", "active")),
        "single_slowest_us_max": max(r[f"single_{t}"]["slowest_us"] for r in out["rounds"]
                                     for t in ("suspended", "active")),
        "load_after": os.getloadavg(),
    }  # fmt: skip
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
