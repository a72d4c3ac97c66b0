"""Pools: status (size, used, reserved, members, lifecycle), top-off bundles, auto top-off
settings (``auto-renewal``: an add-on bought automatically when the pool runs short, capped
per period; applied by ``charge.lua``, docs/lifecycle.md)."""

from __future__ import annotations

import json
import time
from typing import Final

from fastapi import APIRouter

from ocs.api.idempotency import IdempotencyKey, claim, fingerprint
from ocs.api.keys import renewal_key
from ocs.api.models import AutoRenewal, PoolView, TopOffRequest, TopOffResult
from ocs.api.problems import Problem, not_found
from ocs.api.state import Admin, Api, ApiState, Reader, TopUp
from ocs.api.views import bucket_views
from ocs.balance import BucketUnit
from ocs.balance.keys import payer_tag
from ocs.lifecycle import Lifecycle
from ocs.lifecycle.rules import topoff_rule
from ocs.provisioning.catalogues import Compiled
from ocs.rating.context import SERVICE_UNIT
from ocs.rating.models import PayerKind, Pool

router = APIRouter(prefix="/v1/pools", tags=["pools"])
TOPOFF_PRIORITY: Final = 50  # after the pool's own bucket, before postpaid credit (100)
DAY_MS: Final = 86_400_000


def pool_tag(tenant: str, pool: Pool) -> str:
    kind = PayerKind.PREPAID_POOL if pool.payment == "prepaid" else PayerKind.POSTPAID_POOL
    return payer_tag(tenant, str(kind), pool.id)


async def _pool(api: ApiState, tenant: str, pool_id: str) -> tuple[Compiled, Pool]:
    compiled = await api.catalogues.compiled(tenant)
    pool = compiled.catalogue.pools.get(pool_id)
    if pool is None:
        raise not_found("pool", pool_id)
    return compiled, pool


@router.get("/{pool_id}", response_model=PoolView)
async def get_pool(pool_id: str, who: Reader, api: Api) -> PoolView:
    compiled, pool = await _pool(api, who.tenant, pool_id)
    tag = pool_tag(who.tenant, pool)
    buckets = await api.store.buckets(tag)
    unit = str(pool.unit)
    units = [b for b in buckets if b.unit == unit]
    members = compiled.payer_sims().get(tag, [])
    active = 0
    for imsi, _ in members:
        sim = compiled.catalogue.sims_by_imsi[imsi]
        if sim.state == "active" and any(t.active and t.payer.id == pool.id for t in sim.twins):
            active += 1
    return PoolView(
        id=pool.id,
        name=pool.name,
        account=pool.account,
        kind=pool.kind,
        payment=pool.payment,
        unit=unit,
        size=sum(b.credited for b in units),
        available=sum(b.available for b in units),
        used=sum(b.used for b in units),
        reserved=sum(b.reserved for b in units),
        members=len(members),
        active_members=active,
        buckets=bucket_views(buckets),
        lifecycle=await Lifecycle(api.store.redis).state(tag),
    )


@router.post("/{pool_id}/top-offs", status_code=201, response_model=TopOffResult)
async def buy_top_off(
    pool_id: str, body: TopOffRequest, key: IdempotencyKey, who: TopUp, api: Api
) -> TopOffResult:
    """Add a top-off bundle (an add-on of the catalogue) to the pool as a bucket valid for
    the add-on's validity; its price is in the balance record for the bill run. Active
    sessions on the pool get a Re-Auth-Request."""
    compiled, pool = await _pool(api, who.tenant, pool_id)
    addon = compiled.catalogue.addons.get(body.addon)
    if addon is None:
        raise not_found("add-on", body.addon)
    if SERVICE_UNIT[addon.service] != pool.unit:
        raise Problem(
            422,
            "addon-mismatch",
            "Add-on does not fit the pool",
            f"add-on {addon.id!r} is {addon.service}, pool {pool.id!r} holds {pool.unit}",
        )
    first = await claim(api.store.batch, who.tenant, "topoff", key, fingerprint(pool_id, addon.id))
    tag = pool_tag(who.tenant, pool)
    now_ms = int(time.time() * 1000)
    bucket = f"{pool.id}:topoff:{key}"
    valid_to = now_ms + addon.validity_days * DAY_MS
    definition = {
        "unit": str(BucketUnit(str(pool.unit))),
        "prio": TOPOFF_PRIORITY,
        "from": 0,
        "to": valid_to,
        "unlimited": False,
    }
    context = {
        "api": "top-off",
        "addon": addon.id,
        "price": addon.price,
        "currency": addon.currency,
    }
    await api.store.adjust(
        tag,
        f"api:topoff:{key}",
        [{"op": "define", "id": bucket, "def": definition, "size": addon.units}],
        now_ms,
        context,
    )
    if first:
        api.signal_payer(compiled, tag, "rar")
    stored = next((b for b in await api.store.buckets(tag) if b.id == bucket), None)
    return TopOffResult(
        pool=pool.id,
        addon=addon.id,
        bucket=bucket,
        units=addon.units,
        price=addon.price,
        currency=addon.currency,
        valid_to=stored.valid_to if stored else valid_to,
        replayed=not first,
    )


@router.get("/{pool_id}/auto-renewal", response_model=AutoRenewal)
async def get_auto_renewal(pool_id: str, who: Reader, api: Api) -> AutoRenewal:
    await _pool(api, who.tenant, pool_id)
    raw = await api.redis.hget(renewal_key(who.tenant), pool_id)
    return AutoRenewal.model_validate(json.loads(raw)) if raw else AutoRenewal()


@router.put("/{pool_id}/auto-renewal", response_model=AutoRenewal)
async def set_auto_renewal(pool_id: str, body: AutoRenewal, who: Admin, api: Api) -> AutoRenewal:
    compiled, pool = await _pool(api, who.tenant, pool_id)
    if body.enabled and body.addon is None:
        raise Problem(422, "addon-required", "Add-on required", "auto-renewal needs an add-on")
    if body.addon is not None:
        addon = compiled.catalogue.addons.get(body.addon)
        if addon is None:
            raise not_found("add-on", body.addon)
        if SERVICE_UNIT[addon.service] != pool.unit:
            raise Problem(422, "addon-mismatch", "Add-on does not fit the pool", addon.id)
    await api.redis.hset(renewal_key(who.tenant), pool_id, body.model_dump_json())
    # what charge.lua applies when a reservation on the pool runs short, or leaves it below
    # threshold_percent of its allowance (docs/lifecycle.md)
    rule = None
    if body.enabled and body.addon is not None:
        addon = compiled.catalogue.addons[body.addon]
        rule = topoff_rule(pool, addon, body.max_per_period, body.threshold_percent)
    await Lifecycle(api.store.redis).set_api_top_off(pool_tag(who.tenant, pool), rule)
    return body
