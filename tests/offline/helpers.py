"""Writers of stream entries shaped exactly like the balance scripts' records."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from ocs.balance.keys import PAYERS, PayerKeys


def usage_fields(
    tag: str,
    rid: str,
    ts_ms: int,
    units: int,
    *,
    imsi: str = "262010000000001",
    account: str = "acme-iot",
    twin: str = "data",
    service: str = "data",
    session: str = "s1",
    rg: int = 10,
    levels: list[dict[str, Any]] | None = None,
) -> dict[str, str]:
    ctx = {
        "session": session, "n": 1, "rg": rg, "imsi": imsi, "msisdn": "491700000001",
        "twin": twin, "subscription": f"{imsi}/{twin}", "account": account,
        "service": service, "levels": levels or [],
    }  # fmt: skip
    return {
        "kind": "usage", "id": rid, "payer": tag, "ts": str(ts_ms), "unit": "bytes",
        "units": str(units), "money": "0", "overrun": "0",
        "alloc": json.dumps([["b1", str(units)]]), "ctx": json.dumps(ctx),
    }  # fmt: skip


async def add_usage(redis: Redis, tag: str, count: int, *, start: int = 0) -> list[str]:
    """Append ``count`` usage records to the payer's stream; returns their request ids."""
    await redis.sadd(PAYERS, tag)  # type: ignore[misc]
    stream = PayerKeys(tag).stream
    ids = []
    pipe = redis.pipeline(transaction=False)
    for i in range(start, start + count):
        rid = f"sess-{tag}-{i};1:0:10"
        ids.append(rid)
        pipe.xadd(stream, usage_fields(tag, rid, 1_740_000_000_000 + i, 1000 + i))  # type: ignore[arg-type]
    await pipe.execute()
    return ids
