"""Benchmark of ``ocs import``: 100,000 subscriptions (and their accounts) into a real Redis.

Generates the files with tools/gen_crm.py, applies the demo catalogue to tenant ``demo``
in a flushed Redis database, then times each run of ``ocs import`` as a child process:

1. accounts, 2. subscriptions (all created), 3. the same file again (all unchanged: no write),
4. an update file (every 10th row's properties, every 20th row's plan changed).

For each run it prints rows/s, wall seconds, the CPU seconds of the ``ocs`` process (user +
system, from ``getrusage(RUSAGE_CHILDREN)``), the CPU seconds Redis spent (``INFO cpu``),
peak memory, and the load average, as one JSON document. ``--profile FILE`` also runs the
subscription import in this process under cProfile (top functions by cumulative time).

    .venv/bin/python tools/bench_import.py --redis-url redis://127.0.0.1:6379/9
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocs.api.asgi import build_state  # noqa: E402
from ocs.config import Settings  # noqa: E402
from ocs.provisioning.catalogues import State, merge_documents  # noqa: E402
from ocs.redis_client import client_for_url  # noqa: E402
from tools.gen_crm import generate  # noqa: E402

TENANT = "demo"


def demo_documents() -> dict[str, Any]:
    import yaml

    from ocs.rating.loader import _StrictLoader

    folder = ROOT / "policies" / "demo"
    return {
        p.name: yaml.load(p.read_text(), Loader=_StrictLoader)
        for p in sorted(folder.glob("*.yaml"))
    }


async def _seed(url: str, data_dir: Path) -> None:
    client = client_for_url(url, timeout=60)
    try:
        await client.flushdb()
        api = build_state(Settings(redis_url=url, data_dir=data_dir), client)

        def mutate(state: State) -> None:
            merged = merge_documents(state, demo_documents(), TENANT)
            state.clear()
            state.update(merged)

        await api.catalogues.change(TENANT, mutate, source="bench_import seed")
    finally:
        await client.aclose()


async def _redis_cpu(url: str) -> float:
    client = client_for_url(url, timeout=60)
    try:
        info = await client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        await client.aclose()


def _run(url: str, data_dir: Path, kind: str, path: Path, rows: int, batch: int) -> dict[str, Any]:
    command = [
        *(sys.executable, "-m", "ocs.cli", "import", kind, str(path)),
        *("--tenant", TENANT, "--redis-url", url, "--data-dir", str(data_dir)),
        *("--batch", str(batch), "--report", str(data_dir / "report.json")),
    ]
    redis_before = asyncio.run(_redis_cpu(url))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    redis_cpu = asyncio.run(_redis_cpu(url)) - redis_before
    if done.returncode not in (0, 1):
        raise SystemExit(f"ocs import {kind} failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "run": kind,
        "file": path.name,
        "rows": rows,
        "summary": done.stdout.strip(),
        "phases_cpu_s": json.loads((data_dir / "report.json").read_text())["cpu_s"],
        "wall_s": round(wall, 2),
        "rows_per_s": round(rows / wall),
        "cpu_s": round(cpu, 2),
        "cpu_us_per_row": round(cpu / rows * 1e6, 1),
        "redis_cpu_s": round(redis_cpu, 2),
        "peak_rss_mb": round(after.ru_maxrss / 1024),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def _profile(url: str, data_dir: Path, path: Path, out: Path, batch: int) -> None:
    """The subscription import again (as updates of the same rows) under cProfile."""
    from ocs.crm.importer import KINDS, run_import
    from ocs.crm.readers import decode, read_rows

    text = decode(path.name, path.read_bytes())

    async def go() -> None:
        client = client_for_url(url, timeout=120)
        try:
            api = build_state(Settings(redis_url=url, data_dir=data_dir), client)
            rows = read_rows(path.name, text, "csv", KINDS["subscriptions"])
            report = await run_import(api, TENANT, "subscriptions", path.name, rows, batch=batch)
            print(report.summary(), file=sys.stderr)
        finally:
            await client.aclose()

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(go())
    profiler.disable()
    stats = io.StringIO()
    pstats.Stats(profiler, stream=stats).sort_stats("cumulative").print_stats(40)
    out.write_text(stats.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True, help="a Redis database to flush and use")
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=100_000, help="rows per state write")
    parser.add_argument("--profile", type=Path, help="write a cProfile of an update run here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        acc, subs = generate(work / "files", args.subscriptions, args.accounts)
        _, updates = generate(work / "updates", args.subscriptions, args.accounts, variant=10)
        n_accounts = sum(1 for _ in acc.open()) - 1
        asyncio.run(_seed(args.redis_url, data_dir))
        n = args.subscriptions
        runs = [
            _run(args.redis_url, data_dir, "accounts", acc, n_accounts, args.batch),
            _run(args.redis_url, data_dir, "subscriptions", subs, n, args.batch),
            _run(args.redis_url, data_dir, "subscriptions", subs, n, args.batch),
            _run(args.redis_url, data_dir, "subscriptions", updates, n, args.batch),
        ]
        for run, label in zip(runs, ("accounts", "create", "re-import", "update"), strict=True):
            run["run"] = label
        if args.profile is not None:
            _, again = generate(work / "again", args.subscriptions, args.accounts, variant=7)
            _profile(args.redis_url, data_dir, again, args.profile, args.batch)
    print(json.dumps({"batch": args.batch, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
