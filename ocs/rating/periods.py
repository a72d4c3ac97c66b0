"""Bill periods, as rating needs them: period counters (tiers, allowances) start at zero at
the start of the buyer's bill period, local midnight of its ``bill_day`` in its time zone
(the bill run's ``ocs.offline.late.period_holding``; a test checks both agree)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from ocs.rating.catalogue import Catalogue


def period_start(bill_day: int, at: datetime, tz: ZoneInfo) -> date:
    """The local date the bill period holding ``at`` starts on."""
    local = at.astimezone(tz)
    if local.day >= bill_day:
        return date(local.year, local.month, bill_day)
    if local.month == 1:
        return date(local.year - 1, 12, bill_day)
    return date(local.year, local.month - 1, bill_day)


def counter_period(catalogue: Catalogue, account: str, at: datetime) -> str:
    """The id of the buyer's bill period holding ``at`` (its local start date), which
    prefixes the period counters kept with a balance."""
    acc = catalogue.accounts.get(account)
    bill_day = acc.bill_day if acc is not None else 1
    zone = (acc.time_zone if acc is not None else None) or catalogue.tenant.time_zone
    return period_start(bill_day, at.astimezone(UTC), ZoneInfo(zone)).isoformat()
