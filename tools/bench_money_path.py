"""What one ``charge.lua`` call costs Redis on the money path's common case, at several git
refs side by side (issue: the money path got slower after 2026-11-30).

The common case is the demo's: a prepaid pool paying a data session alone (one level, no
per-SIM cap, nothing priced in money), with or without catalogue thresholds (the demo pool
has 80 % and 100 %), and no event to write. Each ref's ``charge.lua`` (with the preludes it
had then: ``_shadow.lua``, ``_events.lua``, ``_levels.lua``) runs the same calls, in the
shape `ocs serve` sends them (the KEYS and ARGV of that ref's ``BalanceStore.charge``, the
record context of a demo CCR): sessions of a CCR-I, ``--updates`` CCR-U (commit 50,000
octets, reserve 100,000) and a CCR-T, ``--open`` sessions interleaved (so the reservation
index holds that many), ``--calls`` calls a round, rounds alternating refs.

Two measures:

* ``usec_per_call``: Redis's own time (``INFO commandstats``, ``cmdstat_evalsha``), median
  of the rounds; moves with the machine's load;
* ``--callgrind``: a second redis-server started here under ``valgrind --tool=callgrind``
  (``--callgrind-port``), and the instructions it executes per call (``callgrind_control``
  zeroes the counters before a round and dumps them after it): the same on a loaded machine.

    .venv/bin/python tools/bench_money_path.py --redis-url redis://127.0.0.1:6382/9 \\
        --refs 4f37ad8 main WORKTREE --callgrind

``WORKTREE`` is the scripts as they are in this work tree. The Redis at ``--redis-url`` is
flushed (use one of your own). Prints one JSON object: per ref and case the measures and
their ratio to the first ref.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from ocs.balance.keys import PayerKeys  # noqa: E402
from ocs.balance.store import script_text  # noqa: E402

WORKTREE = "WORKTREE"
PRELUDES = ("_shadow.lua", "_events.lua", "_levels.lua")  # in the order store.py joins them
SIZE = 10_000_000_000  # the demo pool's
NOW = 1_796_500_000_000
ALERTS = json.dumps({"u": "bytes", "p": [80, 100], "a": [], "b": SIZE}, separators=(",", ":"))


def _show(ref: str, path: str) -> str | None:
    done = subprocess.run(
        ["git", "show", f"{ref}:ocs/balance/lua/{path}"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout if done.returncode == 0 else None


def script_of(ref: str) -> str:
    """``charge.lua`` as Redis ran it at ``ref`` (its preludes of then first)."""
    if ref == WORKTREE:
        return script_text("charge.lua")
    body = _show(ref, "charge.lua")
    if body is None:
        raise SystemExit(f"no ocs/balance/lua/charge.lua at {ref}")
    return "".join(_show(ref, p) or "" for p in PRELUDES) + body


def context(sid: str, n: int) -> str:
    """The record context of a demo CCR (as ``ChargingCore.rated`` builds it)."""
    return (
        f'{{"session":"{sid}","n":{n},"rg":10,"imsi":"262010000000001","msisdn":null,'
        '"twin":"data","subscription":"262010000000001/data","account":"acme-iot",'
        '"service":"data","levels":[{"level":0,"buyer":"acme-iot","seller":null,'
        '"payer":"prepaid_pool:acme-pool","plan":"iot-pool","zone":"home","band":"any",'
        '"currency":"EUR","amount":0}],"interface":"gy"}'
    )


def calls(tag: str, count: int, updates: int, open_sessions: int) -> list[list[Any]]:
    """``count`` charge.lua calls (KEYS and ARGV, main's layout: older scripts ignore the
    keys and arguments they do not read) of ``open_sessions`` interleaved sessions."""
    k = PayerKeys(tag)
    steps = updates + 2
    out: list[list[Any]] = []
    sessions = [0] * open_sessions  # the step each open session is at
    ids = list(range(open_sessions))
    nxt = open_sessions
    for i in range(count):
        slot = i % open_sessions
        step, s = sessions[slot], ids[slot]
        sid = f"bench.local;{tag};{s:010d}"
        used = 0 if step == 0 else 50_000
        want = 0 if step == steps - 1 else 100_000
        rid = f"{sid}:{step}:10"
        member = f"{sid}|10"
        keys = [k.buckets, k.balances, k.reservations, k.reservation_index, k.done(rid),
                k.stream, k.lifecycle, k.counters, k.events, k.limits]  # fmt: skip
        args = [rid, NOW + i, "bytes", used, want, min(want, 100_000), 0, 0,
                NOW + i + 660_000, 600_000, member, "session", context(sid, step), tag,
                "", "", "", ""]  # fmt: skip
        out.append([len(keys), *keys, *args])
        if step == steps - 1:
            sessions[slot], ids[slot] = 0, nxt
            nxt += 1
        else:
            sessions[slot] = step + 1
    return out


async def provision(redis: Redis, tag: str, alerts: bool) -> None:
    k = PayerKeys(tag)
    bucket = {"prio": 0, "to": 0, "from": 0, "unlimited": False, "unit": "bytes"}
    await redis.hset(k.buckets, "acme-pool", json.dumps(bucket, separators=(",", ":")))
    await redis.hset(
        k.balances, mapping={"acme-pool:a": SIZE, "acme-pool:r": 0, "acme-pool:u": 0,
                             "acme-pool:i": SIZE},
    )  # fmt: skip
    life: dict[str, Any] = {"period": "2026-11-30T23:00:00Z", "size": SIZE}
    if alerts:
        life["alerts"] = ALERTS
    await redis.hset(k.lifecycle, mapping=life)


class Callgrind:
    """A redis-server of our own under callgrind; instructions of what runs between
    ``zero()`` and ``total()``."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.out = workdir / "callgrind.out"
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}",
             "--dump-instr=no", "--collect-atstart=yes",
             "redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                              text=True, check=False).stdout.strip() == "PONG":  # fmt: skip
                return
            time.sleep(0.5)
        self.stop()
        raise SystemExit("redis-server under callgrind did not start")

    def _control(self, *flags: str) -> None:
        subprocess.run(["callgrind_control", *flags, str(self.proc.pid)], check=True,
                       capture_output=True)  # fmt: skip

    def zero(self) -> None:
        self._control("-z")

    def total(self) -> int:
        for old in self.workdir.glob("callgrind.out*"):
            old.unlink()
        self._control("-d")
        for _ in range(100):
            dumps = list(self.workdir.glob("callgrind.out*"))
            if dumps:
                for line in dumps[0].read_text().splitlines():
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1])
            time.sleep(0.1)
        raise SystemExit("callgrind wrote no dump")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def run_calls(redis: Redis, sha: str, batch: list[list[Any]]) -> None:
    for c in batch:
        await redis.evalsha(sha, *c)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    cases = {"thresholds": True, "plain": False}
    texts = {ref: script_of(ref) for ref in args.refs}
    redis = Redis.from_url(args.redis_url)
    await redis.flushdb()
    grind: Callgrind | None = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-money-"))
    gredis: Redis | None = None
    if args.callgrind:
        grind = Callgrind(args.callgrind_port, tmp)
        gredis = Redis(port=args.callgrind_port)
    usec: dict[str, dict[str, list[float]]] = {r: {c: [] for c in cases} for r in args.refs}
    instr: dict[str, dict[str, list[float]]] = {r: {c: [] for c in cases} for r in args.refs}
    try:
        shas = {ref: await redis.script_load(text) for ref, text in texts.items()}
        if gredis is not None:
            for text in texts.values():
                await gredis.script_load(text)
        for rnd in range(-1, args.rounds):  # round -1 warms up
            for case, alerts in cases.items():
                for j, ref in enumerate(args.refs):
                    tag = f"bench:prepaid_pool:{case}-{j}-{rnd + 1}"
                    await provision(redis, tag, alerts)
                    batch = calls(tag, args.calls, args.updates, args.open)
                    await redis.config_resetstat()
                    await run_calls(redis, shas[ref], batch)
                    stats: Any = await redis.info("commandstats")
                    if rnd >= 0:
                        usec[ref][case].append(float(stats["cmdstat_evalsha"]["usec_per_call"]))
                    if grind is not None and gredis is not None and rnd >= 0:
                        await provision(gredis, tag, alerts)
                        small = batch[: args.callgrind_calls]
                        grind.zero()
                        await run_calls(gredis, shas[ref], small)
                        instr[ref][case].append(grind.total() / len(small))
    finally:
        await redis.flushdb()
        await redis.aclose()
        if gredis is not None:
            await gredis.aclose()
        if grind is not None:
            grind.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    first = args.refs[0]
    out: dict[str, Any] = {}
    for case in cases:
        row: dict[str, Any] = {}
        base_us = statistics.median(usec[first][case])
        base_ir = statistics.median(instr[first][case]) if instr[first][case] else None
        for ref in args.refs:
            us = statistics.median(usec[ref][case])
            entry: dict[str, Any] = {"usec_per_call": round(us, 2), "runs": usec[ref][case],
                                     "ratio_usec": round(us / base_us, 3)}  # fmt: skip
            if instr[ref][case] and base_ir:
                ir = statistics.median(instr[ref][case])
                entry["instructions_per_call"] = round(ir)
                entry["ratio_instructions"] = round(ir / base_ir, 3)
            row[ref] = entry
        out[case] = row
    return {
        "benchmark": "money-path-script",
        "refs": {r: _describe(r) for r in args.refs},
        "cases": out,
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "updates": args.updates,
        "open_sessions": args.open,
        "callgrind_calls": args.callgrind_calls if args.callgrind else None,
        "loadavg": os.getloadavg(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _describe(ref: str) -> str:
    if ref == WORKTREE:
        return "work tree"
    done = subprocess.run(["git", "log", "-1", "--format=%h %cs", ref], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="flushed!")
    parser.add_argument("--refs", nargs="+", default=["4f37ad8", "main", WORKTREE])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--open", type=int, default=128, help="sessions interleaved")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--callgrind-port", type=int, default=6383)
    parser.add_argument("--callgrind-calls", type=int, default=400)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args))), flush=True)


if __name__ == "__main__":
    main()
