"""A subscription (a SIM and its twins) as the API and CRM import give it, and the catalogue
item it becomes: ``POST /v1/subscriptions`` and an import row create the same item."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from ocs.provisioning.errors import Refused

MAX_COUNT: Final = 10**12
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Digits = Annotated[str, StringConstraints(pattern=r"^[0-9]{5,15}$")]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT, strict=True)]
PayerKindName = Literal["postpaid_pool", "prepaid_pool", "wallet", "external_contract"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PayerRef(Model):
    kind: PayerKindName
    id: Id


class TwinSpec(Model):
    """A SIM twin as in the catalogue (``filter`` uses the catalogue's filter format)."""

    id: Id
    priority: Annotated[int, Field(ge=0, le=1_000_000, strict=True)] = 0
    filter: dict[str, Any] = Field(default_factory=dict)
    payer: PayerRef
    plan: Id
    properties: dict[Id, Count] = Field(default_factory=dict)


class SubscriptionCreate(Model):
    imsi: Digits
    msisdn: Digits | None = None
    iccid: Annotated[str, StringConstraints(pattern=r"^[0-9]{18,22}$")] | None = None
    account: Id
    time_zone: Annotated[str, StringConstraints(max_length=64)] | None = None
    plan: Id | None = None
    payer: PayerRef | None = None
    properties: dict[Id, Count] = Field(default_factory=dict)
    twins: list[TwinSpec] | None = Field(default=None, min_length=1, max_length=32)
    effective_from: AwareDatetime | None = None
    state: Literal["inventory", "test", "active", "suspended"] | None = Field(
        default=None, description="the SIM's first lifecycle state (default active)"
    )


def twin_item(spec: TwinSpec, start: datetime) -> dict[str, Any]:
    """The catalogue item of a new twin, on ``spec.plan`` from ``start``."""
    return {
        "id": spec.id,
        "priority": spec.priority,
        "filter": spec.filter,
        "payer": spec.payer.model_dump(),
        "plans": [{"plan": spec.plan, "from": start.isoformat()}],
        "properties": spec.properties,
        "status": "active",
    }


def start_of_day() -> datetime:
    """Today 00:00 UTC: a new subscription's plans start then unless told otherwise."""
    now = datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def sim_item(body: SubscriptionCreate) -> dict[str, Any]:
    """The catalogue item of a new SIM (one twin ``main`` from ``plan``/``payer``, or
    ``twins``); raises :class:`Refused` (422) with neither."""
    start = body.effective_from or start_of_day()
    if body.twins:
        twins = [twin_item(t, start) for t in body.twins]
    elif body.plan is not None and body.payer is not None:
        main = TwinSpec(id="main", payer=body.payer, plan=body.plan, properties=body.properties)
        twins = [twin_item(main, start)]
    else:
        raise Refused(422, "validation", "Invalid request", "give `twins`, or `plan` and `payer`")
    item: dict[str, Any] = {"imsi": body.imsi, "account": body.account, "twins": twins}
    for name in ("msisdn", "iccid", "time_zone", "state"):
        value = getattr(body, name)
        if value is not None:
            item[name] = value
    return item
