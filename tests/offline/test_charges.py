"""Pure charge arithmetic: pools (static, flexible, adaptive), pro rata, tax lookup."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from ocs.offline.charges import (
    Period,
    PoolRow,
    SubRow,
    TaxRule,
    active_seconds,
    lookup_tax,
    pool_lines,
    pro_rata,
    round_half_up,
)

MB = 1_000_000
P = Period(datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 31, tzinfo=UTC))  # 30 days


def _totals(lines: list) -> list[tuple[str, int]]:  # type: ignore[type-arg]
    return [(x.kind, x.net) for x in lines]


def test_flexible_pool_grows_with_active_sims_pro_rata() -> None:
    pool = PoolRow("flex", "flexible", "EUR", 300, 0, 50 * MB, MB, 2, ())
    # 2 SIMs all month + 1 SIM for 15 of 30 days = 2.5 SIMs: size 125 MB, fee 2.5 x 3.00 = 7.50
    lines = pool_lines(pool, "t", 130 * MB, Fraction(5, 2))
    assert _totals(lines) == [("pool", 750), ("overage", 10)]  # 5 MB over x 0.02
    assert lines[0].description.startswith(
        "Flexible pool flex: 125,000,000 units included for 2.50 SIMs"
    )


def test_adaptive_pool_bills_the_tier_reached() -> None:
    ladder = ((100 * MB, 1000), (500 * MB, 3000), (1000 * MB, 5000))
    pool = PoolRow("ad", "adaptive", "EUR", 0, 0, 0, 10 * MB, 200, ladder)
    assert _totals(pool_lines(pool, "t", 80 * MB, Fraction(0))) == [("pool", 1000)]
    assert _totals(pool_lines(pool, "t", 100 * MB + 1, Fraction(0))) == [("pool", 3000)]
    # beyond the last step: its fee plus overage per started 10 MB (21 blocks x 2.00)
    assert _totals(pool_lines(pool, "t", 1201 * MB, Fraction(0))) == [
        ("pool", 5000),
        ("overage", 4200),
    ]


def test_static_pool_without_overage_price() -> None:
    pool = PoolRow("s", "static", "EUR", 4900, 10_000 * MB, 0, MB, 0, ())
    assert _totals(pool_lines(pool, "t", 20_000 * MB, Fraction(0))) == [("pool", 4900)]


def test_active_seconds_follow_status_and_owner() -> None:
    d = lambda day: datetime(2025, 3, day, tzinfo=UTC)  # noqa: E731
    sub = SubRow(
        1,
        "x",
        "t",
        "a",
        d(1),
        (
            (d(1), "active", "a"),
            (d(11), "suspended", "a"),
            (d(16), "active", "a"),
            (d(21), "active", "b"),
        ),
    )
    assert active_seconds(sub, "a", P) == 15 * 86400  # 10 + 5 days on account a
    assert active_seconds(sub, "b", P) == 10 * 86400  # moved to b on the 21st
    assert pro_rata(1000, 15 * 86400, P.seconds) == 500
    assert pro_rata(1000, 86400, P.seconds) == 33  # 33.3
    assert round_half_up(Fraction(5, 2)) == 3 and round_half_up(Fraction(-5, 2)) == -3


def test_tax_lookup_most_specific_first() -> None:
    rules = {
        ("vat", "*", "*"): TaxRule(Decimal(19), "standard"),
        ("vat", "AT", "*"): TaxRule(Decimal(20), "standard"),
        ("vat", "DE", "goods"): TaxRule(Decimal(7), "standard"),
    }
    assert lookup_tax(rules, "vat", "DE", "goods").rate_percent == 7
    assert lookup_tax(rules, "vat", "DE", "telecom").rate_percent == 19
    assert lookup_tax(rules, "vat", "AT", "goods").rate_percent == 20
    assert lookup_tax(rules, None, "AT", "goods").rate_percent == 0
