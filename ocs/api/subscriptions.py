"""Subscriptions (SIMs and their twins): create one or many, change plan or properties,
suspend, resume, terminate, replace the twins, list with filters and paging.

A change is a change of the tenant's catalogue state (:mod:`ocs.provisioning.catalogues`), so the
Diameter path rates the next request by it; open sessions get an RAR (plan, properties,
twins) or an ASR (suspend, terminate)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from ocs.api.limits import sim_caps_view
from ocs.api.models import (
    BulkCreate,
    ChangeResult,
    Status,
    SubscriptionChange,
    SubscriptionCreate,
    SubscriptionPage,
    SubscriptionView,
    TwinsReplace,
    TwinView,
)
from ocs.api.problems import Problem, not_found
from ocs.api.state import Admin, Api, ApiState, Reader
from ocs.provisioning.catalogues import Compiled, State
from ocs.provisioning.sims import sim_item, start_of_day, twin_item
from ocs.rating.catalogue import CompiledSim

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])


def _status(sim: CompiledSim) -> str:
    statuses = {t.spec.status for t in sim.twins}
    return next(s for s in ("active", "suspended", "terminated") if s in statuses)


def view_of(sim: CompiledSim, state: State | None = None) -> SubscriptionView:
    now = datetime.now(UTC)
    twins = []
    for twin in sim.twins:
        spec = twin.spec
        twins.append(
            TwinView(
                id=twin.id,
                priority=twin.priority,
                status=spec.status,
                payer={"kind": str(twin.payer.kind), "id": twin.payer.id},
                plan=twin.plans.plan_at(now),
                plans=[{"plan": p.plan, "from": p.from_.isoformat()} for p in spec.plans],
                properties=dict(spec.properties),
                filter=spec.filter.model_dump(mode="json", by_alias=True, exclude_none=True),
            )
        )
    statuses = {t.status for t in twins}
    status = next(s for s in ("active", "suspended", "terminated") if s in statuses)
    stored = (state or {}).get("sims", {}).get(sim.imsi) if state is not None else None
    return SubscriptionView(
        imsi=sim.imsi,
        msisdn=sim.msisdn,
        account=sim.account,
        status=status,
        plan=twins[0].plan if twins else None,
        twins=twins,
        iccid=(stored or {}).get("iccid"),
        range=None if stored is not None or state is None else "sim_range",
    )


async def _compiled_sim(api: ApiState, tenant: str, imsi: str) -> tuple[Compiled, CompiledSim]:
    compiled = await api.catalogues.compiled(tenant)
    sim = compiled.catalogue.sims_by_imsi.get(imsi)
    if sim is None:
        raise not_found("subscription", imsi)
    return compiled, sim


def _editable(state: State, imsi: str) -> dict[str, Any]:
    sims = state.get("sims") or {}
    if imsi not in sims:
        raise Problem(
            409,
            "in-range",
            "Part of a SIM range",
            f"SIM {imsi} belongs to a sim_range; change the range in the catalogue",
        )
    item: dict[str, Any] = sims[imsi]
    return item


async def _change(
    api: ApiState,
    tenant: str,
    imsi: str,
    edit: Callable[[dict[str, Any]], None],
    op: str | None,
    source: str,
) -> ChangeResult:
    await _compiled_sim(api, tenant, imsi)  # 404 before taking the lock

    def mutate(state: State) -> None:
        edit(_editable(state, imsi))

    applied = await api.catalogues.change(tenant, mutate, source=source)
    _, sim = await _compiled_sim(api, tenant, imsi)
    network: list[dict[str, Any]] = []
    if op is not None:
        network = await api.signal(tenant, [(sim.imsi, sim.msisdn)], op)
    _, state = await api.catalogues.load_state(tenant)
    return ChangeResult(
        revision=applied.revision,
        in_force=applied.in_force,
        subscriptions=[view_of(sim, state)],
        network=network,
    )


@router.post("", status_code=201, response_model=ChangeResult)
async def create(body: SubscriptionCreate, who: Admin, api: Api) -> ChangeResult:
    return await _create(api, who.tenant, [body])


@router.post("/bulk", status_code=201, response_model=ChangeResult)
async def create_bulk(body: BulkCreate, who: Admin, api: Api) -> ChangeResult:
    return await _create(api, who.tenant, body.subscriptions)


async def _create(api: ApiState, tenant: str, bodies: list[SubscriptionCreate]) -> ChangeResult:
    items = [sim_item(b) for b in bodies]
    seen: set[str] = set()
    for item in items:
        if item["imsi"] in seen:
            raise Problem(409, "exists", "Duplicate IMSI", f"IMSI {item['imsi']} twice")
        seen.add(item["imsi"])

    def mutate(state: State) -> None:
        sims = state.setdefault("sims", {})
        for item in items:
            if item["imsi"] in sims:
                raise Problem(409, "exists", "Subscription exists", f"IMSI {item['imsi']}")
            sims[item["imsi"]] = item

    compiled = await api.catalogues.compiled(tenant)
    for imsi in seen:
        if imsi in compiled.catalogue.sims_by_imsi:
            raise Problem(409, "exists", "Subscription exists", f"IMSI {imsi}")
    applied = await api.catalogues.change(tenant, mutate, source=f"{len(items)} SIM(s) created")
    compiled = await api.catalogues.compiled(tenant)
    _, state = await api.catalogues.load_state(tenant)
    views = [view_of(compiled.catalogue.sims_by_imsi[i["imsi"]], state) for i in items[:100]]
    return ChangeResult(revision=applied.revision, in_force=applied.in_force, subscriptions=views)


@router.get("", response_model=SubscriptionPage)
async def list_subscriptions(
    who: Reader,
    api: Api,
    status: Status | None = None,
    account: Annotated[str | None, Query(max_length=64)] = None,
    plan: Annotated[str | None, Query(max_length=64)] = None,
    payer: Annotated[str | None, Query(max_length=64, description="payer id")] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SubscriptionPage:
    compiled = await api.catalogues.compiled(who.tenant)
    sims = compiled.catalogue.sims_by_imsi
    _, state = await api.catalogues.load_state(who.tenant)
    now = datetime.now(UTC)
    matched: list[CompiledSim] = []
    for imsi in compiled.sorted_imsis():
        sim = sims[imsi]
        if account is not None and sim.account != account:
            continue
        if payer is not None and not any(t.payer.id == payer for t in sim.twins):
            continue
        if plan is not None and not any(t.plans.plan_at(now) == plan for t in sim.twins):
            continue
        if status is not None and _status(sim) != status:
            continue
        matched.append(sim)
    page = [view_of(s, state) for s in matched[offset : offset + limit]]
    return SubscriptionPage(items=page, total=len(matched), offset=offset, limit=limit)


@router.get("/{imsi}", response_model=SubscriptionView)
async def get_subscription(imsi: str, who: Reader, api: Api) -> SubscriptionView:
    compiled, sim = await _compiled_sim(api, who.tenant, imsi)
    _, state = await api.catalogues.load_state(who.tenant)
    view = view_of(sim, state)
    view.limits = await sim_caps_view(api.store, compiled.catalogue, sim)
    return view


@router.patch("/{imsi}", response_model=ChangeResult)
async def change(imsi: str, body: SubscriptionChange, who: Admin, api: Api) -> ChangeResult:
    """Change the price plan (from ``effective_from``, default now) of one twin or all, the
    twins' properties, or the MSISDN. Open sessions get an RAR."""
    start = body.effective_from or datetime.now(UTC)

    def edit(item: dict[str, Any]) -> None:
        if body.msisdn is not None:
            item["msisdn"] = body.msisdn
        twins = [t for t in item["twins"] if body.twin is None or t["id"] == body.twin]
        if not twins:
            raise not_found("twin", body.twin or "")
        for twin in twins:
            if body.plan is not None:
                last = datetime.fromisoformat(twin["plans"][-1]["from"])
                if start <= last:
                    raise Problem(
                        409,
                        "plan-history",
                        "Plan change before the last one",
                        f"twin {twin['id']!r} has a plan from {last.isoformat()}",
                    )
                twin["plans"].append({"plan": body.plan, "from": start.isoformat()})
            if body.properties is not None:
                twin["properties"] = dict(body.properties)

    return await _change(api, who.tenant, imsi, edit, "rar", "subscription changed")


def _status_edit(to: str, allowed_from: set[str]) -> Callable[[dict[str, Any]], None]:
    def edit(item: dict[str, Any]) -> None:
        current = {t.get("status", "active") for t in item["twins"]}
        if not current & allowed_from:
            raise Problem(
                409,
                "status",
                "Not possible in this status",
                f"subscription is {', '.join(sorted(current))}",
            )
        for twin in item["twins"]:
            if twin.get("status", "active") in allowed_from:
                twin["status"] = to

    return edit


@router.post("/{imsi}/suspend", response_model=ChangeResult)
async def suspend(imsi: str, who: Admin, api: Api) -> ChangeResult:
    """Suspend every active twin; open sessions get an ASR."""
    edit = _status_edit("suspended", {"active"})
    return await _change(api, who.tenant, imsi, edit, "asr", "subscription suspended")


@router.post("/{imsi}/resume", response_model=ChangeResult)
async def resume(imsi: str, who: Admin, api: Api) -> ChangeResult:
    edit = _status_edit("active", {"suspended"})
    return await _change(api, who.tenant, imsi, edit, None, "subscription resumed")


@router.post("/{imsi}/terminate", response_model=ChangeResult)
async def terminate(imsi: str, who: Admin, api: Api) -> ChangeResult:
    """Terminate every twin (final); open sessions get an ASR."""
    edit = _status_edit("terminated", {"active", "suspended"})
    return await _change(api, who.tenant, imsi, edit, "asr", "subscription terminated")


@router.put("/{imsi}/twins", response_model=ChangeResult)
async def replace_twins(imsi: str, body: TwinsReplace, who: Admin, api: Api) -> ChangeResult:
    """Configure the SIM twins (filters, payers, plans); open sessions get an RAR."""
    ids = [t.id for t in body.twins]
    if len(set(ids)) != len(ids):
        raise Problem(422, "validation", "Invalid request", "twin ids must be unique")
    start = start_of_day()

    def edit(item: dict[str, Any]) -> None:
        old = {t["id"]: t for t in item["twins"]}
        twins = []
        for spec in body.twins:
            new = twin_item(spec, start)
            previous = old.get(spec.id)
            if previous is not None:
                new["status"] = previous.get("status", "active")
                plans = previous["plans"]
                if plans[-1]["plan"] != spec.plan:
                    now = datetime.now(UTC).isoformat()
                    plans = [*plans, {"plan": spec.plan, "from": now}]
                new["plans"] = plans
            twins.append(new)
        item["twins"] = twins

    return await _change(api, who.tenant, imsi, edit, "rar", "twins configured")
