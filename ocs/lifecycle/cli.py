"""`ocs lifecycle run [--now ISO] [--json]`: one lifecycle pass over the applied catalogue
(what every `ocs serve` worker does every ``lifecycle_interval`` seconds), including the
RAR/ASR to the live sessions of the pools it renews or suspends."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from ocs.balance.keys import CATALOG
from ocs.config import Settings
from ocs.errors import CommandError, UsageError
from ocs.lifecycle.runner import Lifecycle
from ocs.provisioning.catalogues import compile_state
from ocs.provisioning.keys import IN_FORCE, state_key
from ocs.provisioning.payers import lifecycle_rules
from ocs.rating.loader import load_catalogue
from ocs.redis_client import open_redis


def parse_now(value: str | None) -> int:
    """``--now`` as epoch ms (ISO 8601 with a UTC offset); the wall clock when absent."""
    if value is None:
        return int(time.time() * 1000)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--now: {value!r} is not an ISO 8601 time") from None
    if at.utcoffset() is None:
        raise ValueError(f"--now: {value!r} has no UTC offset (add Z or +01:00)")
    return int(at.timestamp() * 1000)


async def run_pass(settings: Settings, now_ms: int) -> dict[str, Any]:
    """One pass at ``now_ms`` over the pools of the catalogue last applied."""
    handle = await open_redis(settings, timeout=10.0)
    try:
        # every tenant in force (as `ocs serve` does), else the single pointer's folder
        tenants = await handle.client.hgetall(IN_FORCE)
        rules = []
        path = ", ".join(sorted(_s(t) for t in tenants))
        for tenant in sorted(_s(t) for t in tenants):
            state = await handle.client.get(state_key(tenant))
            if state is not None:
                rules += lifecycle_rules(compile_state(state))
        if not tenants:
            raw = await handle.client.hget(CATALOG, "path")
            if raw is None:
                raise LookupError("no catalogue applied: run `ocs catalog apply PATH` first")
            path = _s(raw)
            rules = lifecycle_rules(load_catalogue(path))
        lifecycle = Lifecycle(handle.client)
        report = await lifecycle.run_once(rules, now_ms)
    finally:
        await handle.close()
    return {"now_ms": now_ms, "catalogue": path, "pools": len(rules), **report.as_dict()}


async def main_lifecycle_run(settings: Settings, now: str | None, *, as_json: bool) -> int:
    """Errors are raised (``ocs.cli`` reports them): a bad ``--now`` is a usage error, no
    catalogue applied a failure."""
    try:
        now_ms = parse_now(now)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        summary = await run_pass(settings, now_ms)
    except LookupError as exc:
        raise CommandError(str(exc)) from None
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    outcomes = ", ".join(f"{k}={v}" for k, v in summary["outcomes"].items()) or "nothing due"
    print(f"lifecycle pass over {summary['pools']} pool(s): {outcomes}")
    for event in summary["events"]:
        print(f"  {event['pool']}: renewal unpaid ({event['outcome']})")
    for op, n in summary["signals"].items():
        print(f"  {op.upper()} sent to {n} live session(s)")
    return 0


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
