"""Redis keys of each tenant's provisioning state (catalogue, accounts, payers, SIMs).

They keep the ``ocs:api:{api:T}`` prefix they had when only the API wrote them, so existing
deployments keep their state; every key of one tenant shares the hash tag ``{api:T}``.
The identity owners are in :mod:`ocs.provisioning.identity`."""

from __future__ import annotations

from typing import Final

PREFIX: Final = "ocs:api"


def tenant_prefix(tenant: str) -> str:
    return f"{PREFIX}:{{api:{tenant}}}"


def state_key(tenant: str) -> str:
    """STRING: the tenant's catalogue state as JSON ({section: {id: item}})."""
    return f"{tenant_prefix(tenant)}:state"


def revision_key(tenant: str) -> str:
    return f"{tenant_prefix(tenant)}:rev"


def versions_key(tenant: str) -> str:
    """LIST of applied revisions (JSON), newest first."""
    return f"{tenant_prefix(tenant)}:versions"


def lock_key(tenant: str) -> str:
    return f"{tenant_prefix(tenant)}:lock"


def sim_history_key(tenant: str, subject: str) -> str:
    """LIST of the state moves (JSON, newest first, ``states.HISTORY_KEPT``) of one SIM (its
    IMSI) or one range (``range:<id>``)."""
    return f"{tenant_prefix(tenant)}:simhist:{subject}"


def journal_key(tenant: str) -> str:
    """HASH: the pending journal of the tenant's last change (revision, moves, events,
    in-force stamp, cursor), stored with its state and deleted once written out
    (:mod:`ocs.provisioning.journal`)."""
    return f"{tenant_prefix(tenant)}:journal"


def state_moves_key(tenant: str) -> str:
    """STREAM of every state move of the tenant's SIMs, drained into PostgreSQL
    (``sim_state_changes``) by ``ocs drain``, then trimmed."""
    return f"{tenant_prefix(tenant)}:statemoves"


ACTIVATIONS: Final = "ocs:states:activate"
"""SET of JSON [tenant, imsi, reason]: test SIMs charging asks to move to active (plans
with ``test_allowance.activate``); ``ocs.charging.states.apply_activations`` makes them."""

IN_FORCE: Final = "ocs:catalog:tenants"
"""HASH tenant -> stamp (``<ms>.<revision>``) of the state in force: every charging node
loads each tenant's state (:func:`state_key`) when its stamp changes."""


def msisdn_key(tenant: str) -> str:
    """HASH MSISDN -> JSON {imsi, payers} of the tenant's SIMs (``ocs balance show``)."""
    return f"ocs:msisdn:{tenant}"


TRANSFERS: Final = "ocs:identity:transfers"
"""LIST of the SIM transfers between tenants (JSON: at, actor, imsi, from, to, identities),
newest first: the audit trail of :mod:`ocs.provisioning.transfer`."""
