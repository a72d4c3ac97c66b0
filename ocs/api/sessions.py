"""Active Gy sessions of a subscription, and forced re-authorisation or termination."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ocs.api.models import NetworkOutcome, SessionView
from ocs.api.problems import not_found
from ocs.api.state import Admin, Api, ApiState, Reader
from ocs.network import SessionInfo

router = APIRouter(prefix="/v1/subscriptions", tags=["sessions"])
Wait = Annotated[float, Query(ge=0, le=10, description="seconds to wait for RAA/ASA")]


async def _sessions(api: ApiState, tenant: str, imsi: str) -> list[SessionInfo]:
    compiled = await api.catalogues.compiled(tenant)
    sim = compiled.catalogue.sims_by_imsi.get(imsi)
    if sim is None:
        raise not_found("subscription", imsi)
    return await api.network.sessions(tenant, [(sim.imsi, sim.msisdn)])


@router.get("/{imsi}/sessions", response_model=list[SessionView])
async def list_sessions(imsi: str, who: Reader, api: Api) -> list[SessionView]:
    return [SessionView(**api.network.describe(s)) for s in await _sessions(api, who.tenant, imsi)]


@router.post("/{imsi}/sessions/re-auth", response_model=list[NetworkOutcome])
async def force_re_auth(imsi: str, who: Admin, api: Api, wait: Wait = 2.0) -> list[NetworkOutcome]:
    """Send a Re-Auth-Request on every open session of the subscription."""
    sessions = await _sessions(api, who.tenant, imsi)
    outcomes = await api.network.send("rar", sessions, wait=wait)
    return [NetworkOutcome(**o) for o in outcomes]


@router.post("/{imsi}/sessions/abort", response_model=list[NetworkOutcome])
async def force_abort(imsi: str, who: Admin, api: Api, wait: Wait = 2.0) -> list[NetworkOutcome]:
    """Send an Abort-Session-Request on every open session of the subscription."""
    sessions = await _sessions(api, who.tenant, imsi)
    outcomes = await api.network.send("asr", sessions, wait=wait)
    return [NetworkOutcome(**o) for o in outcomes]
