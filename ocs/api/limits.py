"""Per-SIM limits over HTTP (docs/limits.md): ``GET``, ``PUT`` and ``DELETE
/v1/subscriptions/{imsi}/limits``, for any SIM of the caller's tenant (one of a range too).

A SIM's limits are the ``sim_limits`` section of the tenant's catalogue state, keyed by
IMSI, so a change is validated, compiled and put in force like every other catalogue change
(:mod:`ocs.provisioning.catalogues`); open sessions of the SIM get an RAR so that the next
grant follows the new caps. The caps' used and reserved units are read from the payers'
limits hashes, where ``charge.lua`` keeps them."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import Field, model_validator

from ocs.api.models import CapView, Id, LimitsView
from ocs.api.problems import not_found
from ocs.api.state import Admin, Api, ApiState, Reader
from ocs.balance import BalanceStore
from ocs.charging.limits import CapUsage, caps_in_use
from ocs.provisioning.catalogues import State, dump_item
from ocs.rating.catalogue import Catalogue, CompiledSim
from ocs.rating.models import CAP_FIELDS, Caps, Limits, SimLimits

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])
SECTION = "sim_limits"


class LimitsBody(Caps):
    """The SIM's own caps (in place of its plans' defaults): SIM-wide caps at the top level,
    and per twin under ``twins``."""

    twins: dict[Id, Limits] = Field(default_factory=dict, max_length=32)

    @model_validator(mode="after")
    def _some(self) -> LimitsBody:
        if not self.caps() and not self.twins:
            raise ValueError(f"give at least one cap ({', '.join(CAP_FIELDS)}) or twins")
        return self


def cap_views(usages: list[CapUsage]) -> list[CapView]:
    return [
        CapView(
            twin=None if u.ref.scope == "*" else u.ref.scope,
            cap=u.ref.name,
            limit=u.ref.cap,
            period=u.period,
            used=u.used,
            reserved=u.reserved,
            remaining=u.remaining,
            action=u.ref.action.kind,
        )
        for u in usages
    ]


async def sim_caps_view(
    store: BalanceStore, catalogue: Catalogue, sim: CompiledSim
) -> list[CapView]:
    return cap_views(await caps_in_use(store, catalogue, sim, int(time.time() * 1000)))


async def _sim(api: ApiState, tenant: str, imsi: str) -> tuple[Catalogue, CompiledSim]:
    catalogue = (await api.catalogues.compiled(tenant)).catalogue
    sim = catalogue.sims_by_imsi.get(imsi)
    if sim is None:
        raise not_found("subscription", imsi)
    return catalogue, sim


async def _view(api: ApiState, tenant: str, imsi: str) -> LimitsView:
    catalogue, sim = await _sim(api, tenant, imsi)
    own = catalogue.sim_limits.get(imsi)
    caps = await sim_caps_view(api.store, catalogue, sim)
    source: Literal["subscription", "plan", "none"] = "none"
    if own is not None:
        source = "subscription"
    elif caps:
        source = "plan"
    limits = None
    if own is not None:  # as given: without the IMSI and the empty defaults
        limits = {k: v for k, v in dump_item(own).items() if k != "imsi" and v not in ([], {})}
    return LimitsView(imsi=imsi, source=source, limits=limits, caps=caps)


@router.get("/{imsi}/limits", response_model=LimitsView)
async def get_limits(imsi: str, who: Reader, api: Api) -> LimitsView:
    """The SIM's caps in force (its own, or its plans' defaults), with used, reserved and
    remaining units in the current period."""
    return await _view(api, who.tenant, imsi)


@router.put("/{imsi}/limits", response_model=LimitsView)
async def put_limits(imsi: str, body: LimitsBody, who: Admin, api: Api) -> LimitsView:
    """Set the SIM's own caps (replacing any it had; they take the place of its plans'
    defaults). Open sessions of the SIM get an RAR."""
    _, sim = await _sim(api, who.tenant, imsi)
    item = dump_item(SimLimits.model_validate({**body.model_dump(), "imsi": imsi}))

    def mutate(state: State) -> None:
        state.setdefault(SECTION, {})[imsi] = item

    await api.catalogues.change(who.tenant, mutate, source=f"limits of SIM {imsi} set")
    await api.signal(who.tenant, [(sim.imsi, sim.msisdn)], "rar")
    return await _view(api, who.tenant, imsi)


@router.delete("/{imsi}/limits", status_code=204, response_class=Response)
async def delete_limits(imsi: str, who: Admin, api: Api) -> Response:
    """Remove the SIM's own caps (its plans' defaults apply again). Open sessions get an
    RAR. Removing limits a SIM does not have changes nothing."""
    catalogue, sim = await _sim(api, who.tenant, imsi)
    if imsi in catalogue.sim_limits:

        def mutate(state: State) -> None:
            (state.get(SECTION) or {}).pop(imsi, None)

        await api.catalogues.change(who.tenant, mutate, source=f"limits of SIM {imsi} removed")
        await api.signal(who.tenant, [(sim.imsi, sim.msisdn)], "rar")
    return Response(status_code=204)
