"""Balance thresholds of a pool or wallet over the API (docs/webhooks.md): ``PUT
/v1/pools/{id}/thresholds`` and ``PUT /v1/wallets/{id}/thresholds`` with e.g.
``{"percent": [80, 100], "absolute": [1000000000]}``. They override the catalogue's; each
crossing is a ``balance.threshold`` event, once per period."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import Field

from ocs.api.models import Id, Model
from ocs.api.pools import _pool, pool_tag
from ocs.api.state import Admin, Api, Reader
from ocs.api.wallets import _wallet, wallet_tag
from ocs.balance import BucketUnit
from ocs.balance.thresholds import PayerThresholds, put_api_thresholds, thresholds_in_force
from ocs.provisioning.payers import payer_thresholds

router = APIRouter(prefix="/v1", tags=["thresholds"])
Percent = Annotated[int, Field(ge=1, le=100, strict=True)]
Units = Annotated[int, Field(ge=0, lt=2**53, strict=True)]


class ThresholdsSet(Model):
    percent: list[Percent] = Field(default_factory=list, max_length=10)
    """events when the share used reaches each of these percentages of the allowance"""
    absolute: list[Units] = Field(default_factory=list, max_length=10)
    """events when what is left falls to each of these amounts (units, or minor units)"""


class ThresholdsView(ThresholdsSet):
    unit: str
    base: int | None  # what the percentages are of (None: what was credited)
    source: Literal["api", "catalogue", "none"]


def _view(t: PayerThresholds | None, source: str, unit: str, base: int | None) -> ThresholdsView:
    if t is None:
        return ThresholdsView(unit=unit, base=base, source="none")
    return ThresholdsView(
        percent=sorted(t.percent),
        absolute=sorted(t.absolute),
        unit=t.unit,
        base=t.base,
        source=source,  # type: ignore[arg-type]
    )


async def _pool_target(api: Api, tenant: str, pool_id: str) -> tuple[str, str, int | None]:
    compiled, pool = await _pool(api, tenant, pool_id)
    tag = pool_tag(tenant, pool)
    t = payer_thresholds(compiled.catalogue).get(tag)
    base = t.base if t is not None else pool.size
    return tag, str(pool.unit), base


@router.get("/pools/{pool_id}/thresholds", response_model=ThresholdsView)
async def get_pool_thresholds(pool_id: Id, who: Reader, api: Api) -> ThresholdsView:
    tag, unit, base = await _pool_target(api, who.tenant, pool_id)
    return _view(*await thresholds_in_force(api.redis, tag), unit, base)


@router.put("/pools/{pool_id}/thresholds", response_model=ThresholdsView)
async def set_pool_thresholds(
    pool_id: Id, body: ThresholdsSet, who: Admin, api: Api
) -> ThresholdsView:
    """Percentages are of the pool's allowance (flexible: as provisioned for its SIMs),
    absolute amounts in the pool's unit. Empty lists: no thresholds (the catalogue's too)."""
    tag, unit, base = await _pool_target(api, who.tenant, pool_id)
    t = PayerThresholds(unit, base, tuple(body.percent), tuple(body.absolute))
    await put_api_thresholds(api.redis, tag, t)
    return _view(t, "api", unit, base)


@router.get("/wallets/{wallet_id}/thresholds", response_model=ThresholdsView)
async def get_wallet_thresholds(wallet_id: Id, who: Reader, api: Api) -> ThresholdsView:
    wallet = await _wallet(api, who.tenant, wallet_id)
    tag = wallet_tag(who.tenant, wallet.id)
    return _view(*await thresholds_in_force(api.redis, tag), str(BucketUnit.MONEY), None)


@router.put("/wallets/{wallet_id}/thresholds", response_model=ThresholdsView)
async def set_wallet_thresholds(
    wallet_id: Id, body: ThresholdsSet, who: Admin, api: Api
) -> ThresholdsView:
    """Absolute amounts in minor units (a low-balance alert); percentages are of what the
    wallet was credited."""
    wallet = await _wallet(api, who.tenant, wallet_id)
    tag = wallet_tag(who.tenant, wallet.id)
    t = PayerThresholds(str(BucketUnit.MONEY), None, tuple(body.percent), tuple(body.absolute))
    await put_api_thresholds(api.redis, tag, t)
    return _view(t, "api", str(BucketUnit.MONEY), None)
