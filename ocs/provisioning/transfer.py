"""Moving a SIM between tenants: the one way an IMSI, MSISDN or ICCID changes owner.

``ocs identity transfer IMSI --from A --to B`` (an operator action: tenant tokens never
reach another tenant) removes the SIM from A's state (an API- or import-created SIM; one
declared by A's catalogue folder must be removed from the folder and the folder applied),
puts A's catalogue in force without it (its identities are released), and hands the IMSI,
MSISDN and ICCID over to B. B then creates the subscription with its own account, plan and
payer (``POST /v1/subscriptions``, an import row or its catalogue); nobody else can claim
them meanwhile. A's open sessions of the SIM end with its next CCR (5030)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ocs.balance import BalanceStore
from ocs.provisioning.catalogues import State, TenantCatalogues
from ocs.provisioning.errors import Refused
from ocs.provisioning.identity import hand_over, ident


async def transfer_sim(
    store: BalanceStore, data_dir: Path, imsi: str, source: str, target: str
) -> dict[str, Any]:
    """Move the SIM ``imsi`` from tenant ``source`` to ``target`` (see the module doc).
    Raises :class:`Refused` (unknown SIM, declared by a folder, same tenant) or
    ``IdentityTaken`` (a third tenant holds one of its identities)."""
    if source == target:
        raise Refused(409, "same-tenant", "Same tenant", f"{imsi} is already {target!r}'s")
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

    applied = await TenantCatalogues(store, data_dir).change(
        source, remove, source=f"SIM {imsi} transferred to {target}"
    )
    ids = [ident("imsi", imsi)]
    ids += [ident(k, str(moved[k])) for k in ("msisdn", "iccid") if moved.get(k)]
    await hand_over(store.redis, ids, source, target)
    return {
        "imsi": imsi,
        "from": source,
        "to": target,
        "identities": ids,
        "source_revision": applied.revision,
    }
