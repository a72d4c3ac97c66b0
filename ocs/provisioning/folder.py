"""A catalogue folder (``ocs catalog apply PATH``, ``ocs demo``) as one front door to the
tenant's provisioning state.

What a folder owns: the product sections (countries, regions, zone sets, time bands, tax
profiles, plans, add-ons), replaced as a whole by each apply, and the entities it declares
(accounts, pools, wallets, contracts, SIMs, SIM ranges), by id. Re-applying the folder
resets those entities to its text and removes the ones a previous apply of a folder
declared and this one no longer does. What the API and CRM import create is theirs: an
apply never drops it. An id the folder declares that the API created before becomes the
folder's (the folder's text wins, as for any entity it declares); a change that no longer
compiles (an API-created SIM on a plan the folder removed) refuses the apply with the
reason, and an IMSI, MSISDN or ICCID of another tenant refuses it naming file and
identity. See docs/provisioning.md.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

from ocs.balance import BalanceStore
from ocs.config import Settings
from ocs.provisioning.catalogues import (
    ENTITY_SECTIONS,
    Applied,
    State,
    TenantCatalogues,
    item_id,
    merge_documents,
)
from ocs.provisioning.errors import Refused
from ocs.provisioning.identity import IdentityTaken
from ocs.provisioning.states import Actor, cli_actor
from ocs.rating.catalogue import Catalogue
from ocs.rating.errors import CatalogueError, Issue
from ocs.rating.loader import load_catalogue, parse_document
from ocs.redis_client import open_redis

FOLDER: Final = "folder"
"""State member recording the last applied folder: ``{"path": ..., "items": {section:
[id, ...]}}`` (the entities it declared). Not a catalogue section: never compiled."""


def read_documents(folder: Path) -> dict[str, Any]:
    """Every catalogue file of ``folder`` parsed, by its name relative to the folder (the
    folder has been validated by ``load_catalogue`` before)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    return {
        str(p.relative_to(folder)): parse_document(p.read_text(encoding="utf-8")) for p in files
    }


def declared(documents: dict[str, Any]) -> dict[str, list[str]]:
    """The entity ids the documents declare, by section."""
    out: dict[str, list[str]] = {}
    for document in documents.values():
        if not isinstance(document, dict):
            continue
        for section in ENTITY_SECTIONS:
            for raw in document.get(section) or []:
                out.setdefault(section, []).append(item_id(section, raw))
    return out


def merge_folder(state: State, documents: dict[str, Any], tenant: str, path: str) -> State:
    """``state`` with the folder's documents in force (see the module doc)."""
    now = declared(documents)
    previous: dict[str, list[str]] = (state.get(FOLDER) or {}).get("items") or {}
    out = merge_documents(state, documents, tenant)
    for section, ids in previous.items():
        gone = set(ids) - set(now.get(section, ()))
        if gone and isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k not in gone}
    out[FOLDER] = {"path": path, "items": now}
    return out


def _where(documents: dict[str, Any], folder: Path, exc: IdentityTaken) -> Issue:
    """The file and item declaring the identity ``exc`` names (a range: the range)."""
    reason = str(exc)
    for name, document in documents.items():
        if not isinstance(document, dict):
            continue
        for index, raw in enumerate(document.get("sims") or []):
            if isinstance(raw, dict) and str(raw.get(exc.kind)) == exc.value:
                return Issue(str(folder / name), f"sims[{index}].{exc.kind}", reason)
        for index, raw in enumerate(document.get("sim_ranges") or []):
            if isinstance(raw, dict) and _in_range(raw, exc.kind, exc.value):
                return Issue(str(folder / name), f"sim_ranges[{index}]", reason)
    return Issue(str(folder), "", reason)


def _in_range(raw: dict[str, Any], kind: str, value: str) -> bool:
    first = raw.get(f"{kind}_first")
    count = raw.get("count")
    if not isinstance(first, str) or not isinstance(count, int) or len(first) != len(value):
        return False
    return int(first) <= int(value) < int(first) + count


def _load(path: str | Path) -> tuple[Path, Catalogue, dict[str, Any]]:
    folder = Path(path).resolve()
    catalogue = load_catalogue(folder)  # issues name the folder's files
    return folder, catalogue, read_documents(folder)


async def apply_folder(
    store: BalanceStore,
    path: str | Path,
    data_dir: Path,
    *,
    source: str = "catalog apply",
    actor: Actor | None = None,
) -> tuple[Path, Catalogue, Applied]:
    """Validate the folder (issues name its files), merge it into its tenant's state and put
    that in force for the API and the Diameter side; the SIM state moves it makes are
    checked and journaled as ``actor``'s (docs/sim-states.md). Raises ``CatalogueError``."""
    folder, catalogue, documents = await asyncio.to_thread(_load, path)
    tenant = catalogue.tenant.id

    def mutate(state: State) -> None:
        merged = merge_folder(state, documents, tenant, str(folder))
        state.clear()
        state.update(merged)

    catalogues = TenantCatalogues(store, data_dir)
    try:
        applied = await catalogues.change(
            tenant, mutate, source=f"{source} {folder}", serve=True, actor=actor
        )
    except IdentityTaken as exc:
        raise CatalogueError([_where(documents, folder, exc)]) from None
    except Refused as exc:
        issues = [
            Issue(str(i.get("file", folder)), str(i.get("path", "")), str(i.get("reason", "")))
            for i in exc.extra.get("issues", [])
        ] or [Issue(str(folder), "", exc.detail or exc.title)]
        raise CatalogueError(issues) from None
    return folder, catalogue, applied


async def apply_catalog(path: str | Path, settings: Settings) -> dict[str, Any]:
    """`ocs catalog apply PATH`: validate the folder (raises ``CatalogueError``), merge it
    into its tenant's state (API-created items stay), provision the payers and put the
    result in force (running servers pick it up within seconds). Returns a summary."""
    handle = await open_redis(settings, timeout=10.0)
    try:
        folder, folder_catalogue, applied = await apply_folder(
            BalanceStore(handle.client), path, settings.data_dir, actor=cli_actor()
        )
    finally:
        await handle.close()
    summary: dict[str, Any] = dict(applied.summary)
    summary["tenant"] = folder_catalogue.tenant.id
    summary["path"] = str(folder)
    summary["revision"] = applied.revision
    summary["from_folder"] = dict(folder_catalogue.summary())
    return summary
