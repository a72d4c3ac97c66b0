"""Catalogue: apply documents (the format of ``policies/``), list plans and revisions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ocs.api.models import ApplyResult, CatalogueApply, PlanVersionView, PlanView, RevisionView
from ocs.api.state import Admin, Api, Reader
from ocs.provisioning.catalogues import State, merge_documents

router = APIRouter(prefix="/v1/catalogue", tags=["catalogue"])


@router.post("", response_model=ApplyResult)
async def apply(body: CatalogueApply, who: Admin, api: Api) -> ApplyResult:
    """Validate and put in force: product sections given (plans, zones, add-ons, ...)
    replace the current ones; accounts, pools, wallets, contracts and SIMs are merged by id.
    Every issue is reported (422) and nothing changes when one is an error."""

    def mutate(state: State) -> None:
        merged = merge_documents(state, body.documents, who.tenant)
        state.clear()
        state.update(merged)

    applied = await api.catalogues.change(who.tenant, mutate, source="catalogue applied")
    return ApplyResult(
        revision=applied.revision, in_force=applied.in_force, summary=applied.summary
    )


@router.get("/plans", response_model=list[PlanView])
async def plans(who: Reader, api: Api) -> list[PlanView]:
    compiled = await api.catalogues.compiled(who.tenant)
    _, state = await api.catalogues.load_state(who.tenant)
    names = {pid: str(p.get("name", "")) for pid, p in (state.get("plans") or {}).items()}
    out = []
    for plan in sorted(compiled.catalogue.plans.values(), key=lambda p: p.id):
        versions = [
            PlanVersionView(
                effective_from=v.effective_from,
                zone_set=v.spec.zone_set,
                time_bands=v.spec.time_bands,
                tariffs=len(v.spec.tariffs),
            )
            for v in plan.versions
        ]
        out.append(
            PlanView(
                id=plan.id, name=names.get(plan.id, ""), currency=plan.currency, versions=versions
            )
        )
    return out


@router.get("/versions", response_model=list[RevisionView])
async def versions(
    who: Reader, api: Api, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[RevisionView]:
    """Applied revisions of this tenant's catalogue, newest first."""
    return [RevisionView(**v) for v in await api.catalogues.versions(who.tenant, limit)]
