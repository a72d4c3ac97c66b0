"""Property-based tests: determinism, the splitting bound, money->units maximality, and plan
changes applying from their effective time exactly.

Splitting bound (documented in docs/rating.md): rating a quantity Q in one go gives T; rating
it as k parts one after another (period counters updated in between, same tariff and band)
gives S. With increment I, unit price at most p_max per `per` units, no minimum charge and no
minimum quantity:

    -k <= S - T <= ceil((k - 1) * I * p_max / per) + k

Graduated tiers and allowances are additive along the period counter, so only the
per-part rounding to the increment (at most I - 1 extra units per part boundary) and the
per-part rounding of money (less than one minor unit per part) can differ.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ocs.rating import Catalogue, UsageContext, rate
from ocs.rating.loader import check_documents
from ocs.rating.models import BandRate, Rounding, Tier
from ocs.rating.tariffs import RateTable, price, units_for

from .helpers import base_document


@st.composite
def rate_tables(draw: st.DrawFn) -> RateTable:
    n = draw(st.integers(1, 4))
    starts = sorted(draw(st.sets(st.integers(1, 10_000_000), min_size=n - 1, max_size=n - 1)))
    prices = draw(
        st.lists(
            st.decimals(min_value=0, max_value=100, places=3, allow_nan=False),
            min_size=n,
            max_size=n,
        )
    )
    tiers = [Tier(from_=f, price=p) for f, p in zip([0, *starts], prices, strict=True)]
    return RateTable.compile(
        BandRate(tiers=tiers),
        per=draw(st.sampled_from([1, 60, 1000, 1_000_000])),
        increment=draw(st.sampled_from([1, 10, 60, 1000, 10_000])),
        minimum_quantity=0,
        minimum_charge=0,
        rounding=draw(st.sampled_from(list(Rounding))),
    )


def p_max(table: RateTable) -> Decimal:
    return Decimal(max(table.numerators)) / Decimal(table.denominator)


@given(
    rate_tables(),
    st.lists(st.integers(1, 5_000_000), min_size=1, max_size=8),
    st.integers(0, 10_000_000),
    st.integers(0, 5_000_000),
)
def test_split_usage_stays_within_documented_bound(
    table: RateTable, parts: list[int], position: int, allowance: int
) -> None:
    whole = price(table, sum(parts), position, allowance)
    total, pos, left = 0, position, allowance
    for part in parts:
        priced = price(table, part, pos, left)
        total += priced.amount
        pos += priced.billable
        left -= priced.free
    k = len(parts)
    upper = math.ceil((k - 1) * table.increment * p_max(table)) + k
    assert -k <= total - whole.amount <= upper


@given(rate_tables(), st.lists(st.integers(1, 100), min_size=1, max_size=8), st.integers(0, 10**6))
def test_split_on_increment_multiples_differs_by_rounding_only(
    table: RateTable, parts: list[int], position: int
) -> None:
    units = [p * table.increment for p in parts]
    whole = price(table, sum(units), position, 0)
    total, pos = 0, position
    for part in units:
        priced = price(table, part, pos, 0)
        total += priced.amount
        pos += priced.billable
    assert abs(total - whole.amount) <= len(parts)


@given(rate_tables(), st.integers(0, 100_000), st.integers(0, 10_000_000), st.integers(0, 10**6))
def test_units_for_is_the_most_money_buys(
    table: RateTable, amount: int, position: int, allowance: int
) -> None:
    cap = 10**9
    units = units_for(table, amount, position, allowance, max_units=cap)
    assert units % table.increment == 0
    assert price(table, units, position, allowance).amount <= amount
    if units + table.increment <= cap:
        more = price(table, units + table.increment, position, allowance)
        assert more.amount > amount


@given(rate_tables(), st.integers(0, 10**8), st.integers(0, 10**7))
def test_pricing_is_deterministic(table: RateTable, quantity: int, position: int) -> None:
    assert price(table, quantity, position, 0) == price(table, quantity, position, 0)


def _catalogue_with_change(change: datetime) -> Catalogue:
    doc: dict[str, Any] = base_document()
    tariff = {
        "service": "data",
        "zone": "*",
        "rates": {"any": {"tiers": [{"from": 0, "price": "1"}]}},
    }
    newer = {**tariff, "rates": {"any": {"tiers": [{"from": 0, "price": "2"}]}}}
    doc["plans"][0]["versions"] = [
        {"effective_from": "2020-01-01T00:00:00+00:00", "zone_set": "zs", "tariffs": [tariff]},
        {"effective_from": change.isoformat(), "zone_set": "zs", "tariffs": [newer]},
    ]
    report = check_documents({"t.yaml": doc})
    assert report.catalogue is not None, report.issues
    return report.catalogue


@settings(max_examples=40, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2021, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    st.integers(-3, 3),
    st.integers(-14 * 60, 14 * 60),
)
def test_plan_version_applies_from_effective_time_exactly(
    change: datetime, delta_us: int, offset_min: int
) -> None:
    catalogue = _catalogue_with_change(change)
    zone = timezone(timedelta(minutes=offset_min))
    when = (change + timedelta(microseconds=delta_us)).astimezone(zone)
    ctx = UsageContext(tenant="t", imsi="262010000000001", event_time=when, quantity=100)
    rated = rate(catalogue, ctx)
    assert rated.amounts == ((200,) if delta_us >= 0 else (100,))
    assert rate(catalogue, ctx) == rated  # deterministic
