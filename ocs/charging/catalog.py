"""Loading the catalogue's payers into Redis (`ocs catalog apply PATH`) and showing a
subscriber's balances (`ocs balance show MSISDN --json`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ocs.balance import BalanceStore, BucketSpec, BucketUnit
from ocs.balance.keys import CATALOG, MSISDN_INDEX, payer_tag
from ocs.config import Settings
from ocs.lifecycle import Lifecycle, PoolRules, pool_rules
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import load_catalogue
from ocs.rating.models import PayerKind
from ocs.store import open_redis

UNIT_BUCKETS = (BucketUnit.BYTES, BucketUnit.SECONDS, BucketUnit.MESSAGES, BucketUnit.EVENTS)
CREDIT_PRIORITY = 100  # postpaid overage is taken after every unit bucket


def _active_members(catalogue: Catalogue) -> Counter[str]:
    """Active twins per pool id (a flexible pool's size follows them)."""
    members: Counter[str] = Counter()
    for sim in catalogue.sims_by_imsi.values():
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
    for tag, (buckets, resize) in payer_buckets(catalogue).items():
        await store.provision(tag, buckets, now_ms, resize=resize)
    await Lifecycle(store.redis).setup(lifecycle_rules(catalogue), now_ms)
    index = msisdn_index(catalogue)
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.delete(MSISDN_INDEX)
        if index:
            pipe.hset(MSISDN_INDEX, mapping=index)  # type: ignore[arg-type]
        pipe.hset(
            CATALOG,
            mapping={"path": path, "tenant": catalogue.tenant.id, "applied_at": str(now_ms)},
        )
        await pipe.execute()


async def apply_catalog(path: str | Path, settings: Settings) -> dict[str, Any]:
    """`ocs catalog apply PATH`: validate the folder (raises ``CatalogueError``), create or
    resize its pools, create its wallets and contracts, index MSISDNs, and record the path so
    `ocs serve` (and running servers, within seconds) use it. Returns a summary."""
    folder, catalogue = await asyncio.to_thread(load_folder, path)
    handle = await open_redis(settings, timeout=10.0)
    try:
        await provision_catalogue(BalanceStore(handle.client), catalogue, str(folder))
    finally:
        await handle.close()
    summary: dict[str, Any] = dict(catalogue.summary())
    summary["tenant"] = catalogue.tenant.id
    summary["path"] = str(folder)
    return summary


async def balance_of(store: BalanceStore, msisdn: str) -> dict[str, Any] | None:
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
