"""Redis keys of the HTTP API (tokens, tenant catalogue state, idempotency records).

Balance keys are the balance store's (:mod:`ocs.balance.keys`); subscription state reaches
the Diameter path through the catalogue pointer ``ocs:catalog`` and the MSISDN index, the
same keys ``ocs catalog apply`` writes. Keys of one tenant share the hash tag ``{api:T}``.
"""

from __future__ import annotations

from ocs.provisioning.keys import (  # the tenant's state: provisioning owns it
    PREFIX,
    lock_key,
    revision_key,
    state_key,
    tenant_prefix,
    versions_key,
)

__all__ = [
    "PREFIX",
    "event_key",
    "idempotency_key",
    "lock_key",
    "renewal_key",
    "revision_key",
    "state_key",
    "token_key",
    "topoff_count_key",
    "versions_key",
]


def token_key(digest: str) -> str:
    """HASH tenant, scopes, created_at of one bearer token, by the SHA-256 of the token."""
    return f"{PREFIX}:token:{digest}"


def tokens_key(tenant: str) -> str:
    """HASH token id -> JSON {digest, scopes, created_at}: the tenant's tokens, for listing
    and revoking them by id (the token itself is never stored)."""
    return f"{_t(tenant)}:tokens"


def _t(tenant: str) -> str:
    return tenant_prefix(tenant)


def idempotency_key(tenant: str, scope: str, key: str) -> str:
    """STRING: the fingerprint and response of one Idempotency-Key use."""
    return f"{_t(tenant)}:idem:{scope}:{key}"


def event_key(tenant: str, event_id: str) -> str:
    """STRING: the outcome of one ingested event (idempotency per event id)."""
    return f"{_t(tenant)}:event:{event_id}"


def renewal_key(tenant: str) -> str:
    """HASH pool id -> JSON auto-renewal settings."""
    return f"{_t(tenant)}:renewal"


def topoff_count_key(tenant: str, pool: str, period: str) -> str:
    return f"{_t(tenant)}:topoffs:{pool}:{period}"
