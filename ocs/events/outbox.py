"""Events of writes made outside a balance script (docs/webhooks.md, "Design: the outbox"):
an API write of a tenant's provisioning state queues :func:`tenant_event` on the same
``MULTI`` as the change, into the tenant's outbox (:func:`ocs.events.keys.tenant_outbox`,
the hash tag ``{api:T}`` of the provisioning keys), so that both are stored or neither."""

from __future__ import annotations

import json
from typing import Any

from ocs.events.keys import tenant_outbox
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
