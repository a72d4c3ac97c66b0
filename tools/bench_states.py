"""What SIM lifecycle states (docs/sim-states.md) cost.

1. Per CCR: the state check of the charging path (``ocs.charging.states.admit`` of the SIM
   the usage resolved to) against the anchor ``ocs.rating.resolve`` of the same usage,
   which every CCR not answered from the session's rating cache already pays. Alternating
   rounds; ``time.perf_counter`` per batch.
2. Per catalogue change: the transition check of ``TenantCatalogues.change`` (snapshot of
   every SIM's state before the mutation, the moves after it, each checked) against the
   anchor every change already pays: compiling the tenant's state. On a state of
   ``--sims`` SIMs (the demo catalogue plus generated SIMs, a tenth of them moved).

No Redis, no network: CPU only. Prints one JSON object.

    .venv/bin/python tools/bench_states.py --sims 100000
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from ocs.charging.states import admit  # noqa: E402
from ocs.provisioning.catalogues import _compile, merge_documents  # noqa: E402
from ocs.provisioning.states import moves, set_state, snapshot  # noqa: E402
from ocs.rating import ServiceKind, UsageContext, resolve  # noqa: E402

DEMO = ROOT / "policies" / "demo"


def demo_state() -> dict[str, Any]:
    documents = {p.name: yaml.safe_load(p.read_text()) for p in sorted(DEMO.glob("*.yaml"))}
    return merge_documents({}, documents, "demo")


def with_sims(state: dict[str, Any], n: int) -> dict[str, Any]:
    out = copy.deepcopy(state)
    sims = out.setdefault("sims", {})
    for i in range(n):
        imsi = f"26209{i:010d}"
        sims[imsi] = {
            "imsi": imsi,
            "account": "bob",
            "twins": [
                {
                    "id": "main",
                    "payer": {"kind": "wallet", "id": "bob-wallet"},
                    "plans": [{"plan": "consumer-data", "from": "2024-06-01T00:00:00+02:00"}],
                }
            ],
        }
    return out


def per_ccr(rounds: int, batch: int) -> dict[str, Any]:
    catalogue = _compile(demo_state())
    ctx = UsageContext(
        tenant="demo",
        imsi="262019999999999",
        event_time=datetime.now(UTC),
        service=ServiceKind.DATA,
        quantity=1000,
        apn="internet.demo",
    )
    sims = catalogue.sims_by_imsi
    resolve_s = gate_s = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batch):
            resolve(catalogue, ctx)
        resolve_s += time.perf_counter() - start
        resolution = resolve(catalogue, ctx)
        start = time.perf_counter()
        for _ in range(batch):
            admit(sims[resolution.imsi])
        gate_s += time.perf_counter() - start
    calls = rounds * batch
    return {
        "calls": calls,
        "resolve_us": round(resolve_s / calls * 1e6, 3),
        "state_check_us": round(gate_s / calls * 1e6, 3),
        "ratio_check_to_resolve": round(gate_s / resolve_s, 4),
    }


def per_change(n: int, rounds: int) -> dict[str, Any]:
    base = with_sims(demo_state(), n)
    moved = [f"26209{i:010d}" for i in range(0, n, 10)]
    check_s = compile_s = 0.0
    for _ in range(rounds):
        state = copy.deepcopy(base)
        start = time.perf_counter()
        before = snapshot(state)
        for imsi in moved:
            set_state(state["sims"][imsi], "suspended")
        found = moves(before, state)
        check_s += time.perf_counter() - start
        assert len(found) == len(moved)
        start = time.perf_counter()
        _compile(state)
        compile_s += time.perf_counter() - start
    return {
        "sims": n + len(demo_state().get("sims") or {}),
        "moved": len(moved),
        "rounds": rounds,
        "check_ms": round(check_s / rounds * 1e3, 1),
        "compile_ms": round(compile_s / rounds * 1e3, 1),
        "ratio_check_to_compile": round(check_s / compile_s, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sims", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ccr-rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    out = {
        "per_ccr": per_ccr(args.ccr_rounds, args.batch),
        "per_change": per_change(args.sims, args.rounds),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
