"""Many tenants on one node (issue 13): 100 tenants, 1,000,000 SIMs on one ``ocs serve``.

One run, in a Redis database of its own (flushed first):

1. provision: ``--tenants`` tenants, each the demo's product catalogue (tenant, zones, bands,
   plans) under its own id, one account and one prepaid pool, and its SIMs as SIM items
   (IMSI, MSISDN, ICCID, one twin on the pool), written through
   ``TenantCatalogues.change`` (the path of the API, CRM import and ``ocs catalog apply``:
   identities claimed, catalogue compiled, state, payers and indexes written). Tenant
   ``t000`` has ``--big`` SIMs, the others share the rest. SIM ``j`` of tenant ``t`` has the
   IMSI ``BASE + j * tenants + t``, so a load generator walking consecutive IMSIs visits
   every tenant in turn;
   ``--reuse`` skips this step and uses the tenants an earlier run left in the database;
2. memory: Redis ``INFO memory`` before and after, and ``MEMORY USAGE`` of every key,
   summed by key family; then ``ocs serve`` is started (one worker) and its RSS read from
   ``/proc`` once it listens (every tenant compiled);
3. anchor: ``tools/loadgen.py`` open loop at ``--rate`` CCR/s over SIMs of every tenant for
   ``--baseline`` seconds, nothing else running;
4. the same load for ``--duration`` seconds while tenant ``t000`` (``--big`` SIMs) is
   re-applied ``--reapply-at`` seconds into the window (every SIM's properties changed, by a
   child process through ``TenantCatalogues.change``, which broadcasts the refresh as the
   API does): the server compiles the new catalogue and swaps it in while it charges.

Prints one JSON document: provisioning time, memory per SIM (Redis and server RSS), both
runs' p50/p99/max and Result-Codes with a per-second timeline, the re-apply's own time, and
the load average. Target: p99 <= 5 ms at 2,000 CCR/s during the re-apply.

    .venv/bin/python tools/bench_tenants.py --redis-url redis://127.0.0.1:6398/0
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE_IMSI = 262_100_000_000_000
BASE_MSISDN = 491_500_000_000
BASE_ICCID = 89_490_000_000_000_000_000
PLAN_FROM = "2024-01-01T00:00:00+01:00"
DEMO_FILES = ("tenant.yaml", "zones.yaml", "bands.yaml", "plans.yaml")


def tenant_name(t: int) -> str:
    return f"t{t:03d}"


def sizes(tenants: int, sims: int, big: int) -> list[int]:
    """SIMs per tenant: the first has ``big``, the others share the rest evenly."""
    rest, others = sims - big, tenants - 1
    return [big] + [rest // others + (1 if i < rest % others else 0) for i in range(others)]


def product_documents(tenant: str) -> dict[str, Any]:
    """The demo's product catalogue under ``tenant``'s id, one account and one pool."""
    import yaml

    from ocs.rating.loader import _StrictLoader

    folder = ROOT / "policies" / "demo"
    docs = {
        name: yaml.load((folder / name).read_text(), Loader=_StrictLoader) for name in DEMO_FILES
    }
    docs["tenant.yaml"]["tenant"].update(id=tenant, name=f"Tenant {tenant}")
    docs["fleet.yaml"] = {
        "accounts": [
            {
                "id": "fleet",
                "name": "Fleet",
                "kind": "enterprise",
                "payment": "prepaid",
                "currency": "EUR",
                "tax_profile": "de-vat",
                "accounting_group": "iot",
                "bill_day": 1,
            }
        ],
        "pools": [
            {
                "id": "fleet-pool",
                "account": "fleet",
                "kind": "static",
                "payment": "prepaid",
                "service": "data",
                "unit": "bytes",
                "size": 10**12,
            }
        ],
    }
    return docs


def sim_items(t: int, tenants: int, count: int, sensors: int = 1) -> dict[str, Any]:
    out = {}
    for j in range(count):
        n = j * tenants + t
        imsi = str(BASE_IMSI + n)
        out[imsi] = {
            "imsi": imsi,
            "msisdn": str(BASE_MSISDN + n),
            "iccid": str(BASE_ICCID + n),
            "account": "fleet",
            "twins": [
                {
                    "id": "data",
                    "payer": {"kind": "prepaid_pool", "id": "fleet-pool"},
                    "plans": [{"plan": "iot-pool", "from": PLAN_FROM}],
                    "properties": {"sensors": sensors},
                }
            ],
        }
    return out


# -- provisioning (in this process) and the re-apply (a child process) -------------------------
async def _catalogues(url: str, data_dir: Path) -> tuple[Any, Any]:
    from ocs.api.asgi import build_state
    from ocs.config import Settings
    from ocs.redis_client import client_for_url

    client = client_for_url(url, timeout=120)
    return client, build_state(Settings(redis_url=url, data_dir=data_dir), client).catalogues


async def provision(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    from ocs.provisioning.catalogues import State, merge_documents

    client, catalogues = await _catalogues(args.redis_url, data_dir)
    start = time.perf_counter()
    cpu = time.process_time()
    try:
        for t, count in enumerate(sizes(args.tenants, args.sims, args.big)):
            tenant = tenant_name(t)
            docs = product_documents(tenant)
            items = sim_items(t, args.tenants, count)

            def mutate(state: State, docs: Any = docs, items: Any = items, tenant: str = tenant):
                merged = merge_documents(state, docs, tenant)
                merged["sims"] = items  # validated by the compile of the change
                state.clear()
                state.update(merged)

            await catalogues.change(tenant, mutate, source="bench_tenants")
            catalogues._compiled.clear()  # this process needs none of them afterwards
            gc.collect()
    finally:
        await client.aclose()
    return {
        "wall_s": round(time.perf_counter() - start, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
    }


async def reapply(args: argparse.Namespace) -> dict[str, Any]:
    """Re-apply tenant t000: every SIM's properties change (a full recompile everywhere)."""
    client, catalogues = await _catalogues(args.redis_url, Path(args.data_dir))
    start = time.perf_counter()
    try:
        items = sim_items(0, args.tenants, args.big, sensors=2 + int(time.time()) % 1000)

        def mutate(state: dict[str, Any]) -> None:
            state["sims"] = items

        applied = await catalogues.change(tenant_name(0), mutate, source="bench_tenants re-apply")
    finally:
        await client.aclose()
    return {
        "tenant": tenant_name(0),
        "sims": args.big,
        "revision": applied.revision,
        "wall_s": round(time.perf_counter() - start, 2),
        "cpu_s": round(time.process_time(), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


# -- measurements ------------------------------------------------------------------------------
def redis_memory(url: str) -> dict[str, Any]:
    from redis import Redis

    client = Redis.from_url(url)
    try:
        info: Any = client.info("memory")
        return {"used_memory": int(info["used_memory"]), "rss": int(info["used_memory_rss"])}
    finally:
        client.close()


def key_families(url: str) -> dict[str, dict[str, int]]:
    """``MEMORY USAGE`` (exact: ``SAMPLES 0``) of every key, summed by family (tenant ids
    and payer ids replaced by placeholders)."""
    from redis import Redis

    client = Redis.from_url(url)
    out: dict[str, dict[str, int]] = {}
    try:
        for key in client.scan_iter(count=1000):
            name = re.sub(r"t\d{3}", "T", key.decode(errors="replace"))
            usage: Any = client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
            family = out.setdefault(name, {"keys": 0, "bytes": 0})
            family["keys"] += 1
            family["bytes"] += int(usage or 0)
    finally:
        client.close()
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["bytes"]))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def taskset(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


class Server:
    """``ocs serve`` as a child process; its output is kept (the reload log lines)."""

    def __init__(self, cmd: list[str], env: dict[str, str], timeout: float) -> None:
        self.lines: list[tuple[float, str]] = []
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append((time.perf_counter(), line.rstrip()))
            if "listening on" in line:
                self.start_s = round(time.perf_counter() - started, 1)
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.proc.kill()
        said = "\n".join(text for _, text in self.lines[-20:])
        raise SystemExit(f"server did not start: {' '.join(cmd)}\n{said}")

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.perf_counter(), line.rstrip()))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def loadgen_cmd(args: argparse.Namespace, port: int, duration: float, run_id: int) -> list[str]:
    per_tenant = min(sizes(args.tenants, args.sims, args.big))
    return [
        *taskset(args.loadgen_cpu),
        *(sys.executable, str(ROOT / "tools" / "loadgen.py"), "--port", str(port)),
        *("--rate", str(args.rate), "--window", "1000000", "--max-open", str(args.max_open)),
        *("--updates", str(args.updates), "--quota", "100000"),
        *("--warmup", str(args.warmup), "--duration", str(duration)),
        *("--imsi-first", str(BASE_IMSI), "--imsi-count", str(per_tenant * args.tenants)),
        *("--run-id", str(run_id), "--json-line", "--timeline"),
    ]


def paced(
    args: argparse.Namespace, server: Server, duration: float, run_id: int, during: bool
) -> dict[str, Any]:
    cpu_before = cpu_seconds(server.proc.pid)
    started = time.perf_counter()
    gen = subprocess.Popen(
        loadgen_cmd(args, server.port, duration, run_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: dict[str, Any] = {}
    if during:
        time.sleep(args.warmup + args.reapply_at)
        at = time.perf_counter()
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                *("--role", "reapply", "--redis-url", args.redis_url),
                *("--data-dir", args.data_dir, "--tenants", str(args.tenants)),
                *("--big", str(args.big)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            gen.kill()
            raise SystemExit(f"re-apply failed:\n{child.stderr[-3000:]}")
        out["reapply"] = json.loads(child.stdout.strip().splitlines()[-1])
        out["reapply"]["started_at_s"] = round(at - started - args.warmup, 2)
        out["reapply"]["done_at_s"] = round(time.perf_counter() - started - args.warmup, 2)
    stdout, stderr = gen.communicate(timeout=600)
    if gen.returncode != 0:  # recorded, and the run goes on (the other phase, the memory)
        out["loadgen_failed"] = stderr.strip().splitlines()[-1:]
        out["server_log"] = [t for _, t in server.lines if "loaded:" not in t][-20:]
        return out
    result = json.loads(stdout.strip().splitlines()[-1])
    out.update(
        offered_per_s=args.rate,
        answered_per_s=result["throughput_per_s"],
        latency_ms=result["latency_ms"],
        latency_ms_by_type=result["latency_ms_by_type"],
        result_codes=result["result_codes"],
        sessions=result["sessions"],
        server_cpu_us_per_ccr=round(
            (cpu_seconds(server.proc.pid) - cpu_before) / max(1, result["sent_total"]) * 1e6, 1
        ),
        timeline=result["timeline"],
    )
    if during:
        reload = [
            (round(at - started - args.warmup, 2), text)
            for at, text in server.lines
            if "tenant t000 loaded" in text and at >= started
        ]
        out["server_reload"] = reload
    return out


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    loadavg = [os.getloadavg()[0]]
    two_cores = (os.cpu_count() or 1) >= 2
    args.loadgen_cpu, server_cpu = (0, 1) if two_cores else (None, None)
    from redis import Redis

    if args.reuse:  # the tenants of an earlier run (same --tenants/--sims/--big) are there
        before, provisioned = {"used_memory": args.reuse_before, "rss": 0}, {"reused": True}
    else:
        flush = Redis.from_url(args.redis_url)
        flush.flushdb()
        flush.close()
        before = redis_memory(args.redis_url)
        provisioned = asyncio.run(provision(args, Path(args.data_dir)))
    loadavg.append(os.getloadavg()[0])
    after = redis_memory(args.redis_url)
    families = key_families(args.redis_url)
    port = free_port()
    env = dict(os.environ, OCS_REDIS_URL=args.redis_url, OCS_DATA_DIR=args.data_dir)
    server = Server(
        [
            *taskset(server_cpu),
            *(str(Path(sys.executable).parent / "ocs"), "serve", "--port", str(port)),
            *("--log-level", "INFO", "--accept-unknown-peers"),
            *("--http-port", "0", "--metrics-port", "0"),  # Diameter only
        ],
        env,
        timeout=args.start_timeout,
    )
    server.port = port  # type: ignore[attr-defined]
    try:
        rss_started = rss_mb(server.proc.pid)
        base = (int(time.time() * 10) % 10**6) * 1000
        anchor = paced(args, server, args.baseline, base, during=False)
        loadavg.append(os.getloadavg()[0])
        during = paced(args, server, args.duration, base + 1, during=True)
        loadavg.append(os.getloadavg()[0])
        rss_after = rss_mb(server.proc.pid)
    finally:
        server.stop()
    sims = args.sims
    used = after["used_memory"] - before["used_memory"]
    return {
        "benchmark": "tenants",
        "tenants": args.tenants,
        "sims": sims,
        "big_tenant_sims": args.big,
        "provision": provisioned,
        "redis_memory": {
            "before": before,
            "after": after,
            "used_bytes_per_sim": round(used / sims, 1),
            "by_key_family": families,
        },
        "server": {
            "start_s": server.start_s,
            "rss_mb_started": rss_started,
            "rss_mb_after": rss_after,
            "rss_bytes_per_sim": round(rss_started * 2**20 / sims),
        },
        "anchor_no_reapply": anchor,
        "during_reapply": during,
        "ratio_p99_during_vs_anchor": round(
            during["latency_ms"]["p99"] / max(1e-3, anchor["latency_ms"]["p99"]), 2
        )
        if "latency_ms" in during and "latency_ms" in anchor
        else None,
        "target": {
            "p99_ms": 5.0,
            "met": "latency_ms" in during and during["latency_ms"]["p99"] <= 5.0,
        },
        "load": {
            "rate": args.rate,
            "updates_per_session": args.updates,
            "max_open": args.max_open,
            "warmup_s": args.warmup,
            "baseline_s": args.baseline,
            "duration_s": args.duration,
            "reapply_at_s": args.reapply_at,
        },
        "machine": {
            "nproc": os.cpu_count(),
            "pinning": "loadgen cpu0, server cpu1" if two_cores else "none",
            "loadavg_1min": loadavg,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["reapply"])
    parser.add_argument("--redis-url", required=True, help="a Redis database: flushed!")
    parser.add_argument("--data-dir", default="", help="catalogue folders (default: a temp dir)")
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--sims", type=int, default=1_000_000, help="SIMs of all tenants")
    parser.add_argument("--big", type=int, default=100_000, help="SIMs of the re-applied one")
    parser.add_argument("--rate", type=float, default=2000.0, help="CCR/s offered")
    parser.add_argument("--updates", type=int, default=8, help="CCR-U per session")
    parser.add_argument("--max-open", type=int, default=256)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--baseline", type=float, default=15.0, help="seconds, no re-apply")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds, with re-apply")
    parser.add_argument("--reapply-at", type=float, default=3.0)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the tenants an earlier run provisioned in this database (no flush)",
    )
    parser.add_argument(
        "--reuse-before", type=int, default=0, help="with --reuse: used_memory before it"
    )
    parser.add_argument("--start-timeout", type=float, default=1200.0, help="ocs serve start")
    args = parser.parse_args()
    if args.role == "reapply":
        print(json.dumps(asyncio.run(reapply(args))), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="bench-tenants-") as tmp:
        args.data_dir = args.data_dir or tmp
        print(json.dumps(one_run(args), indent=1), flush=True)


if __name__ == "__main__":
    main()
