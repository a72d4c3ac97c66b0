"""A quote: one level's resolved price terms for one usage context. It prices any quantity
and converts money into units without resolving again, so the charging layer can resolve
once per MSCC and then grant, commit and record."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from ocs.rating.context import ServiceKind
from ocs.rating.models import Payer
from ocs.rating.tariffs import Priced, RateTable, price, units_for

Counters = Mapping[str, int]
"""Period counters, by key: units already counted this period (tiers and allowances).
The caller stores them (per bill period) and adds the deltas of each committed usage."""

NO_COUNTERS: Counters = {}


class Quote(NamedTuple):
    """Level `level` (0 = the SIM's own plan) of a usage: `seller` (None: the tenant)
    charges `buyer` on `plan_id`, paid by `payer`. (NamedTuple: immutable and cheap to build
    on the hot path.)"""

    level: int
    buyer: str
    seller: str | None
    payer: Payer
    plan_id: str
    plan_version: datetime
    currency: str
    zone: str
    band: str
    service: ServiceKind
    rating_group: int | None
    tier_counter: str
    allowance_counter: str | None
    allowance_units: int
    rate: RateTable

    @property
    def counted(self) -> bool:
        """Its price reads the period counters (graduated tiers or an allowance)."""
        return self.allowance_counter is not None or len(self.rate.starts) > 1

    @property
    def prepaid(self) -> bool:
        """This level's payer must be reserved before units are granted."""
        return self.payer.kind.prepaid

    def level_line(self, amount: int) -> dict[str, Any]:
        """This level's priced line of a rated usage record (``levels`` of its context),
        which the drain, the bill run and the reports read."""
        return {
            "level": self.level,
            "buyer": self.buyer,
            "seller": self.seller,
            "payer": f"{self.payer.kind}:{self.payer.id}",
            "plan": self.plan_id,
            "zone": self.zone,
            "band": self.band,
            "currency": self.currency,
            "amount": amount,
        }

    def allowance_left(self, counters: Counters) -> int:
        if self.allowance_counter is None:
            return 0
        return max(0, self.allowance_units - counters.get(self.allowance_counter, 0))

    def price(self, quantity: int, counters: Counters = NO_COUNTERS) -> Priced:
        """The price of `quantity` units given the period counters so far."""
        position = counters.get(self.tier_counter, 0) if counters else 0
        allowance_left = 0
        if self.allowance_counter is not None:
            used = counters.get(self.allowance_counter, 0) if counters else 0
            allowance_left = max(0, self.allowance_units - used)
        return price(self.rate, quantity, position, allowance_left)

    def units_for(self, amount: int, counters: Counters = NO_COUNTERS, *, max_units: int) -> int:
        """How many units (a multiple of the charging increment, at most `max_units`)
        `amount` minor units buy at the current tier and allowance."""
        position = counters.get(self.tier_counter, 0)
        left = self.allowance_left(counters)
        return units_for(self.rate, amount, position, left, max_units=max_units)

    def deltas(self, priced: Priced) -> tuple[tuple[str, int], ...]:
        """Counter increments to store once `priced` is committed."""
        out: tuple[tuple[str, int], ...] = ()
        if priced.billable:
            out = ((self.tier_counter, priced.billable),)
        if priced.free and self.allowance_counter is not None:
            out = (*out, (self.allowance_counter, priced.free))
        return out
