"""Response models of the usage and balance reads, in the shapes of TM Forum TMF635 (Usage)
and TMF654 (Prepay Balance Management) where they fit; docs/usage-api.md maps them field by
field. Amounts are integers: quantities in their ``units``, money in minor units."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Subject(BaseModel):
    """Whose usage or balance: a SIM (``imsi``, ``msisdn``, ``iccid``) or a payer."""

    type: Literal["sim", "wallet", "pool", "contract", "account"]
    id: str
    imsi: str | None = None
    msisdn: str | None = None
    iccid: str | None = None


class TimePeriod(BaseModel):
    """TMF TimePeriod: ``[startDateTime, endDateTime)``."""

    startDateTime: datetime | None
    endDateTime: datetime | None


class Quantity(BaseModel):
    """TMF Quantity: ``amount`` in ``units`` (bytes, seconds, messages, events, or the
    currency's minor units for money)."""

    amount: int
    units: str


class UsageSummary(BaseModel):
    """TMF635 Usage, one per (period, unit, currency) of the subject: the sum of its rated
    usage records in the period."""

    id: str
    usageType: str  # data, voice, sms, event, money
    usageDate: datetime  # the period's start
    usagePeriod: TimePeriod
    status: Literal["rated"] = "rated"
    unit: str
    quantity: int  # units used (committed)
    records: int
    charged: int  # money moved on the payer's balance (minor units of `currency`)
    overrun: int  # units used beyond the grant (postpaid overage)
    rated: int  # the first level's rated amount (bill runs apply allowances and tiers)
    currency: str | None


class UsagePage(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    subject: Subject
    by: Literal["day", "month"]
    from_: date = Field(alias="from")
    to: date
    timeZone: str
    items: list[UsageSummary]
    next_cursor: str | None


class BalanceBucket(BaseModel):
    """TMF654 Bucket: a balance bucket of a payer."""

    id: str
    usageType: str
    priority: int
    unlimited: bool
    remainingValue: Quantity  # available now
    reservedValue: Quantity  # held by open reservations (sessions)
    usedValue: Quantity
    creditedValue: Quantity  # everything the bucket was given (size, top-ups)
    validFor: TimePeriod
    status: Literal["active", "expired", "notYetValid"]


class PayerBalance(BaseModel):
    """TMF654 AccumulatedBalance-like: one payer (wallet, pool) and its buckets."""

    id: str  # kind:id
    kind: str
    payer: str
    currency: str | None
    buckets: list[BalanceBucket]


class BalancePage(BaseModel):
    subject: Subject
    items: list[PayerBalance]
