"""Idempotency-Key records: the first request with a key claims it with a fingerprint of
its body; a later request with the same key and another body is refused (422). The balance
script itself is idempotent by request id (the key), so concurrent requests with one key
move the balance once whichever of them runs first."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Final

from fastapi import Header

from ocs.api.keys import idempotency_key
from ocs.api.problems import Problem
from ocs.balance.batch import CommandBatcher

RECORD_TTL: Final = 7 * 24 * 3600
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
    with a different request. Through the store's command batcher: under load the claims
    of concurrent requests share one write."""
    rkey = idempotency_key(tenant, scope, key)
    record = json.dumps({"fp": fp})
    if await batch.execute("SET", rkey, record, "NX", "EX", RECORD_TTL) is not None:
        return True
    raw = await batch.execute("GET", rkey)
    found: dict[str, Any] = json.loads(raw) if raw else {"fp": fp}
    if found.get("fp") != fp:
        raise Problem(
            422,
            "idempotency-mismatch",
            "Idempotency-Key reused",
            "this Idempotency-Key was used with a different request",
        )
    return False
