"""Pricing arithmetic: graduated tiers, charging increments, minimum charges, allowances,
money rounding, and the reverse (how many units an amount of money buys).

All arithmetic is on integers. A tier price is a Decimal of minor units per `per` units; at
compile time every price of a rate is scaled to a common integer numerator over one integer
denominator, so the cost of q units in a tier is exactly `q * numerator / denominator` minor
units, and rounding to whole minor units happens once per priced quantity.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

from ocs.rating.models import BandRate, Rounding

_UP, _DOWN, _HALF_UP, _HALF_EVEN = Rounding.UP, Rounding.DOWN, Rounding.HALF_UP, Rounding.HALF_EVEN


def div_round(raw: int, denominator: int, mode: Rounding) -> int:
    """raw / denominator rounded to an integer by `mode` (raw >= 0)."""
    quotient, remainder = divmod(raw, denominator)
    if remainder == 0 or mode is _DOWN:
        return quotient
    if mode is _UP:
        return quotient + 1
    twice = 2 * remainder
    if twice > denominator:
        return quotient + 1
    if twice < denominator:
        return quotient
    if mode is _HALF_UP:
        return quotient + 1
    return quotient + (quotient & 1)


def max_raw_for(amount: int, denominator: int, mode: Rounding) -> int:
    """The largest raw cost that `div_round` turns into at most `amount`."""
    if mode is _UP:
        return amount * denominator
    if mode is _DOWN:
        return (amount + 1) * denominator - 1
    if mode is _HALF_EVEN and amount % 2 == 0:
        return (2 * amount + 1) * denominator // 2  # an exact half rounds down to even
    return ((2 * amount + 1) * denominator - 1) // 2


def ceil_to(quantity: int, increment: int) -> int:
    return -(-quantity // increment) * increment


@dataclass(frozen=True, slots=True)
class RateTable:
    """One band's tiers of one tariff, compiled. `starts[i]` is where tier i begins on the
    period counter; a unit in tier i costs `numerators[i] / denominator` minor units."""

    starts: tuple[int, ...]
    numerators: tuple[int, ...]
    denominator: int
    increment: int
    minimum_quantity: int
    minimum_charge: int
    rounding: Rounding

    @classmethod
    def compile(
        cls,
        rate: BandRate,
        *,
        per: int,
        increment: int,
        minimum_quantity: int,
        minimum_charge: int,
        rounding: Rounding,
    ) -> RateTable:
        exponent = max(_decimals(t.price) for t in rate.tiers)
        scale = 10**exponent
        return cls(
            starts=tuple(t.from_ for t in rate.tiers),
            numerators=tuple(int(t.price * scale) for t in rate.tiers),
            denominator=scale * per,
            increment=increment,
            minimum_quantity=minimum_quantity,
            minimum_charge=minimum_charge,
            rounding=rounding,
        )

    def tier_at(self, position: int) -> int:
        return bisect_right(self.starts, position) - 1

    def raw_cost(self, position: int, units: int) -> tuple[int, tuple[tuple[int, int], ...]]:
        """Exact cost (in 1/denominator minor units) of `units` starting at counter
        `position`, and the (tier index, units) slices it spans."""
        if units == 0:
            return 0, ()
        starts, numerators = self.starts, self.numerators
        index = bisect_right(starts, position) - 1
        last = len(starts) - 1
        if index == last or position + units <= starts[index + 1]:
            return units * numerators[index], ((index, units),)
        raw = 0
        slices: list[tuple[int, int]] = []
        while units > 0:
            room = units if index == last else min(units, starts[index + 1] - position)
            raw += room * numerators[index]
            slices.append((index, room))
            units -= room
            position += room
            index += 1
        return raw, tuple(slices)


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


class Priced(NamedTuple):
    """The price of one quantity under one rate.

    `rated` is the quantity after increments and minimum quantity; `free` of it came out of
    the allowance, `billable` went through the tiers (starting at the tier counter), and
    `amount` is the rounded money in minor units (at least the minimum charge when billable).
    A NamedTuple rather than a frozen dataclass: immutable too, and several times cheaper
    to build on the hot path.
    """

    quantity: int
    rated: int
    free: int
    billable: int
    amount: int
    tiers: tuple[tuple[int, int], ...]


ZERO_PRICE = Priced(0, 0, 0, 0, 0, ())


def exact_amount(rate: RateTable, priced: Priced) -> Fraction:
    """``priced``'s amount before rounding: the exact tier sum in minor units, raised to the
    minimum charge when anything is billable (what rounding per invoice line sums)."""
    if priced.billable == 0:
        return Fraction(0)
    numerators = rate.numerators
    raw = sum(units * numerators[index] for index, units in priced.tiers)
    return max(Fraction(raw, rate.denominator), Fraction(rate.minimum_charge))


def price(rate: RateTable, quantity: int, position: int, allowance_left: int) -> Priced:
    """Price `quantity` units: round up to the increment and minimum quantity, take what the
    allowance still covers, price the rest by graduated tiers from `position`, round once."""
    if quantity <= 0:
        return ZERO_PRICE
    increment = rate.increment
    rated = -(-quantity // increment) * increment
    rated = max(rated, rate.minimum_quantity)
    free = (rated if rated < allowance_left else allowance_left) if allowance_left > 0 else 0
    billable = rated - free
    if billable == 0:
        return Priced(quantity, rated, free, 0, 0, ())
    slices: tuple[tuple[int, int], ...]
    if len(rate.starts) == 1:  # one tier: no walk needed
        raw, slices = billable * rate.numerators[0], ((0, billable),)
    else:
        raw, slices = rate.raw_cost(position, billable)
    amount = div_round(raw, rate.denominator, rate.rounding)
    amount = max(amount, rate.minimum_charge)
    return Priced(quantity, rated, free, billable, amount, slices)


def units_for(
    rate: RateTable, amount: int, position: int, allowance_left: int, *, max_units: int
) -> int:
    """The largest quantity, a multiple of the increment and at most `max_units`, whose price
    is at most `amount` minor units. Allowance units are free, so they are always granted."""
    if amount < 0 or max_units <= 0:
        return 0
    free = max(0, allowance_left)
    budget = max_raw_for(amount, rate.denominator, rate.rounding)
    billable = 0
    starts, numerators = rate.starts, rate.numerators
    index = bisect_right(starts, position) - 1
    last = len(starts) - 1
    cursor = position
    cap = max(0, max_units - free)
    while billable < cap:
        room = cap - billable if index == last else starts[index + 1] - cursor
        room = min(room, cap - billable)
        numerator = numerators[index]
        take = room if numerator == 0 else min(room, budget // numerator)
        billable += take
        budget -= take * numerator
        cursor += take
        if take < room or index == last:
            break
        index += 1
    units = min(max_units, free + billable)
    if rate.minimum_charge > amount:
        units = min(units, free)
    units -= units % rate.increment
    if units == 0 or price(rate, units, position, allowance_left).amount <= amount:
        return units
    # Only a minimum quantity can get here; price is monotone in units, so search.
    low, high = 0, units // rate.increment
    while low < high:
        middle = (low + high + 1) // 2
        if price(rate, middle * rate.increment, position, allowance_left).amount <= amount:
            low = middle
        else:
            high = middle - 1
    return low * rate.increment
