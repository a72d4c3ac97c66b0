"""A compiled catalogue's payers in Redis (buckets, lifecycle, MSISDN index, the folder
shared with other nodes) and a subscriber's balances (`ocs balance show MSISDN --json`).
`ocs catalog apply` itself is :func:`ocs.provisioning.folder.apply_catalog`."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ocs.balance import BalanceStore, BucketSpec, BucketUnit
from ocs.balance.keys import (
    CATALOG,
    CATALOG_FILES,
    CATALOG_FILES_VERSION,
    MSISDN_INDEX,
    payer_tag,
)
from ocs.balance.thresholds import PayerThresholds, put_catalogue_thresholds
from ocs.config import Settings
from ocs.lifecycle import Lifecycle, PoolRules, pool_rules
from ocs.provisioning.identity import owner_of
from ocs.provisioning.keys import msisdn_key
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import load_catalogue
from ocs.rating.models import Payer, PayerKind
from ocs.rating.multilevel import chain_root
from ocs.redis_client import open_redis

UNIT_BUCKETS = (BucketUnit.BYTES, BucketUnit.SECONDS, BucketUnit.MESSAGES, BucketUnit.EVENTS)
CREDIT_PRIORITY = 100  # postpaid overage is taken after every unit bucket


def _active_members(catalogue: Catalogue) -> Counter[str]:
    """Active twins of active SIMs per pool id (a flexible pool's size follows them; a SIM
    in inventory, test, suspended, deactivated or terminated brings nothing:
    docs/sim-states.md)."""
    members: Counter[str] = Counter()
    for sim in catalogue.sims_by_imsi.values():
        if sim.state != "active":
            continue
        for twin in sim.twins:
            if twin.active and twin.payer.kind in (
                PayerKind.PREPAID_POOL,
                PayerKind.POSTPAID_POOL,
            ):
                members[twin.payer.id] += 1
    return members


def payer_buckets(catalogue: Catalogue) -> dict[str, tuple[list[BucketSpec], bool]]:
    """Every payer's buckets, and whether re-applying resizes them (pools: yes; wallets: no,
    their balance moves by top-ups and usage)."""
    tenant = catalogue.tenant.id
    members = _active_members(catalogue)
    out: dict[str, tuple[list[BucketSpec], bool]] = {}
    for pool in catalogue.pools.values():
        unit = BucketUnit(str(pool.unit))
        # flexible: `size` is the allowance each active SIM brings
        size = pool.size * members[pool.id] if pool.kind == "flexible" else pool.size
        kind = PayerKind.PREPAID_POOL if pool.payment == "prepaid" else PayerKind.POSTPAID_POOL
        buckets = [BucketSpec(pool.id, unit, size)]
        if kind is PayerKind.POSTPAID_POOL:
            limit = pool.credit_limit
            buckets.append(
                BucketSpec(
                    f"{pool.id}:credit",
                    BucketUnit.MONEY,
                    limit or 0,
                    priority=CREDIT_PRIORITY,
                    unlimited=limit is None,
                )
            )
        out[payer_tag(tenant, str(kind), pool.id)] = (buckets, True)
    for wallet in catalogue.wallets.values():
        out[payer_tag(tenant, str(PayerKind.WALLET), wallet.id)] = (
            [BucketSpec(wallet.id, BucketUnit.MONEY, wallet.balance)],
            False,
        )
    for contract in catalogue.contracts.values():
        out[payer_tag(tenant, str(PayerKind.EXTERNAL_CONTRACT), contract.id)] = (
            [BucketSpec(f"{contract.id}:{u}", u, 0, unlimited=True) for u in UNIT_BUCKETS],
            True,
        )
    return out


def payer_roots(catalogue: Catalogue) -> dict[str, str]:
    """Payer tag -> its reseller chain's root tag, for every payer owned by an account with
    levels above it (``ocs.rating.multilevel.chain_root``): their keys share the root's
    slot so that one script reserves at every level (``ocs.balance.keys``)."""
    tenant = catalogue.tenant.id
    out: dict[str, str] = {}
    for tag in payer_buckets(catalogue):
        kind, pid = tag.split(":", 2)[1:]
        payer = Payer(kind=PayerKind(kind), id=pid)
        root = chain_root(catalogue, payer)
        if root != payer:
            out[tag] = payer_tag(tenant, str(root.kind), root.id)
    return out


def payer_thresholds(catalogue: Catalogue) -> dict[str, PayerThresholds | None]:
    """Every pool's and wallet's thresholds of the catalogue (None: none); a pool's
    percentages are of its allowance as provisioned (flexible: per active SIM)."""
    tenant = catalogue.tenant.id
    members = _active_members(catalogue)
    out: dict[str, PayerThresholds | None] = {}
    for pool in catalogue.pools.values():
        kind = PayerKind.PREPAID_POOL if pool.payment == "prepaid" else PayerKind.POSTPAID_POOL
        size = pool.size * members[pool.id] if pool.kind == "flexible" else pool.size
        t = pool.thresholds
        out[payer_tag(tenant, str(kind), pool.id)] = (
            None
            if t is None
            else PayerThresholds(str(pool.unit), size, tuple(t.percent), tuple(t.absolute))
        )
    for wallet in catalogue.wallets.values():
        w = wallet.thresholds
        out[payer_tag(tenant, str(PayerKind.WALLET), wallet.id)] = (
            None
            if w is None
            else PayerThresholds(str(BucketUnit.MONEY), None, tuple(w.percent), tuple(w.absolute))
        )
    return out


def msisdn_index(catalogue: Catalogue) -> dict[str, str]:
    """MSISDN -> JSON {imsi, payers: [tag, ...]} in twin priority order."""
    tenant = catalogue.tenant.id
    out: dict[str, str] = {}
    for sim in catalogue.sims_by_imsi.values():
        if sim.msisdn is None:
            continue
        payers: list[str] = []
        for twin in sim.twins:
            tag = payer_tag(tenant, str(twin.payer.kind), twin.payer.id)
            if tag not in payers:
                payers.append(tag)
        out[sim.msisdn] = json.dumps({"imsi": sim.imsi, "payers": payers})
    return out


def load_folder(path: str | Path) -> tuple[Path, Catalogue]:
    """The absolute folder and its validated catalogue (raises ``CatalogueError``)."""
    folder = Path(path).resolve()
    return folder, load_catalogue(folder)


def lifecycle_rules(catalogue: Catalogue) -> list[PoolRules]:
    """Every pool's lifecycle rules, with the sizes provisioned (flexible: per active SIM)."""
    members = _active_members(catalogue)
    sizes = {
        p.id: p.size * members[p.id] if p.kind == "flexible" else p.size
        for p in catalogue.pools.values()
    }
    return pool_rules(catalogue, sizes)


async def provision_catalogue(
    store: BalanceStore, catalogue: Catalogue, path: str, *, now_ms: int | None = None
) -> None:
    """Create or resize the payers' buckets, set up the pools' lifecycle (rules, first
    period), index MSISDNs and record the catalogue. ``now_ms``: the clock (tests)."""
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    roots = payer_roots(catalogue)
    for tag, (buckets, resize) in payer_buckets(catalogue).items():
        await store.provision(tag, buckets, now_ms, resize=resize, root=roots.get(tag, ""))
    await Lifecycle(store.redis).setup(lifecycle_rules(catalogue), now_ms)
    await put_catalogue_thresholds(store.redis, payer_thresholds(catalogue))
    index = msisdn_index(catalogue)
    files = await asyncio.to_thread(folder_files, Path(path))
    applied_at = str(now_ms)
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.delete(MSISDN_INDEX)
        if index:
            pipe.hset(MSISDN_INDEX, mapping=index)  # type: ignore[arg-type]
        share_files(pipe, files, applied_at)
        pipe.hset(
            CATALOG,
            mapping={"path": path, "tenant": catalogue.tenant.id, "applied_at": applied_at},
        )
        await pipe.execute()


# -- the applied folder, shared through Redis ------------------------------------------------
# `ocs catalog apply` and the API write the catalogue folder on the machine they run on; a
# server on another node (behind the same Diameter routing agent, on the same Redis) has no
# such folder. So the folder's files go to Redis with the pointer, and a server whose copy
# is missing or older writes them under its own data_dir and loads them from there.


def folder_files(folder: Path) -> dict[str, str]:
    """The catalogue files of ``folder`` (what the loader reads), by relative name."""
    return {
        str(p.relative_to(folder)): p.read_text(encoding="utf-8")
        for p in sorted(folder.rglob("*"))
        if p.suffix in (".yaml", ".yml") and p.is_file()
    }


def share_files(pipe: Any, files: dict[str, str], applied_at: str) -> None:
    """Queue on ``pipe`` (before the pointer is set) the files of the catalogue in force."""
    pipe.delete(CATALOG_FILES)
    pipe.hset(CATALOG_FILES, mapping={**files, CATALOG_FILES_VERSION: applied_at})


async def fetch_files(redis: Any, applied_at: str, data_dir: Path) -> Path | None:
    """Write the shared files of the catalogue applied at ``applied_at`` under ``data_dir``
    and return the folder; None when Redis holds no files, or those of another apply (one
    that is still being recorded: the next pass picks it up)."""
    raw = await redis.hgetall(CATALOG_FILES)
    files = {_text(k): _text(v) for k, v in raw.items()}
    if files.pop(CATALOG_FILES_VERSION, None) != applied_at or not files:
        return None
    name = "".join(c if c.isalnum() or c in "-." else "_" for c in applied_at)
    folder = data_dir / "catalogues" / "shared" / name
    await asyncio.to_thread(_write_files, folder, files)
    await asyncio.to_thread(_prune, folder.parent, keep=SHARED_KEPT)
    return folder


SHARED_KEPT = 2  # fetched folders kept per node: the one in force and the one before


def _prune(parent: Path, *, keep: int) -> None:
    folders = sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _write_files(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        target = folder / rel
        if target.resolve().is_relative_to(folder.resolve()):  # never outside the folder
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(target)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def balance_of(store: BalanceStore, msisdn: str) -> dict[str, Any] | None:
    """The payers of the SIM with ``msisdn``, in the index of the tenant holding it (else
    the single index of a catalogue recorded by ``provision_catalogue``)."""
    owner = await owner_of(store.redis, "msisdn", msisdn)
    raw = None if owner is None else await store.redis.hget(msisdn_key(owner), msisdn)
    if raw is None:
        raw = await store.redis.hget(MSISDN_INDEX, msisdn)
    if raw is None:
        return None
    entry = json.loads(raw)
    payers = []
    for tag in entry["payers"]:
        _, kind, payer_id = tag.split(":", 2)
        buckets = await store.buckets(tag)
        payer = {
            "payer": tag,
            "kind": kind,
            "id": payer_id,
            "reservations": await store.live_reservations(tag),
            "buckets": [b.as_dict() for b in buckets],
        }
        life = await Lifecycle(store.redis).state(tag)
        if life is not None:
            payer["lifecycle"] = life  # period, adaptive tier, auto top-offs, suspension
        payers.append(payer)
    return {"msisdn": msisdn, "imsi": entry["imsi"], "payers": payers}


async def show_balance(msisdn: str, settings: Settings) -> dict[str, Any]:
    """`ocs balance show MSISDN --json`: the subscriber's payers and their buckets (credited,
    available, reserved, used). Raises ``LookupError`` for an unknown MSISDN."""
    handle = await open_redis(settings, timeout=10.0)
    try:
        found = await balance_of(BalanceStore(handle.client), msisdn)
    finally:
        await handle.close()
    if found is None:
        raise LookupError(f"no subscriber with MSISDN {msisdn}")
    return found
