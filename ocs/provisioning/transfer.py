"""Moving a SIM between tenants: the one way an IMSI, MSISDN or ICCID changes owner.

An operator action, never a tenant's: ``ocs identity transfer IMSI --from A --to B`` or
``POST /v1/operator/transfers`` with an operator token (tenant tokens never reach another
tenant). It removes the SIM from A's state (an API- or import-created SIM; one declared by
A's catalogue folder must be removed from the folder and the folder applied), puts A's
catalogue in force without it (its identities are released), and hands the IMSI, MSISDN and
ICCID over to B. B then creates the subscription with its own account, plan and payer
(``POST /v1/subscriptions``, an import row or its catalogue); nobody else can claim them
meanwhile.

What is refused (HTTP 409, nothing changed), decided here for every front door:

* ``sim-in-session``: the SIM has an open Gy session in A (the network's session index):
  end it first (``POST /v1/subscriptions/{imsi}/sessions/abort`` by A, or wait for CCR-T).
  A session opened after this check ends with its next CCR (5030) once the SIM is gone;
* ``balance-not-settled``: a payer only this SIM uses in A (its own wallet or pool) holds a
  non-zero available or reserved amount in a bucket: the money or units belong to A's
  customer, and a transfer must not strand them. Refund or expire them first. A payer other
  SIMs of A share stays with A's customer and is no reason to refuse;
* ``declared-by-folder``, ``same-tenant``, and ``not-found`` (404) as before.

Every transfer is audited: an entry in :data:`ocs.provisioning.keys.TRANSFERS` (newest
first, :data:`AUDIT_KEPT` kept) with the time, who asked (``actor``), both tenants and the
identities moved, and a log line; A's catalogue versions name it too.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Final

from ocs.balance import BalanceStore
from ocs.network.dispatch import NetworkCommands
from ocs.provisioning.catalogues import State, TenantCatalogues
from ocs.provisioning.errors import Refused
from ocs.provisioning.identity import hand_over, ident
from ocs.provisioning.keys import TRANSFERS

log = logging.getLogger(__name__)

AUDIT_KEPT: Final = 10_000
BALANCE_KINDS: Final = ("prepaid_pool", "postpaid_pool", "wallet")  # payers that hold amounts


async def transfer_sim(
    store: BalanceStore,
    data_dir: Path,
    imsi: str,
    source: str,
    target: str,
    *,
    actor: str = "cli",
    catalogues: TenantCatalogues | None = None,
) -> dict[str, Any]:
    """Move the SIM ``imsi`` from tenant ``source`` to ``target`` (see the module doc).
    Raises :class:`Refused` (unknown SIM, in session, balance not settled, declared by a
    folder, same tenant) or ``IdentityTaken`` (a third tenant holds one of its identities).
    ``actor`` names who asked, for the audit entry; ``catalogues``: the caller's (the API's
    broadcasts the change to the charging nodes at once)."""
    if source == target:
        raise Refused(409, "same-tenant", "Same tenant", f"{imsi} is already {target!r}'s")
    catalogues = catalogues or TenantCatalogues(store, data_dir)
    _, before = await catalogues.load_state(source)
    await refuse_unsettled(store, source, imsi, before)
    moved: dict[str, Any] = {}

    def remove(state: State) -> None:
        sims = state.get("sims") or {}
        if imsi not in sims:
            raise Refused(404, "not-found", "SIM not found", f"no SIM {imsi} in {source!r}")
        declared = ((state.get("folder") or {}).get("items") or {}).get("sims") or []
        if imsi in declared:
            folder = (state.get("folder") or {}).get("path", "?")
            raise Refused(
                409,
                "declared-by-folder",
                "Declared by a catalogue folder",
                f"SIM {imsi} is declared by {folder}: remove it there and apply the folder",
            )
        moved.update(sims.pop(imsi))
        # its own caps (docs/limits.md) are the source tenant's terms: they stay behind
        (state.get("sim_limits") or {}).pop(imsi, None)

    applied = await catalogues.change(
        source, remove, source=f"SIM {imsi} transferred to {target} ({actor})"
    )
    ids = [ident("imsi", imsi)]
    ids += [ident(k, str(moved[k])) for k in ("msisdn", "iccid") if moved.get(k)]
    await hand_over(store.redis, ids, source, target)
    summary = {
        "imsi": imsi,
        "from": source,
        "to": target,
        "identities": ids,
        "source_revision": applied.revision,
    }
    entry = {"at": int(time.time() * 1000), "actor": actor, **summary}
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.lpush(TRANSFERS, json.dumps(entry, separators=(",", ":")))
        pipe.ltrim(TRANSFERS, 0, AUDIT_KEPT - 1)
        await pipe.execute()
    log.warning("SIM %s transferred from %s to %s by %s", imsi, source, target, actor)
    return summary


async def refuse_unsettled(store: BalanceStore, tenant: str, imsi: str, state: State) -> None:
    """Raise :class:`Refused` (409) if the SIM has an open session in ``tenant`` or a payer of
    its own with a non-zero balance (see the module doc); a SIM the state lacks passes (the
    change itself answers 404)."""
    sim = (state.get("sims") or {}).get(imsi)
    if sim is None:
        return
    open_sessions = await NetworkCommands(store.redis).sessions(tenant, [(imsi, sim.get("msisdn"))])
    if open_sessions:
        raise Refused(
            409,
            "sim-in-session",
            "SIM in session",
            f"SIM {imsi} has {len(open_sessions)} open session(s): end them first",
        )
    for kind, payer_id in _own_payers(state, imsi):
        for bucket in await store.buckets(f"{tenant}:{kind}:{payer_id}"):
            if not bucket.unlimited and (bucket.available or bucket.reserved):
                raise Refused(
                    409,
                    "balance-not-settled",
                    "Balance not settled",
                    f"{kind} {payer_id!r} of SIM {imsi} holds {bucket.available} available"
                    f" and {bucket.reserved} reserved {bucket.unit} in bucket {bucket.id!r}:"
                    " settle it first",
                )


def _own_payers(state: State, imsi: str) -> list[tuple[str, str]]:
    """The payers (kind, id) of the SIM's twins that no other SIM or SIM range of the state
    uses (shared payers stay with the customer)."""

    def payers(item: dict[str, Any]) -> set[tuple[str, str]]:
        out = set()
        for twin in item.get("twins") or []:
            payer = twin.get("payer") or {}
            if payer.get("kind") in BALANCE_KINDS:
                out.add((str(payer["kind"]), str(payer["id"])))
        return out

    mine = payers((state.get("sims") or {})[imsi])
    for section in ("sims", "sim_ranges"):
        for key, item in (state.get(section) or {}).items():
            if section == "sims" and key == imsi:
                continue
            mine -= payers(item)
            if not mine:
                return []
    for account in (state.get("accounts") or {}).values():
        payer = account.get("payer") or {}
        mine.discard((str(payer.get("kind")), str(payer.get("id"))))
    return sorted(mine)
