"""Subscriptions (SIMs and their twins): create one or many, change plan or properties,
suspend, resume, terminate, replace the twins, list with filters and paging.

A change is a change of the tenant's catalogue state (:mod:`ocs.provisioning.catalogues`), so the
Diameter path rates the next request by it; open sessions get an RAR (plan, properties,
twins) or an ASR (suspend, terminate)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from ocs.api.auth import Principal
from ocs.api.limits import sim_caps_view
from ocs.api.models import (
    BulkCreate,
    ChangeResult,
    StateChange,
    StateHistory,
    StateMove,
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
from ocs.provisioning.keys import sim_history_key
from ocs.provisioning.sims import sim_item, start_of_day, twin_item
from ocs.provisioning.states import (
    HISTORY_KEPT,
    SIGNAL_ON_ENTRY,
    Actor,
    range_of,
    set_member_state,
    set_state,
)
from ocs.rating.catalogue import CompiledSim

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])


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
    stored = (state or {}).get("sims", {}).get(sim.imsi) if state is not None else None
    held = None
    if stored is None and state is not None:
        held = range_of(state.get("sim_ranges") or {}, sim.imsi)
    return SubscriptionView(
        imsi=sim.imsi,
        msisdn=sim.msisdn,
        account=sim.account,
        status=sim.state,
        plan=twins[0].plan if twins else None,
        twins=twins,
        iccid=(stored or {}).get("iccid"),
        range=None if held is None else str(held["id"]),
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
        if status is not None and sim.state != status:
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


async def _move(
    api: ApiState, who: Principal, imsi: str, to: str, reason: str, source: str
) -> ChangeResult:
    """Move one SIM (alone, or a member of a range) to ``to``: checked against the allowed
    transitions (409 naming both states), journaled with the token that asked, and its open
    sessions signalled (``states.SIGNAL_ON_ENTRY``: ASR where it may no longer use the
    network, RAR where it is charged differently)."""
    tenant = who.tenant
    await _compiled_sim(api, tenant, imsi)  # 404 before taking the lock

    def mutate(state: State) -> None:
        item = (state.get("sims") or {}).get(imsi)
        if item is not None:
            set_state(item, to)
            return
        held = range_of(state.get("sim_ranges") or {}, imsi)
        if held is None:  # removed since the check above
            raise not_found("subscription", imsi)
        set_member_state(held, imsi, to)

    applied = await api.catalogues.change(
        tenant, mutate, source=source, actor=Actor("token", who.token), reason=reason or source
    )
    _, sim = await _compiled_sim(api, tenant, imsi)
    network: list[dict[str, Any]] = []
    op = SIGNAL_ON_ENTRY[to]
    if op is not None:
        network = await api.signal(tenant, [(sim.imsi, sim.msisdn)], op)
    _, state = await api.catalogues.load_state(tenant)
    return ChangeResult(
        revision=applied.revision,
        in_force=applied.in_force,
        subscriptions=[view_of(sim, state)],
        network=network,
    )


@router.post("/{imsi}/state", response_model=ChangeResult)
async def change_state(imsi: str, body: StateChange, who: Admin, api: Api) -> ChangeResult:
    """Move the SIM to another lifecycle state (docs/sim-states.md); a move the transition
    table does not allow is a 409 problem naming ``from`` and ``to``. Works on a SIM of a
    ``sim_range`` too (it gets a state of its own)."""
    return await _move(api, who, imsi, body.state, body.reason, f"state {body.state}")


@router.get("/{imsi}/history", response_model=StateHistory)
async def history(
    imsi: str,
    who: Reader,
    api: Api,
    limit: Annotated[int, Query(ge=1, le=HISTORY_KEPT)] = 50,
) -> StateHistory:
    """The SIM's state moves, newest first: who (``token:<id>``, ``cli:<user>``,
    ``lifecycle``, ``system``), when, why. A SIM of a range also lists the moves of its
    range. Redis keeps the last moves; PostgreSQL (``sim_state_changes``) keeps all."""
    _, sim = await _compiled_sim(api, who.tenant, imsi)
    _, state = await api.catalogues.load_state(who.tenant)
    subjects = [imsi]
    if imsi not in (state.get("sims") or {}):
        held = range_of(state.get("sim_ranges") or {}, imsi)
        if held is not None:
            subjects.append(f"range:{held['id']}")
    async with api.redis.pipeline(transaction=False) as pipe:
        for subject in subjects:
            pipe.lrange(sim_history_key(who.tenant, subject), 0, limit - 1)
        lists = await pipe.execute()
    items = [json.loads(raw) for found in lists for raw in found]
    items.sort(key=lambda e: (e["at"], e["revision"]), reverse=True)
    return StateHistory(imsi=imsi, state=sim.state, items=[StateMove(**e) for e in items[:limit]])


@router.post("/{imsi}/suspend", response_model=ChangeResult)
async def suspend(imsi: str, who: Admin, api: Api) -> ChangeResult:
    """Move the SIM to ``suspended`` (``POST .../state`` with ``{"state": "suspended"}``);
    open sessions get an ASR."""
    return await _move(api, who, imsi, "suspended", "", "subscription suspended")


@router.post("/{imsi}/resume", response_model=ChangeResult)
async def resume(imsi: str, who: Admin, api: Api) -> ChangeResult:
    """Move the SIM back to ``active``."""
    return await _move(api, who, imsi, "active", "", "subscription resumed")


@router.post("/{imsi}/terminate", response_model=ChangeResult)
async def terminate(imsi: str, who: Admin, api: Api) -> ChangeResult:
    """Move the SIM to ``terminated`` (final); open sessions get an ASR."""
    return await _move(api, who, imsi, "terminated", "", "subscription terminated")


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
