"""Pricing arithmetic: increments, rounding, minimums, graduated tiers, allowances, units."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ocs.rating.models import BandRate, Rounding, Tier
from ocs.rating.tariffs import RateTable, div_round, price, units_for


def table(
    tiers: list[tuple[int, str]],
    *,
    per: int = 1,
    increment: int = 1,
    minimum_quantity: int = 0,
    minimum_charge: int = 0,
    rounding: Rounding = Rounding.UP,
) -> RateTable:
    rate = BandRate(tiers=[Tier(from_=f, price=Decimal(p)) for f, p in tiers])
    return RateTable.compile(
        rate,
        per=per,
        increment=increment,
        minimum_quantity=minimum_quantity,
        minimum_charge=minimum_charge,
        rounding=rounding,
    )


@pytest.mark.parametrize(
    ("raw", "den", "mode", "expected"),
    [
        (10, 4, Rounding.UP, 3),
        (10, 4, Rounding.DOWN, 2),
        (10, 4, Rounding.HALF_UP, 3),  # 2.5 -> 3
        (10, 4, Rounding.HALF_EVEN, 2),  # 2.5 -> 2
        (14, 4, Rounding.HALF_EVEN, 4),  # 3.5 -> 4
        (9, 4, Rounding.HALF_UP, 2),  # 2.25 -> 2
        (8, 4, Rounding.UP, 2),
    ],
)
def test_div_round(raw: int, den: int, mode: Rounding, expected: int) -> None:
    assert div_round(raw, den, mode) == expected


def test_per_started_increment() -> None:
    # 10 ct per minute, per started minute: 61 s -> 120 s -> 20 ct
    voice = table([(0, "10")], per=60, increment=60)
    priced = price(voice, 61, 0, 0)
    assert (priced.rated, priced.amount) == (120, 20)
    # 1 kB increments: 1 byte costs a whole kB
    data = table([(0, "1")], per=1_000_000, increment=1000)
    assert price(data, 1, 0, 0).rated == 1000


def test_fractional_prices_are_exact_and_rounded_once() -> None:
    # 0.0045 ct per kB, 1,234 kB = 5.553 ct -> up 6, down 5, half_up 6
    for mode, expected in ((Rounding.UP, 6), (Rounding.DOWN, 5), (Rounding.HALF_UP, 6)):
        rate = table([(0, "0.0045")], per=1000, increment=1000, rounding=mode)
        assert price(rate, 1_234_000, 0, 0).amount == expected


def test_minimum_charge_and_quantity() -> None:
    rate = table([(0, "1")], per=1_000_000, increment=1000, minimum_charge=5)
    assert price(rate, 1, 0, 0).amount == 5  # 0.001 ct -> 1 ct -> minimum 5 ct
    assert price(rate, 0, 0, 0).amount == 0  # nothing used, nothing charged
    rate = table([(0, "10")], per=60, increment=1, minimum_quantity=30)
    assert price(rate, 5, 0, 0).rated == 30  # first 30 s always charged


def test_graduated_tiers_from_counter_position() -> None:
    # 2 ct/MB for the first 100 MB of the period, 1 ct/MB after
    rate = table([(0, "2"), (100_000_000, "1")], per=1_000_000)
    whole = price(rate, 10_000_000, 95_000_000, 0)
    # 5 MB at 2 ct + 5 MB at 1 ct
    assert whole.amount == 15
    assert whole.tiers == ((0, 5_000_000), (1, 5_000_000))
    assert price(rate, 10_000_000, 200_000_000, 0).amount == 10


def test_allowance_first_then_tiers() -> None:
    rate = table([(0, "2")], per=1_000_000)
    priced = price(rate, 30_000_000, 0, 20_000_000)
    assert (priced.free, priced.billable, priced.amount) == (20_000_000, 10_000_000, 20)
    assert price(rate, 5_000_000, 0, 20_000_000).amount == 0


def test_units_for_money() -> None:
    # 1.5 ct per MB, 10 kB increments: 936 ct buy 624 MB
    rate = table([(0, "1.5"), (1_000_000_000, "0.75")], per=1_000_000, increment=10_000)
    assert units_for(rate, 936, 0, 0, max_units=10**12) == 624_000_000
    # across a tier: start 900 MB; 100 MB at 1.5 = 150 ct, then 86 ct at 0.75 ct/MB
    units = units_for(rate, 236, 900_000_000, 0, max_units=10**12)
    assert units == 100_000_000 + 114_660_000
    assert price(rate, units, 900_000_000, 0).amount <= 236
    assert price(rate, units + 10_000, 900_000_000, 0).amount > 236
    # allowance units are free on top
    assert units_for(rate, 0, 0, 5_000_000, max_units=10**12) == 5_000_000
    # free tier: capped by max_units
    free = table([(0, "0")], increment=1000)
    assert units_for(free, 0, 0, 0, max_units=123_456) == 123_000


def test_units_for_respects_minimum_charge() -> None:
    rate = table([(0, "1")], per=1_000_000, increment=1000, minimum_charge=10)
    assert units_for(rate, 9, 0, 0, max_units=10**9) == 0
    assert units_for(rate, 9, 0, 4_500, max_units=10**9) == 4_000  # only allowance units
    assert units_for(rate, 10, 0, 0, max_units=10**9) == 10_000_000


def test_units_for_with_minimum_quantity() -> None:
    rate = table([(0, "10")], per=60, increment=1, minimum_quantity=60)
    assert units_for(rate, 9, 0, 0, max_units=10**6) == 0
    assert units_for(rate, 10, 0, 0, max_units=10**6) == 60
