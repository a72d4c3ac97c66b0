"""Idempotency-Key records: the first request with a key claims it with a fingerprint of
its body; a later request with the same key and another body is refused (422).

A key and the balance change it guards are one record with one lifetime (issue 12):

* the record lives :data:`RECORD_TTL` (7 days) and, once the change is applied, holds its
  outcome (:func:`begin` / :func:`finish`, ``SET ... XX KEEPTTL``: the lifetime is the
  claim's). A replay within that lifetime gets the stored outcome back and runs nothing;
* the balance script's own result (``ocs:{payer}:done:<request id>``) is written with the
  same lifetime (:data:`RECORD_TTL_MS`, passed as ``result_ttl_ms``), so a request that
  finds the key claimed but no outcome yet (a concurrent first request, or a first request
  that died between its script and :func:`finish`) runs the script and gets its stored
  result: the balance moves once whichever of them runs first.

Expiring either key alone (tests do) still moves nothing twice: the outcome answers while
the record lives, the script's result while it lives.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Header

from ocs.api.keys import idempotency_key
from ocs.api.problems import Problem
from ocs.balance.batch import CommandBatcher

RECORD_TTL: Final = 7 * 24 * 3600  # seconds: the record and the script result it guards
RECORD_TTL_MS: Final = RECORD_TTL * 1000
KEY_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="the same key never moves the balance twice",
    ),
]


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


async def claim(batch: CommandBatcher, tenant: str, scope: str, key: str, fp: str) -> bool:
    """True when this request is the first with ``key``; raises 422 when the key was used
    with a different request (:func:`begin`, for a caller that needs no stored outcome)."""
    return (await begin(batch, tenant, scope, key, fp)).first


@dataclass(frozen=True, slots=True)
class Claimed:
    """One request's view of its Idempotency-Key record: ``first`` when this request made
    it; ``outcome`` the stored outcome of the first request, when it finished."""

    key: str  # the Redis key of the record
    fp: str
    first: bool
    outcome: dict[str, Any] | None


async def begin(batch: CommandBatcher, tenant: str, scope: str, key: str, fp: str) -> Claimed:
    """Claim ``key`` (the first request) or read its record; 422 when the key was used with
    a different request."""
    rkey = idempotency_key(tenant, scope, key)
    record = json.dumps({"fp": fp})
    if await batch.execute("SET", rkey, record, "NX", "EX", RECORD_TTL) is not None:
        return Claimed(rkey, fp, True, None)
    raw = await batch.execute("GET", rkey)
    found: dict[str, Any] = json.loads(raw) if raw else {"fp": fp}
    if found.get("fp") != fp:
        raise Problem(
            422,
            "idempotency-mismatch",
            "Idempotency-Key reused",
            "this Idempotency-Key was used with a different request",
        )
    outcome = found.get("outcome")
    return Claimed(rkey, fp, False, outcome if isinstance(outcome, dict) else None)


async def finish(batch: CommandBatcher, claimed: Claimed, outcome: dict[str, Any]) -> None:
    """Store the outcome in the record, keeping the record's lifetime (``XX KEEPTTL``: an
    expired record is not brought back)."""
    if claimed.outcome is not None:
        return
    record = json.dumps({"fp": claimed.fp, "outcome": outcome}, separators=(",", ":"))
    await batch.execute("SET", claimed.key, record, "XX", "KEEPTTL")
