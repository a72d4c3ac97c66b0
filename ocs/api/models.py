"""Request and response models of the HTTP API. Amounts are integers in minor units of the
currency; floats and strings are refused (strict), as are zero, negative and absurd values."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from ocs.api.currencies import ISO_4217
from ocs.provisioning.sims import (
    Digits,
    Id,
    Model,
    PayerKindName,
    PayerRef,
    SubscriptionCreate,
    TwinSpec,
)

MAX_AMOUNT: Final = 10**12  # minor units: ten billion euros is not a top-up
MAX_BATCH: Final = 1000

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Amount = Annotated[int, Field(gt=0, le=MAX_AMOUNT, strict=True)]
Count = Annotated[int, Field(ge=0, le=MAX_AMOUNT, strict=True)]
Status = Literal["inventory", "test", "active", "suspended", "deactivated", "terminated"]
"""A SIM's lifecycle state (docs/sim-states.md)."""
# the subscription input models are provisioning's (CRM import validates rows with them)
__all__ = ["Digits", "Id", "Model", "PayerKindName", "PayerRef", "SubscriptionCreate", "TwinSpec"]


def known_currency(code: str) -> bool:
    return code in ISO_4217


# -- wallets ------------------------------------------------------------------------------
class WalletCreate(Model):
    id: Id
    account: Id
    currency: Currency
    balance: Count = 0


class MoneyMove(Model):
    amount: Amount
    currency: Currency
    reason: Annotated[str, StringConstraints(max_length=200)] = ""


class Bucket(BaseModel):
    id: str
    unit: str
    priority: int
    valid_from: int
    valid_to: int
    unlimited: bool
    credited: int
    available: int
    reserved: int
    used: int


class WalletView(BaseModel):
    id: str
    account: str
    currency: str
    available: int
    reserved: int
    used: int
    credited: int
    buckets: list[Bucket]


class MoneyMoveResult(BaseModel):
    transaction_id: str
    wallet: str
    kind: Literal["top-up", "debit"]
    amount: int
    currency: str
    available: int
    replayed: bool = False


class Transaction(BaseModel):
    id: str
    kind: str
    request_id: str
    ts: int
    unit: str
    amount: int
    context: dict[str, Any] = Field(default_factory=dict)


class TransactionPage(BaseModel):
    items: list[Transaction]
    next_cursor: str | None


# -- pools --------------------------------------------------------------------------------
class PoolView(BaseModel):
    id: str
    account: str
    kind: str
    payment: str
    unit: str
    size: int
    available: int
    used: int
    reserved: int
    members: int
    active_members: int
    buckets: list[Bucket]
    lifecycle: dict[str, Any] | None = None  # period, adaptive tier, auto top-off (lifecycle.md)
    name: str = ""  # what invoices call the pool (the catalogue's ``name``; "" when none)


class TopOffRequest(Model):
    addon: Id


class TopOffResult(BaseModel):
    pool: str
    addon: str
    bucket: str
    units: int
    price: int
    currency: str
    valid_to: int
    replayed: bool = False


class AutoRenewal(Model):
    """Auto top-off of a pool: buy ``addon`` when a request finds the pool short or, with
    ``threshold_percent`` > 0, when a request leaves it below that share of its allowance;
    at most ``max_per_period`` a period (docs/lifecycle.md)."""

    enabled: bool = False
    addon: Id | None = None
    max_per_period: Annotated[int, Field(ge=1, le=1000, strict=True)] | None = None
    threshold_percent: Annotated[int, Field(ge=0, le=100, strict=True)] = 0


# -- subscriptions ------------------------------------------------------------------------
class BulkCreate(Model):
    subscriptions: list[SubscriptionCreate] = Field(min_length=1, max_length=MAX_BATCH)


class SubscriptionChange(Model):
    plan: Id | None = None
    twin: Id | None = None
    effective_from: AwareDatetime | None = None
    properties: dict[Id, Count] | None = None
    msisdn: Digits | None = None


class TwinsReplace(Model):
    twins: list[TwinSpec] = Field(min_length=1, max_length=32)


class TwinView(BaseModel):
    id: str
    priority: int
    status: str
    payer: dict[str, str]
    plan: str | None
    plans: list[dict[str, Any]]
    properties: dict[str, int]
    filter: dict[str, Any]


class CapView(BaseModel):
    twin: str | None = Field(description="None: the whole SIM")
    cap: str = Field(description="data_day_bytes, data_month_bytes, sms_day, ...")
    limit: int
    period: str = Field(description="the current local day (2026-12-06) or month (2026-12)")
    used: int
    reserved: int
    remaining: int
    action: Literal["block", "redirect", "restrict", "notify"]


class LimitsView(BaseModel):
    imsi: str
    source: Literal["subscription", "plan", "none"]
    limits: dict[str, Any] | None = Field(description="the SIM's own limits as set, if any")
    caps: list[CapView]


class SubscriptionView(BaseModel):
    imsi: str
    msisdn: str | None
    iccid: str | None = None
    account: str
    status: str
    plan: str | None
    range: str | None = None
    twins: list[TwinView]
    limits: list[CapView] | None = Field(
        default=None,
        description="per-SIM caps in force with their usage (docs/limits.md); "
        "in the single subscription's view",
    )


class StateChange(Model):
    """Move a SIM to ``state`` (docs/sim-states.md: the allowed transitions); ``reason`` is
    kept in its history."""

    state: Status
    reason: Annotated[str, StringConstraints(max_length=200)] = ""


class StateMove(BaseModel):
    """One move of a SIM's state: who made it (``token:<id>``, ``cli:<user>``,
    ``lifecycle``, ``system``), when, why, and the catalogue revision it made. ``range``: the
    move was of the SIM's range (every member without a state of its own)."""

    from_: str = Field(alias="from")
    to: str
    by: str
    reason: str
    at: str
    revision: int
    imsi: str | None = None
    range: str | None = None

    model_config = {"populate_by_name": True}


class StateHistory(BaseModel):
    imsi: str
    state: str
    items: list[StateMove]


class SubscriptionPage(BaseModel):
    items: list[SubscriptionView]
    total: int
    offset: int
    limit: int


class ChangeResult(BaseModel):
    revision: int
    in_force: bool
    subscriptions: list[SubscriptionView]
    network: list[dict[str, Any]] = Field(default_factory=list)


# -- catalogue ----------------------------------------------------------------------------
class CatalogueApply(Model):
    """Catalogue documents by file name, each in the format of a ``policies/`` YAML file."""

    documents: dict[Annotated[str, StringConstraints(max_length=128)], dict[str, Any]] = Field(
        min_length=1, max_length=64
    )


class ApplyResult(BaseModel):
    revision: int
    in_force: bool
    summary: dict[str, int]


class PlanVersionView(BaseModel):
    effective_from: datetime
    zone_set: str
    time_bands: str | None
    tariffs: int


class PlanView(BaseModel):
    id: str
    name: str
    currency: str
    versions: list[PlanVersionView]


class RevisionView(BaseModel):
    revision: int
    applied_at: int
    source: str
    summary: dict[str, int]


# -- events -------------------------------------------------------------------------------
class Event(Model):
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
    imsi: Digits | None = None
    msisdn: Digits | None = None
    units: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] = 1
    time: AwareDatetime | None = None
    service_id: Annotated[int, Field(ge=0, le=2**32 - 1, strict=True)] | None = None
    rating_group: Annotated[int, Field(ge=0, le=2**32 - 1, strict=True)] | None = None


class EventBatch(Model):
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH)


class EventOutcome(BaseModel):
    id: str
    status: Literal["charged", "duplicate", "insufficient", "limited", "rejected"]
    reason: str | None = None
    payer: str | None = None
    units: int = 0
    amount: int = 0


class EventBatchResult(BaseModel):
    results: list[EventOutcome]


# -- sessions -----------------------------------------------------------------------------
class SessionView(BaseModel):
    session_id: str
    host: str
    realm: str
    peer: str
    worker: str
    imsi: str
    msisdn: str
    started: int
    interface: str = "gy"  # "gy": a Diameter Gy session; "nchf": a charging data resource
    notify_uri: str = ""  # nchf: where its ChargingNotifyRequests go


class NetworkOutcome(BaseModel):
    session: str
    op: str
    status: str
    result_code: int | None = None  # gy: the RAA/ASA Result-Code
    http_status: int | None = None  # nchf: the consumer's answer to the notification
    worker: str | None = None
