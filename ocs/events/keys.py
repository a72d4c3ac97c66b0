"""Redis keys of the webhook side. A tenant's subscriptions, cursors, retry states,
delivery logs and dead letters share the hash tag ``{wh:T}`` (one slot per tenant). The
outboxes are elsewhere: per payer (:attr:`ocs.balance.keys.PayerKeys.events`, written by the
balance scripts) and per tenant (:func:`tenant_outbox`, written with API writes of the
tenant's provisioning state, hash tag ``{api:T}``)."""

from __future__ import annotations

from typing import Final

from ocs.provisioning.keys import tenant_prefix

PREFIX: Final = "ocs:wh"
TENANTS: Final = f"{PREFIX}:tenants"  # SET of tenants with at least one subscription
LEASE: Final = f"{PREFIX}:lease"  # STRING: the dispatcher delivering now (owner id, PX)


def _t(tenant: str) -> str:
    return f"{PREFIX}:{{wh:{tenant}}}"


def subscriptions_key(tenant: str) -> str:
    """HASH subscription id -> JSON subscription."""
    return f"{_t(tenant)}:subs"


def cursor_key(tenant: str, sub: str) -> str:
    """HASH outbox stream key -> id of the last entry this subscription is done with."""
    return f"{_t(tenant)}:cursor:{sub}"


def retry_key(tenant: str, sub: str) -> str:
    """HASH outbox stream key -> JSON {event, attempts, next} of a failing delivery."""
    return f"{_t(tenant)}:retry:{sub}"


def log_key(tenant: str, sub: str) -> str:
    """STREAM: the subscription's delivery log (every attempt), capped."""
    return f"{_t(tenant)}:log:{sub}"


def dead_key(tenant: str, sub: str) -> str:
    """STREAM: events given up after the last attempt (dead letters), capped."""
    return f"{_t(tenant)}:dead:{sub}"


def redeliver_key(tenant: str, sub: str) -> str:
    """STREAM: dead letters an operator asked to redeliver, in the outbox entry format,
    drained by the dispatcher like an outbox (its own cursor, retries, dead letters)."""
    return f"{_t(tenant)}:redeliver:{sub}"


def tenant_outbox(tenant: str) -> str:
    """STREAM: the tenant's own outbox, for events of API writes that reach no payer (a SIM
    state change): same hash tag as the tenant's provisioning state, so a MULTI can write
    the change and its event together."""
    return f"{tenant_prefix(tenant)}:events"


def relayed_key(tenant: str) -> str:
    """ZSET event id -> when it was relayed (epoch ms): the events a relay from PostgreSQL
    (``ocs.events.outbox.relay_events``) already put in :func:`tenant_outbox`, so a relay
    repeated after a crash adds none twice; entries older than the retention are dropped."""
    return f"{tenant_outbox(tenant)}:relayed"
