"""Recurring and one-time fees of a plan version, priced for one subscription (bill runs).

Amounts are for one full period in minor units of the plan currency; pro-rating a partial
period is the bill run's job.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from ocs.rating.catalogue import Catalogue
from ocs.rating.errors import NoPlanError, UnknownSubscriber
from ocs.rating.models import PlanVersion, PropertyFee


@dataclass(frozen=True, slots=True)
class FeeLine:
    fee_id: str
    amount: int
    period: str
    quantity: int = 1
    unit_amount: int = 0
    band_from: int | None = None


def property_fee(fee: PropertyFee, properties: Mapping[str, int]) -> FeeLine:
    """`count_property` x the amount of the band `band_property` falls in (missing = 0)."""
    count = properties.get(fee.count_property, 0)
    value = properties.get(fee.band_property, 0)
    starts = [b.from_ for b in fee.bands]
    index = bisect_right(starts, value) - 1
    unit = fee.bands[index].amount if index >= 0 else 0
    band_from = fee.bands[index].from_ if index >= 0 else None
    return FeeLine(fee.id, count * unit, fee.period, count, unit, band_from)


def recurring_fees(version: PlanVersion, properties: Mapping[str, int]) -> tuple[FeeLine, ...]:
    """Every recurring fee of a plan version for a subscription with `properties`."""
    flat = (FeeLine(f.id, f.amount, f.period, 1, f.amount) for f in version.recurring_fees)
    by_property = (property_fee(f, properties) for f in version.property_fees)
    return (*flat, *by_property)


def subscription_fees(
    catalogue: Catalogue, imsi: str, twin_id: str, at: datetime
) -> tuple[str, str, tuple[FeeLine, ...]]:
    """(plan id, currency, fee lines) of one twin for the plan version in force at `at`."""
    sim = catalogue.sims_by_imsi.get(imsi)
    twin = None if sim is None else next((t for t in sim.twins if t.id == twin_id), None)
    if twin is None:
        raise UnknownSubscriber(f"no twin {twin_id!r} on SIM {imsi}")
    plan_id = twin.plans.plan_at(at)
    plan = None if plan_id is None else catalogue.plans[plan_id]
    version = None if plan is None else plan.version_at(at)
    if plan is None or version is None:
        raise NoPlanError(f"no plan in force for {imsi}/{twin_id} at {at.isoformat()}")
    return plan.id, plan.currency, recurring_fees(version.spec, twin.spec.properties)
