"""Operator routes: what no tenant may do, with an operator token (``ocs token create
--operator``; ``ocs.api.auth``). Moving a SIM between tenants is the one such action: the
decision (what is refused) and the audit entry are :mod:`ocs.provisioning.transfer`'s."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from ocs.api.auth import Principal, Scope
from ocs.api.models import Digits, Id, Model
from ocs.api.state import Api, require
from ocs.provisioning.keys import TRANSFERS
from ocs.provisioning.transfer import transfer_sim

router = APIRouter(prefix="/v1/operator", tags=["operator"])
Operator = Annotated[Principal, Depends(require(Scope.OPERATOR))]
MAX_LISTED: Final = 1000


class TransferRequest(Model):
    imsi: Digits
    source: Id = Field(alias="from", description="the tenant holding the SIM")
    target: Id = Field(alias="to", description="the tenant receiving its identities")


class TransferView(Model):
    imsi: str
    source: str = Field(alias="from")
    target: str = Field(alias="to")
    identities: list[str] = Field(description="kind:value of each identity handed over")
    source_revision: int = Field(description="the source tenant's catalogue revision without it")


class TransferEntry(TransferView):
    at: int = Field(description="milliseconds since the epoch")
    actor: str = Field(description="who asked: `operator token <id>`, or `cli`")


@router.post("/transfers", response_model=TransferView, response_model_by_alias=True)
async def transfer(body: TransferRequest, who: Operator, api: Api) -> TransferView:
    """Move a SIM (its IMSI, MSISDN and ICCID) from one tenant to another. Refused (409)
    while it has an open session or a payer of its own holds a balance; the receiving
    tenant then creates the subscription. Audited (`GET /v1/operator/transfers`)."""
    summary = await transfer_sim(
        api.store,
        api.settings.data_dir,
        body.imsi,
        body.source,
        body.target,
        actor=f"operator token {who.token}",
        catalogues=api.catalogues,
    )
    return TransferView.model_validate(summary)


@router.get("/transfers", response_model=list[TransferEntry], response_model_by_alias=True)
async def transfers(
    who: Operator,
    api: Api,
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 100,
) -> list[TransferEntry]:
    """The latest SIM transfers, newest first (the audit trail)."""
    raw = await api.redis.lrange(TRANSFERS, 0, limit - 1)
    return [TransferEntry.model_validate_json(r) for r in raw]
