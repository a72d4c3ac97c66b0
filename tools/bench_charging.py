"""Charging benchmark: `ocs serve` (one worker, real Redis reservations, rated records) against a
python-diameter 0.9 ``Node`` answering a static CCA, driven by the same load generator.

One run, one machine. For each system: start it (a subprocess), then run ``tools/loadgen.py``
(a subprocess) twice:

* phase 1, as fast as possible: sessions of CCR-I, ``--updates`` CCR-U, CCR-T with
  ``--window`` requests outstanding; CCR-U/s and CCR/s over ``--duration`` seconds after
  ``--warmup``;
* phase 2, open loop at ``--rate`` CCR/s offered for ``--duration`` seconds: p50/p99 from the
  scheduled send time, with at most ``--max-open`` sessions open (so the mix offered stays
  CCR-I : ``--updates`` CCR-U : CCR-T however late the answers are).

CPU per request is reported for the server (``/proc``), the load generator (its own
``process_time``) and Redis (``INFO cpu``, the whole server: use a Redis of your own).

`ocs serve` runs on Redis at ``--redis-url`` (a spare database, flushed first) with
``policies/demo`` applied by ``ocs catalog apply``. After its phases the balance invariant of
the shared pool is checked: credited = available + committed (the sum of the pool's stream
records) + reserved. On two or more cores the load generator is pinned to CPU 0 and the
server to CPU 1 (Redis is not pinned). Prints one JSON line per run, and with ``--runs N``
a last line with the median run (by ocs CCR-U/s).

    .venv/bin/python tools/bench_charging.py --runs 3

``--levels``: the cost of a multi-level (B2B2B) reservation. The anchor is the same `ocs
serve` with one level: the fleet's SIMs on ``acme-pool``. The other run puts the fleet's
account ``acme-iot`` under a prepaid reseller (``bench-reseller``, wholesale plan
``wholesale-iot``, paid from its prepaid pool ``bench-reseller-pool``), so every grant is
held, and every CCR-U committed, at two levels in the one ``charge.lua`` call. Both in one
run, same load, the two-level run second; the invariant is checked on both pools. Then the
script alone (``script_cost``): Redis's own time per ``charge.lua`` call, one level against
two, alternating rounds (the steadier figure on a loaded machine).

    .venv/bin/python tools/bench_charging.py --levels --redis-url redis://127.0.0.1:6379/9
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LOADGEN_REALM = "local"
POOL = "demo:prepaid_pool:acme-pool"
POOL_BUCKET = "acme-pool"
GRANTED_OCTETS = 100_000


# -- the anchor: python-diameter answering a static CCA ----------------------------------------
def run_anchor(port: int, peers: list[str]) -> None:
    """A python-diameter 0.9 Node whose CCR handler answers a static CCA in the node's own
    thread (the fastest way it offers; see tools/bench_responder.py). ``peers``: the load
    generators' Origin-Hosts (python-diameter accepts configured peers only)."""
    from diameter.message.avp.grouped import GrantedServiceUnit, MultipleServicesCreditControl
    from diameter.message.constants import APP_DIAMETER_CREDIT_CONTROL_APPLICATION
    from diameter.node import Node
    from diameter.node.application import Application as PdApplication

    class StaticCca(PdApplication):  # type: ignore[misc]
        def handle_request(self, message: Any) -> None:
            answer = self.generate_answer(message, result_code=2001)
            answer.cc_request_type = message.cc_request_type
            answer.cc_request_number = message.cc_request_number
            answer.multiple_services_credit_control = [
                MultipleServicesCreditControl(
                    granted_service_unit=GrantedServiceUnit(cc_total_octets=GRANTED_OCTETS),
                    rating_group=10,
                    result_code=2001,
                )
            ]
            self.send_answer(answer)

    node = Node("anchor.bench", "bench", ip_addresses=["127.0.0.1"], tcp_port=port)
    configured = [node.add_peer(f"aaa://{host}", LOADGEN_REALM) for host in peers]
    node.add_application(
        StaticCca(APP_DIAMETER_CREDIT_CONTROL_APPLICATION, is_auth_application=True), configured
    )
    node.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(f"listening on 127.0.0.1:{port}", flush=True)
    done.wait()
    os._exit(0)  # python-diameter's stop() waits for its wakeup interval; nothing to flush


# -- orchestration ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def taskset(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def start_server(cmd: list[str], env: dict[str, str], wait: float = 60.0) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + wait
    said: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "listening on" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc
        said.append(line)
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(cmd)}\n{''.join(said[-20:])}")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def loadgen(port: int, args: argparse.Namespace, cpu: int | None, *extra: str) -> dict[str, Any]:
    """One load generator process, or with ``--load-procs N`` N of them at once (each with its
    own Session-Ids and its own slice of the demo's 1,000 pool SIMs), summed: a single Python
    generator and its wake-ups can pace the run before the server is busy."""
    procs = max(1, args.load_procs)
    base = run_base(args, paced="--rate" in extra)
    if procs == 1:
        return _loadgen_one(port, args, cpu, *extra, "--run-id", str(base))
    share = 1000 // procs
    split = list(extra)  # an offered rate and the open-session cap are shared, not multiplied
    for flag, kind in (("--rate", float), ("--max-open", int)):
        if flag in split:
            at = split.index(flag) + 1
            split[at] = str(kind(split[at]) / procs if kind is float else int(split[at]) // procs)
    extra = tuple(split)
    cmds = [
        _loadgen_cmd(
            port,
            args,
            cpu,
            *extra,
            *("--imsi-first", str(262010000000000 + i * share), "--imsi-count", str(share)),
            *("--run-id", str(base + i)),
        )
        for i in range(procs)
    ]
    running = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds
    ]
    results = []
    for proc in running:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"loadgen failed:\n{err}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return _sum_loadgen(results)


def run_base(args: argparse.Namespace, *, paced: bool) -> int:
    """The first ``--run-id`` of a phase's load generators (their Origin-Host is
    ``loadgen-<run id>.local``, which the anchor must know)."""
    return int(args.run_base) + (500 if paced else 0)


def _sum_loadgen(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates and counts summed; latency percentiles of the worst process (not a merge)."""
    summed: dict[str, Any] = {"load_procs": len(results)}
    summed["throughput_per_s"] = round(sum(r["throughput_per_s"] for r in results), 1)
    by_type: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for r in results:
        by_type.update(r["by_type_per_s"])
        codes.update(r["result_codes"])
    summed["by_type_per_s"] = {k: round(v, 1) for k, v in by_type.items()}
    summed["result_codes"] = dict(codes)
    summed["sent_total"] = sum(r["sent_total"] for r in results)
    summed["sessions"] = sum(r.get("sessions", 0) for r in results)
    worst = max(results, key=lambda r: r["latency_ms"]["p99"])
    summed["latency_ms"] = worst["latency_ms"]
    summed["latency_ms_by_type"] = worst.get("latency_ms_by_type", {})
    summed["generator_cpu_us_per_request"] = round(
        sum(r.get("generator_cpu_us_per_request", 0) * r["sent_total"] for r in results)
        / max(1, summed["sent_total"]),
        1,
    )
    return summed


def _loadgen_one(
    port: int, args: argparse.Namespace, cpu: int | None, *extra: str
) -> dict[str, Any]:
    out = subprocess.run(
        _loadgen_cmd(port, args, cpu, *extra),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _loadgen_cmd(port: int, args: argparse.Namespace, cpu: int | None, *extra: str) -> list[str]:
    return [
        *taskset(cpu),
        sys.executable,
        str(ROOT / "tools" / "loadgen.py"),
        "--port",
        str(port),
        "--updates",
        str(args.updates),
        "--quota",
        str(args.quota),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(args.duration),
        "--json-line",
        *extra,
    ]


def redis_cpu(url: str) -> float:
    from redis import Redis

    client = Redis.from_url(url)
    try:
        info: Any = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


def evalsha_stats(url: str, reset: bool = False) -> dict[str, float]:
    """``cmdstat_evalsha`` of ``INFO commandstats`` (calls, usec_per_call) since the last
    reset; ``reset`` starts counting anew (CONFIG RESETSTAT: a Redis of your own)."""
    from redis import Redis

    client = Redis.from_url(url)
    try:
        if reset:
            client.config_resetstat()
            return {}
        entry: Any = client.info("commandstats").get("cmdstat_evalsha", {})
        return {
            "calls": int(entry.get("calls", 0)),
            "usec_per_call": float(entry.get("usec_per_call", 0.0)),
        }
    finally:
        client.close()


def measure(
    port: int, pid: int, args: argparse.Namespace, cpu: int | None, redis_url: str | None
) -> dict[str, Any]:
    before = cpu_seconds(pid)
    redis_before = redis_cpu(redis_url) if redis_url else 0.0
    if redis_url:
        evalsha_stats(redis_url, reset=True)
    fast = loadgen(port, args, cpu, "--window", str(args.window))
    middle = cpu_seconds(pid)
    redis_middle = redis_cpu(redis_url) if redis_url else 0.0
    fast_scripts = evalsha_stats(redis_url) if redis_url else {}
    if redis_url:
        evalsha_stats(redis_url, reset=True)
    paced = loadgen(
        port,
        args,
        cpu,
        "--rate",
        str(args.rate),
        "--window",
        "1000000",
        "--max-open",
        str(args.max_open),
    )
    after = cpu_seconds(pid)
    out: dict[str, Any] = {
        "ccr_u_per_s": fast["by_type_per_s"].get("update", 0.0),
        "ccr_per_s": fast["throughput_per_s"],
        "fast_latency_ms": fast["latency_ms"],
        "fast_result_codes": fast["result_codes"],
        "paced_offered_per_s": args.rate,
        "paced_answered_per_s": paced["throughput_per_s"],
        "paced_p50_ms": paced["latency_ms"]["p50"],
        "paced_p99_ms": paced["latency_ms"]["p99"],
        "paced_max_ms": paced["latency_ms"]["max"],
        "paced_result_codes": paced["result_codes"],
        "paced_latency_ms_by_type": paced["latency_ms_by_type"],
        "paced_sessions": paced["sessions"],
        "loadgen_cpu_us_per_request": fast.get("generator_cpu_us_per_request"),
        "paced_loadgen_cpu_us_per_request": paced.get("generator_cpu_us_per_request"),
    }
    sent = max(1, fast["sent_total"])
    if before is not None and middle is not None:
        out["server_cpu_us_per_ccr"] = round((middle - before) / sent * 1e6, 1)
    if middle is not None and after is not None:
        paced_sent = max(1, paced["sent_total"])
        out["paced_server_cpu_us_per_ccr"] = round((after - middle) / paced_sent * 1e6, 1)
    if redis_url:
        out["redis_cpu_us_per_ccr"] = round((redis_middle - redis_before) / sent * 1e6, 1)
        paced_scripts = evalsha_stats(redis_url)
        out["evalsha_usec_per_call"] = fast_scripts.get("usec_per_call")
        out["paced_evalsha_usec_per_call"] = paced_scripts.get("usec_per_call")
        out["evalsha_calls_per_ccr"] = round(fast_scripts.get("calls", 0) / sent, 3)
    return out


def redis_version(url: str) -> str:
    from redis import Redis

    client = Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def flush(url: str) -> None:
    from redis import Redis

    client = Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def pool_invariant(
    url: str, payer: str = POOL, bucket: str = POOL_BUCKET, kind: str = "usage"
) -> dict[str, Any]:
    """credited = available + committed (sum of the stream's records) + reserved, on the pool
    (``kind``: the records that commit on it; ``level`` for an upper level)."""
    from redis import Redis

    from ocs.balance.keys import PAYER_SLOTS, PayerKeys

    client = Redis.from_url(url, decode_responses=True)
    try:
        k = PayerKeys(payer, str(client.hget(PAYER_SLOTS, payer) or ""))
        bal: Any = client.hgetall(k.balances)
        committed = 0
        records = 0
        last = "-"
        while True:
            chunk: Any = client.xrange(k.stream, min=last, count=10_000)
            if last != "-":
                chunk = chunk[1:]
            if not chunk:
                break
            for _, fields in chunk:
                if fields.get("kind") == kind:
                    records += 1
                    for bid, amount in json.loads(fields["alloc"]):
                        if bid == bucket:
                            committed += int(amount)
            last = chunk[-1][0]
        reservations = client.hlen(k.reservations)
    finally:
        client.close()
    credited = int(bal.get(f"{bucket}:i", 0))
    available = int(bal.get(f"{bucket}:a", 0))
    reserved = int(bal.get(f"{bucket}:r", 0))
    return {
        "payer": payer,
        "initial": credited,
        "available": available,
        "committed": committed,
        "reserved": reserved,
        "used_counter": int(bal.get(f"{bucket}:u", 0)),
        "usage_records": records,
        "live_reservations": reservations,
        "holds": credited == available + committed + reserved,
    }


RESELLER = "demo:prepaid_pool:bench-reseller-pool"


def reseller_catalogue(folder: Path) -> Path:
    """``policies/demo`` with the fleet's account under a prepaid reseller (``--levels``)."""
    import shutil

    import yaml

    shutil.copytree(ROOT / "policies" / "demo", folder)
    path = folder / "subscribers.yaml"
    doc = yaml.safe_load(path.read_text())
    for account in doc["accounts"]:
        if account["id"] == "acme-iot":
            account["parent"] = "bench-reseller"
    doc["accounts"].append(
        {
            "id": "bench-reseller",
            "name": "Bench Reseller",
            "kind": "reseller",
            "payment": "prepaid",
            "currency": "EUR",
            "tax_profile": "de-vat",
            "accounting_group": "wholesale",
            "bill_day": 1,
            "plans": [{"plan": "wholesale-iot", "from": "2024-01-01T00:00:00+01:00"}],
            "payer": {"kind": "prepaid_pool", "id": "bench-reseller-pool"},
        }
    )
    doc["pools"].append(
        {
            "id": "bench-reseller-pool",
            "account": "bench-reseller",
            "kind": "static",
            "payment": "prepaid",
            "service": "data",
            "unit": "bytes",
            "size": 10**15,
        }
    )
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def serve_and_measure(
    args: argparse.Namespace,
    catalogue: Path,
    gen_cpu: int | None,
    server_cpu: int | None,
    tree: Path | None = None,
) -> dict[str, Any]:
    """Flush, apply ``catalogue``, run `ocs serve` and measure it (both phases). ``tree``:
    another work tree whose `ocs serve` it is (``--compare``): its own ``.venv/bin/ocs``,
    else its code on this tree's venv (same locked dependencies)."""
    env = dict(os.environ, OCS_REDIS_URL=args.redis_url)
    ocs = [str(Path(sys.executable).parent / "ocs")]
    if tree is not None and (tree / ".venv" / "bin" / "ocs").exists():
        ocs = [str(tree / ".venv" / "bin" / "ocs")]
    elif tree is not None:  # a tree without a venv of its own: its code on this one's
        ocs = [sys.executable, "-m", "ocs.cli"]
        env["PYTHONPATH"] = str(tree)
    flush(args.redis_url)
    subprocess.run(
        [*ocs, "catalog", "apply", str(catalogue)], env=env, check=True, capture_output=True
    )
    port = free_port()
    server = start_server(
        [
            *taskset(server_cpu),
            *(*ocs, "serve", "--port", str(port), "--log-level", "WARNING"),
            *_peer_flags(ocs, env),  # loadgen connects as loadgen-<run>.local
            *("--http-port", "0", "--metrics-port", "0"),  # Diameter only: 8080 may be taken
        ],
        env,
    )
    try:
        return measure(port, server.pid, args, gen_cpu, args.redis_url)
    finally:
        stop(server)


def _peer_flags(ocs: list[str], env: dict[str, str]) -> list[str]:
    """``--accept-unknown-peers`` where `ocs serve` has it (a tree of before the peer
    checks, ``--compare``, serves any peer and has no such flag)."""
    done = subprocess.run(
        [*ocs, "serve", "--help"], env=env, capture_output=True, text=True, check=False
    )
    return ["--accept-unknown-peers"] if "--accept-unknown-peers" in done.stdout else []


SCRIPT_CONTEXT = json.dumps(
    {
        "session": "loadgen-1.local;1;1",
        "n": 1,
        "rg": 10,
        "imsi": "262010000000001",
        "msisdn": "491700000001",
        "twin": "data",
        "subscription": "262010000000001/data",
        "account": "acme-iot",
        "service": "data",
        "levels": [
            {"level": i, "buyer": "acme-iot", "seller": None, "payer": "prepaid_pool:acme-pool",
             "plan": "iot-pool", "zone": "home", "band": "any", "currency": "EUR", "amount": 0}
            for i in range(2)
        ],
    },
    separators=(",", ":"),
)  # fmt: skip


def script_cost(url: str, rounds: int, calls: int) -> dict[str, Any]:
    """Redis time of one ``charge.lua`` call (``INFO commandstats``, ``cmdstat_evalsha``
    usec_per_call): a CCR-U (commit 1,000 units of the last grant, reserve 1,000 more) on a
    prepaid pool alone, and on a pool under a prepaid reseller pool (both held), rounds
    alternating. The server's own time per call: what a loaded client machine does not move."""
    import asyncio

    from redis.asyncio import Redis

    from ocs.balance import BalanceStore, BucketSpec, BucketUnit, ChargeRequest
    from ocs.balance.models import LevelCharge

    root, one, two = "b:prepaid_pool:reseller", "b:prepaid_pool:one", "b:prepaid_pool:two"
    cases: dict[str, tuple[str, str, tuple[LevelCharge, ...]]] = {
        "one_level": (one, "", ()),
        "two_levels": (two, root, (LevelCharge(root, True),)),
    }

    async def run() -> dict[str, list[float]]:
        redis = Redis.from_url(url)
        await redis.flushdb()
        store = BalanceStore(redis)
        size = 10**15
        await store.provision(root, [BucketSpec("reseller", BucketUnit.BYTES, size)], 0,
                              resize=True)  # fmt: skip
        await store.provision(one, [BucketSpec("one", BucketUnit.BYTES, size)], 0, resize=True)
        await store.provision(two, [BucketSpec("two", BucketUnit.BYTES, size)], 0,
                              resize=True, root=root)  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in cases}
        try:
            for r in range(-1, rounds):  # round -1 loads the script and warms up
                for name, (payer, at, levels) in cases.items():
                    await redis.config_resetstat()
                    for i in range(calls):
                        request = ChargeRequest(
                            f"{name}:{r}:{i}", "s|1", BucketUnit.BYTES, 1_000, used=1000,
                            want=1000, deadline_ms=2**50, context_json=SCRIPT_CONTEXT,
                            root=at, levels=levels,
                        )  # fmt: skip
                        await store.charge(payer, request)
                    stats: Any = await redis.info("commandstats")
                    if r >= 0:
                        times[name].append(float(stats["cmdstat_evalsha"]["usec_per_call"]))
        finally:
            await store.batch.close()
            await redis.aclose()
        return times

    times = asyncio.run(run())
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "calls_per_round": calls,
        "rounds": rounds,
        "usec_per_call": times,
        "median_usec_per_call": medians,
        "ratio_two_over_one": round(medians["two_levels"] / medians["one_level"], 3),
    }


def levels_run(args: argparse.Namespace) -> dict[str, Any]:
    """``--levels``: one level (the anchor) against two levels, same load, one run."""
    import tempfile

    loadavg_before = os.getloadavg()[0]
    two_cores = (os.cpu_count() or 1) >= 2
    gen_cpu, server_cpu = (0, 1) if two_cores else (None, None)
    args.run_base = (int(time.time() * 10) % 10**6) * 1000
    one = serve_and_measure(args, ROOT / "policies" / "demo", gen_cpu, server_cpu)
    one_invariant = pool_invariant(args.redis_url)
    args.run_base += 100  # fresh Session-Ids and Origin-Hosts for the second server
    with tempfile.TemporaryDirectory() as tmp:
        two = serve_and_measure(args, reseller_catalogue(Path(tmp) / "c"), gen_cpu, server_cpu)
    two_invariants = [
        pool_invariant(args.redis_url),
        pool_invariant(args.redis_url, RESELLER, "bench-reseller-pool", kind="level"),
    ]

    def ratio(key: str) -> float | None:
        a, b = one.get(key), two.get(key)
        return round(b / a, 3) if a and b else None

    script = script_cost(args.redis_url, rounds=5, calls=2_000)
    return {
        "benchmark": "charging-levels",
        "script": script,
        "one_level": one,
        "two_levels": two,
        "ratio_two_over_one": {
            key: ratio(key)
            for key in (
                "ccr_u_per_s",
                "paced_p50_ms",
                "paced_p99_ms",
                "server_cpu_us_per_ccr",
                "redis_cpu_us_per_ccr",
            )
        },
        "invariants": {"one_level": one_invariant, "two_levels": two_invariants},
        "ratio_script_redis_usec_per_call": script["ratio_two_over_one"],
        "load": {
            "updates_per_session": args.updates,
            "window": args.window,
            "rate": args.rate,
            "max_open": args.max_open,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "quota_octets": args.quota,
        },
        "machine": {
            "nproc": os.cpu_count(),
            "loadavg_before": loadavg_before,
            "loadavg_after": os.getloadavg()[0],
            "python": platform.python_version(),
            "redis": redis_version(args.redis_url),
        },
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


COMPARED = (
    "ccr_u_per_s",
    "server_cpu_us_per_ccr",
    "paced_server_cpu_us_per_ccr",
    "redis_cpu_us_per_ccr",
    "evalsha_usec_per_call",
    "paced_evalsha_usec_per_call",
    "paced_p50_ms",
    "paced_p99_ms",
)


def serve_instructions(args: argparse.Namespace, tree: Path, sessions: int) -> dict[str, Any]:
    """``--callgrind``: the instructions `ocs serve` of ``tree`` executes per CCR (its own
    process only: Redis's are ``tools/bench_money_path.py --callgrind``'s), under
    ``valgrind --tool=callgrind``, counted from just before the load to just after it:
    ``sessions`` sessions of CCR-I, ``--updates`` CCR-U and CCR-T, 8 requests outstanding.
    A count of instructions does not move with the machine's load as times do."""
    import tempfile

    env = dict(os.environ, OCS_REDIS_URL=args.redis_url)
    ocs = [str(tree / ".venv" / "bin" / "ocs")]
    if not (tree / ".venv" / "bin" / "ocs").exists():
        ocs = [sys.executable, "-m", "ocs.cli"]
        env["PYTHONPATH"] = str(tree)
    flush(args.redis_url)
    subprocess.run(
        [*ocs, "catalog", "apply", str(tree / "policies" / "demo")],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        server = start_server(
            [
                *("valgrind", "--tool=callgrind", "--instr-atstart=no"),
                *(f"--callgrind-out-file={out}", "--dump-instr=no"),
                *ocs,
                *("serve", "--port", str(port), "--log-level", "WARNING"),
                *_peer_flags(ocs, env),
                *("--http-port", "0", "--metrics-port", "0"),
            ],
            env,
            wait=900.0,
        )
        try:
            time.sleep(2)
            subprocess.run(["callgrind_control", "-i", "on", str(server.pid)],
                           check=True, capture_output=True)  # fmt: skip
            subprocess.run(["callgrind_control", "-z", str(server.pid)],
                           check=True, capture_output=True)  # fmt: skip
            done = subprocess.run(
                [
                    sys.executable, str(ROOT / "tools" / "loadgen.py"),
                    *("--port", str(port), "--sessions", str(sessions)),
                    *("--updates", str(args.updates), "--quota", str(args.quota)),
                    *("--window", "8", "--timeout", "60", "--json-line"),
                    *("--run-id", str(args.run_base)),
                ],
                capture_output=True, text=True, check=False, timeout=3600,
            )  # fmt: skip
            subprocess.run(["callgrind_control", "-d", str(server.pid)],
                           check=True, capture_output=True)  # fmt: skip
            total = None
            for _ in range(600):
                for dump in Path(tmp).glob("callgrind.out*"):
                    for line in dump.read_text().splitlines():
                        if line.startswith(("summary:", "totals:")):
                            total = int(line.split()[1])
                if total is not None:
                    break
                time.sleep(0.1)
        finally:
            stop(server)
    if done.returncode != 0 or total is None:
        raise SystemExit(f"callgrind run of {tree} failed:\n{done.stderr}")
    load = json.loads(done.stdout.strip().splitlines()[-1])
    answered = sum(n for code, n in load["result_codes"].items() if code != "timeout")
    return {
        "ccrs": answered,
        "result_codes": load["result_codes"],
        "instructions_per_ccr": round(total / max(1, answered)),
    }


def compare_instructions(args: argparse.Namespace) -> dict[str, Any]:
    """``--compare ... --callgrind``: instructions per CCR of each tree's `ocs serve`, and
    their ratio to the first tree's."""
    trees = [Path(p).resolve() for p in args.compare]
    args.run_base = (int(time.time() * 10) % 10**6) * 1000
    out: dict[str, Any] = {}
    for tree in trees:
        out[str(tree)] = serve_instructions(args, tree, args.callgrind_sessions)
        args.run_base += 100
    first = out[str(trees[0])]["instructions_per_ccr"]
    for tree in trees:
        out[str(tree)]["ratio_to_first"] = round(out[str(tree)]["instructions_per_ccr"] / first, 3)
    return {
        "benchmark": "charging-compare-instructions",
        "trees": {str(t): _head(t) for t in trees},
        "ocs": out,
        "sessions": args.callgrind_sessions,
        "updates_per_session": args.updates,
        "loadavg": os.getloadavg(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def compare_run(args: argparse.Namespace, run: int) -> dict[str, Any]:
    """``--compare TREE ...``: `ocs serve` of each work tree (its own venv and its own
    ``policies/demo``), one after the other on the same Redis and load, the order rotated
    by ``run``; then the python-diameter anchor. Ratios against the first tree."""
    trees = [Path(p).resolve() for p in args.compare]
    args.run_base = (int(time.time() * 10) % 10**6) * 1000
    loadavg_before = os.getloadavg()[0]
    two_cores = (os.cpu_count() or 1) >= 2
    gen_cpu, server_cpu = (0, 1) if two_cores else (None, None)
    order = trees[run % len(trees) :] + trees[: run % len(trees)]
    results: dict[str, dict[str, Any]] = {}
    for tree in order:
        results[str(tree)] = serve_and_measure(
            args, tree / "policies" / "demo", gen_cpu, server_cpu, tree
        )
        results[str(tree)]["pool_invariant"] = pool_invariant(args.redis_url)
        args.run_base += 100  # fresh Session-Ids and Origin-Hosts for the next server
    theirs = _anchor(args, gen_cpu, server_cpu)
    first = results[str(trees[0])]
    ratios = {
        str(tree): {
            key: round(results[str(tree)][key] / first[key], 3)
            for key in COMPARED
            if results[str(tree)].get(key) and first.get(key)
        }
        for tree in trees[1:]
    }
    return {
        "benchmark": "charging-compare",
        "trees": {str(t): _head(t) for t in trees},
        "order": [str(t) for t in order],
        "ocs": results,
        "python_diameter_static_cca": theirs,
        "ratio_to_first": ratios,
        "ratio_ccr_u_to_anchor": {
            str(t): round(results[str(t)]["ccr_u_per_s"] / max(1.0, theirs["ccr_u_per_s"]), 2)
            for t in trees
        },
        "machine": {
            "nproc": os.cpu_count(),
            "loadavg_before": loadavg_before,
            "loadavg_after": os.getloadavg()[0],
            "redis": redis_version(args.redis_url),
        },
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _head(tree: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), "log", "-1", "--format=%h %cs"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout.strip() + (" (+ work tree changes)" if dirty.stdout.strip() else "")


def _anchor(
    args: argparse.Namespace, gen_cpu: int | None, server_cpu: int | None
) -> dict[str, Any]:
    """The python-diameter static-CCA anchor, measured like `ocs serve`."""
    port = free_port()
    hosts = [
        f"loadgen-{run_base(args, paced=paced) + i}.local"
        for paced in (False, True)
        for i in range(max(1, args.load_procs))
    ]
    anchor = start_server(
        [
            *taskset(server_cpu),
            *(sys.executable, __file__, "--role", "anchor", "--port", str(port)),
            *("--peers", ",".join(hosts)),
        ],
        dict(os.environ),
    )
    try:
        return measure(port, anchor.pid, args, gen_cpu, None)
    finally:
        stop(anchor)


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    # Session-Ids and Origin-Hosts of this run's generators: never those of an earlier run
    args.run_base = (int(time.time() * 10) % 10**6) * 1000
    loadavg_before = os.getloadavg()[0]
    two_cores = (os.cpu_count() or 1) >= 2
    gen_cpu, server_cpu = (0, 1) if two_cores else (None, None)
    ours = serve_and_measure(args, ROOT / "policies" / "demo", gen_cpu, server_cpu)
    invariant = pool_invariant(args.redis_url)
    port = free_port()
    hosts = [
        f"loadgen-{run_base(args, paced=paced) + i}.local"
        for paced in (False, True)
        for i in range(max(1, args.load_procs))
    ]
    anchor = start_server(
        [
            *taskset(server_cpu),
            *(sys.executable, __file__, "--role", "anchor", "--port", str(port)),
            *("--peers", ",".join(hosts)),
        ],
        dict(os.environ),
    )
    try:
        theirs = measure(port, anchor.pid, args, gen_cpu, None)
    finally:
        stop(anchor)
    return {
        "benchmark": "charging",
        "ocs": ours,
        "python_diameter_static_cca": theirs,
        "ratio_ccr_u_per_s": round(ours["ccr_u_per_s"] / max(1.0, theirs["ccr_u_per_s"]), 2),
        "ratio_p99_paced": round(theirs["paced_p99_ms"] / max(1e-3, ours["paced_p99_ms"]), 2),
        "targets": {
            "ccr_u_per_s": 5000,
            "p99_ms_at_2000": 5.0,
            "met_ccr_u": ours["ccr_u_per_s"] >= 5000,
            "met_p99": ours["paced_p99_ms"] <= 5.0 and args.rate >= 2000,
        },
        "pool_invariant": invariant,
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
            "pinning": "loadgen cpu0, server cpu1" if two_cores else "none",
            "loadavg_before": loadavg_before,
            "loadavg_after": os.getloadavg()[0],
            "python": platform.python_version(),
            "redis": redis_version(args.redis_url),
            "platform": platform.platform(),
        },
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["anchor"])
    parser.add_argument("--peers", default="", help="anchor: the load generators' hosts")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="flushed!")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--updates", type=int, default=20, help="CCR-U per session")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--max-open", type=int, default=256, help="open sessions, phase 2")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--quota", type=int, default=GRANTED_OCTETS, help="octets per grant")
    parser.add_argument(
        "--load-procs", type=int, default=1, help="load generator processes (same for both)"
    )
    parser.add_argument(
        "--levels", action="store_true", help="two-level reservations against one level"
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="TREE",
        help="work trees whose own `ocs serve` run side by side (ratios to the first)",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="with --compare: instructions per CCR of each server under callgrind",
    )
    parser.add_argument("--callgrind-sessions", type=int, default=100)
    args = parser.parse_args()
    if args.role == "anchor":
        run_anchor(args.port, args.peers.split(","))
        return
    if args.levels:
        for _ in range(args.runs):
            print(json.dumps(levels_run(args)), flush=True)
        return
    if args.compare and args.callgrind:
        print(json.dumps(compare_instructions(args)), flush=True)
        return
    if args.compare:
        compared = []
        for r in range(args.runs):
            compared.append(compare_run(args, r))
            print(json.dumps(compared[-1]), flush=True)
        print(json.dumps(_compare_summary(compared)), flush=True)
        return
    runs = []
    for _ in range(args.runs):
        run = one_run(args)
        runs.append(run)
        print(json.dumps(run), flush=True)
    if len(runs) > 1:
        median = statistics.median_low(r["ocs"]["ccr_u_per_s"] for r in runs)
        chosen = next(r for r in runs if r["ocs"]["ccr_u_per_s"] == median)
        summary = dict(chosen, median_of_runs=len(runs))
        summary["all_runs_ocs_ccr_u_per_s"] = [r["ocs"]["ccr_u_per_s"] for r in runs]
        summary["all_runs_ocs_p99_ms"] = [r["ocs"]["paced_p99_ms"] for r in runs]
        print(json.dumps(summary), flush=True)


def _compare_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs of each tree's measures and of its ratios to the first."""
    trees = list(runs[0]["trees"])
    med: dict[str, dict[str, float]] = {}
    for tree in trees:
        med[tree] = {
            key: statistics.median(vals)
            for key in (*COMPARED, "paced_answered_per_s")
            if (vals := [r["ocs"][tree][key] for r in runs if r["ocs"][tree].get(key) is not None])
        }
    ratios = {
        tree: {
            key: statistics.median(vals)
            for key in COMPARED
            if (
                vals := [
                    r["ratio_to_first"][tree][key]
                    for r in runs
                    if key in r["ratio_to_first"].get(tree, {})
                ]
            )
        }
        for tree in trees[1:]
    }
    anchor = statistics.median(r["python_diameter_static_cca"]["ccr_u_per_s"] for r in runs)
    return {
        "benchmark": "charging-compare-summary",
        "runs": len(runs),
        "trees": runs[0]["trees"],
        "median": med,
        "median_ratio_to_first": ratios,
        "anchor_ccr_u_per_s": anchor,
        "loadavg": [r["machine"]["loadavg_before"] for r in runs],
    }


if __name__ == "__main__":
    main()
