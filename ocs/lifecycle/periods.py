"""Lifecycle periods: calendar periods of a pool in its account's time zone, anchored on the
account's bill day (month, year), local midnight (day) or Monday (week). Pure functions.

A period's id is its start in UTC, ``2026-11-01T00:00:00Z``: unique per pool and the key of
its renewal (docs/lifecycle.md)."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ocs.rating.models import Period as PeriodKind


@dataclass(frozen=True, slots=True)
class Period:
    id: str
    start_ms: int
    end_ms: int

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "start": self.start_ms, "end": self.end_ms}


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def period_id(start_ms: int) -> str:
    return datetime.fromtimestamp(start_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _add_months(day: date, months: int, anchor_day: int) -> date:
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(anchor_day, calendar.monthrange(year, month)[1]))


def advance(start: datetime, kind: PeriodKind, anchor_day: int | None = None) -> datetime:
    """The end of the period starting at ``start`` (an aware local time): one day, week,
    month or year later at the same local wall time (the month day clamped to the month's
    length, ``anchor_day`` defaulting to the start's day)."""
    tz = start.tzinfo
    day = start.date()
    wall = start.time().replace(tzinfo=None)
    if kind == "day":
        nxt = day + timedelta(days=1)
    elif kind == "week":
        nxt = day + timedelta(days=7)
    elif kind == "month":
        nxt = _add_months(day, 1, anchor_day or day.day)
    else:
        nxt = _add_months(day, 12, anchor_day or day.day)
    return datetime.combine(nxt, wall, tz)


def period_at(at_ms: int, kind: PeriodKind, tz: ZoneInfo, bill_day: int = 1) -> Period:
    """The calendar period holding ``at_ms``."""
    local = datetime.fromtimestamp(at_ms / 1000, tz)
    day = local.date()
    if kind == "day":
        first = day
    elif kind == "week":
        first = day - timedelta(days=day.weekday())
    elif kind == "month":
        first = day if day.day >= bill_day else _add_months(day, -1, bill_day)
        first = first.replace(day=bill_day)
    else:
        first = date(day.year, 1, bill_day)
        if day < first:
            first = date(day.year - 1, 1, bill_day)
    start = datetime.combine(first, time(0), tz)
    return Period(period_id(_ms(start)), _ms(start), _ms(advance(start, kind, bill_day)))


def next_period(
    current_end_ms: int, now_ms: int, kind: PeriodKind, tz: ZoneInfo, bill_day: int
) -> Period:
    """The period after one that ended at ``current_end_ms``: the calendar period holding
    ``now_ms`` (periods missed while nothing ran are skipped, not renewed one by one)."""
    return period_at(max(current_end_ms, now_ms), kind, tz, bill_day)


def period_from(now_ms: int, kind: PeriodKind, tz: ZoneInfo) -> Period:
    """A period starting now (a renewal on depletion restarts the bundle's validity)."""
    start = datetime.fromtimestamp(now_ms / 1000, tz)
    return Period(period_id(now_ms), now_ms, _ms(advance(start, kind)))
