"""``POST /v1/subscriptions/bulk/state``: move up to 10,000 SIMs of the tenant to one
lifecycle state in one catalogue change (docs/sim-states.md, "Many SIMs at once";
:mod:`ocs.provisioning.bulk_states`). Each SIM is answered on its own: moved (from, to),
unchanged (already there), refused (from, to, the allowed moves) or unknown. With an
``Idempotency-Key`` a retried request gets the first answer back and moves nothing again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header
from pydantic import Field, StringConstraints, model_validator

from ocs.api.idempotency import KEY_PATTERN, begin, fingerprint, finish
from ocs.api.models import Digits, Id, Model, Status
from ocs.api.problems import Problem
from ocs.api.state import Admin, Api
from ocs.observability.metrics import api_metrics
from ocs.provisioning.bulk_states import (
    MAX_SIMS,
    BulkMove,
    NothingMoved,
    counts,
    resolve,
    select,
)
from ocs.provisioning.states import SIGNAL_ON_ENTRY, Actor

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])
Iccid = Annotated[str, StringConstraints(pattern=r"^[0-9]{18,22}$")]
SCOPE: Final = "sim-states"  # the Idempotency-Key records of this route


class BulkSelector(Model):
    """The SIMs ``GET /v1/subscriptions`` lists with the same filters (all that are given
    hold); at least one filter."""

    account: Id | None = None
    plan: Id | None = None
    payer: Annotated[Id | None, Field(description="payer id")] = None
    status: Status | None = None

    @model_validator(mode="after")
    def _some(self) -> BulkSelector:
        if not any((self.account, self.plan, self.payer, self.status)):
            raise ValueError("a selector needs at least one of account, plan, payer, status")
        return self


class BulkStateMove(Model):
    """Move the SIMs named (``imsis``, ``iccids``, ``msisdns``: up to 10,000 together) or
    chosen by ``select`` to ``state``; ``reason`` is kept in each SIM's history."""

    state: Status
    reason: Annotated[str, StringConstraints(max_length=200)] = ""
    imsis: list[Digits] = Field(default_factory=list, max_length=MAX_SIMS)
    iccids: list[Iccid] = Field(default_factory=list, max_length=MAX_SIMS)
    msisdns: list[Digits] = Field(default_factory=list, max_length=MAX_SIMS)
    select: BulkSelector | None = None

    @model_validator(mode="after")
    def _one_way(self) -> BulkStateMove:
        named = len(self.imsis) + len(self.iccids) + len(self.msisdns)
        if named > MAX_SIMS:
            raise ValueError(f"at most {MAX_SIMS} SIMs a request ({named} named)")
        if bool(named) == (self.select is not None):
            raise ValueError("name SIMs (imsis, iccids, msisdns) or give a select, not both")
        return self


class BulkStateResult(Model):
    revision: int | None  # the catalogue revision of the moves (none when nothing moved)
    state: str
    counts: dict[str, int]  # moved, unchanged, refused, unknown
    results: list[dict[str, Any]]  # per SIM, in the order named (selected: IMSI order)


@router.post("/bulk/state", response_model=BulkStateResult)
async def move_states(
    body: BulkStateMove,
    who: Admin,
    api: Api,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", pattern=KEY_PATTERN)
    ] = None,
) -> BulkStateResult:
    """Move many SIMs to ``state`` in one change (docs/sim-states.md): each checked
    against the transition table on its own, refused ones answered with ``from`` and
    ``to`` while the others move; journaled as the token, each move a history row and a
    ``sim.state_changed`` event. Charging follows the new states once this answers; open
    sessions get their ASR/RAR in the background."""
    tenant = who.tenant
    claimed = None
    if idempotency_key is not None:
        fp = fingerprint(body.model_dump(mode="json"))
        claimed = await begin(api.store.batch, tenant, SCOPE, idempotency_key, fp)
        if claimed.outcome is not None:
            return BulkStateResult(**claimed.outcome)
    compiled = await api.catalogues.compiled(tenant)
    catalogue = compiled.catalogue
    if body.select is not None:
        s = body.select
        imsis = select(catalogue, account=s.account, plan=s.plan, payer=s.payer,
                       status=s.status, at=datetime.now(UTC))  # fmt: skip
        if len(imsis) > MAX_SIMS:
            raise Problem(
                422, "too-many-sims", "Too many SIMs",
                f"the selector chooses {len(imsis)} SIMs, at most {MAX_SIMS} a request: "
                "narrow it (plan, status) or name the SIMs",
            )  # fmt: skip
        named = [("imsi", imsi) for imsi in imsis]
    else:
        named = [("imsi", v) for v in body.imsis] + [("iccid", v) for v in body.iccids]
        named += [("msisdn", v) for v in body.msisdns]
    by_iccid = {i: imsi for imsi, i in catalogue.iccid_by_imsi.items()} if body.iccids else {}
    targets = resolve(catalogue, by_iccid, named)
    move = BulkMove(targets, body.state)
    revision = None
    try:
        applied = await api.catalogues.change(
            tenant, move, source=f"bulk state {body.state} ({len(targets)} SIMs)",
            actor=Actor("token", who.token), reason=body.reason or f"bulk state {body.state}",
        )  # fmt: skip
        revision = applied.revision
    except NothingMoved:
        pass
    if move.moved:
        op = SIGNAL_ON_ENTRY[body.state]
        if op is not None:
            sims = (await api.catalogues.compiled(tenant)).catalogue.sims_by_imsi
            api.signal_later(tenant, [(i, sims[i].msisdn) for i in move.moved if i in sims], op)
    result = BulkStateResult(
        revision=revision,
        state=body.state,
        counts=counts(targets),
        results=[t.view(body.state) for t in targets],
    )
    for outcome, n in result.counts.items():
        api_metrics().bulk_state_sims.labels(outcome).inc(n)
    if claimed is not None:
        await finish(api.store.batch, claimed, result.model_dump(mode="json"))
    return result
