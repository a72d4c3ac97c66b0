"""Events of writes made outside a balance script (docs/webhooks.md, "Design: the outbox"):
an API write of a tenant's provisioning state queues :func:`tenant_event` on the same
``MULTI`` as the change, into the tenant's outbox (:func:`ocs.events.keys.tenant_outbox`,
the hash tag ``{api:T}`` of the provisioning keys), so that both are stored or neither.

Events of PostgreSQL transactions (an issued invoice) are written to an outbox table in that
transaction and relayed here by :func:`relay_events`, which adds each event id to the
tenant's outbox at most once (:func:`ocs.events.keys.relayed_key`), however often a relay
that stopped half-way is repeated."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from ocs.events.keys import relayed_key, tenant_outbox
from ocs.events.model import EVENT_TYPES, event_id


def event_fields(
    tenant: str,
    etype: str,
    natural_key: str,
    subject: dict[str, Any],
    data: dict[str, Any],
    now_ms: int,
) -> dict[str, str]:
    """The outbox entry of one event, as ``emit`` (``_events.lua``) writes it; its id is
    derived from the tenant, type and ``natural_key``."""
    if etype not in EVENT_TYPES:
        raise ValueError(f"unknown event type {etype!r}")
    return {
        "id": event_id(tenant, etype, natural_key),
        "tenant": tenant,
        "type": etype,
        "subject": json.dumps(subject, separators=(",", ":"), sort_keys=True),
        "time": str(int(now_ms)),
        "data": json.dumps(data, separators=(",", ":"), sort_keys=True),
    }


def tenant_event(
    pipe: Any,
    tenant: str,
    etype: str,
    natural_key: str,
    subject: dict[str, Any],
    data: dict[str, Any],
    now_ms: int,
) -> None:
    """Queue the event on ``pipe`` (a ``MULTI`` pipeline that also writes the change)."""
    pipe.xadd(
        tenant_outbox(tenant), event_fields(tenant, etype, natural_key, subject, data, now_ms)
    )


FIELDS: Final = ("id", "tenant", "type", "subject", "time", "data")
# KEYS: the tenant's outbox, its relayed set; ARGV: now (ms), keep (ms), then the FIELDS of
# each event. Adds the events whose id is not in the set (in ARGV order); returns how many.
RELAY_LUA: Final = """
local now, keep = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - keep))
local added = 0
for i = 3, #ARGV, 6 do
  if not redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'tenant', ARGV[i + 1], 'type', ARGV[i + 2],
      'subject', ARGV[i + 3], 'time', ARGV[i + 4], 'data', ARGV[i + 5])
    redis.call('ZADD', KEYS[2], now, ARGV[i])
    added = added + 1
  end
end
return added
"""


async def relay_events(
    redis: Any, tenant: str, events: Sequence[dict[str, str]], now_ms: int, keep_ms: int
) -> int:
    """Add ``events`` (outbox entries of ``tenant``, :func:`event_fields`) to the tenant's
    outbox, each id once within ``keep_ms``; returns how many were new. One script call:
    atomic, one slot (``{api:T}``)."""
    if not events:
        return 0
    args: list[str | int] = [now_ms, keep_ms]
    for event in events:
        if event["tenant"] != tenant:
            raise ValueError(f"event {event['id']} of tenant {event['tenant']!r}, not {tenant!r}")
        args += [event[f] for f in FIELDS]
    script = redis.register_script(RELAY_LUA)
    added = await script(keys=[tenant_outbox(tenant), relayed_key(tenant)], args=args)
    return int(added)
