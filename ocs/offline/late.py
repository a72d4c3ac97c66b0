"""Late records: usage and purchases that reach PostgreSQL after their period's bill run.

Every record gets ``usage_records.seq`` when it is stored (migration 0006, a sequence
default). A bill run first fixes its **watermark** ``hi``: it takes ``LOCK TABLE usage_records
IN SHARE MODE`` for an instant, which waits for the transactions inserting right now and holds
back new ones, and reads the sequence's last value; then every record numbered up to ``hi`` is
committed and visible to the run's snapshot. The run reads only records with ``seq <= hi`` (or
no seq: stored before migration 0006), and each account's ``bill_run_accounts`` row keeps the
``hi`` it covered. The next run of the account (its ``lo``) charges

* the records of its period with ``seq <= hi``, as before, and
* the **late** records: ``lo < seq <= hi`` with a time stamp before its period, each on a line
  of its own, labelled with the (already invoiced) period that holds its time stamp.

So every record is charged once, by the first run of its account after it is stored (BRM's
"unbilled usage", CGRateS' rating of CDRs that arrive after the cut-off). Runs of one account
go forward: an account already billed for this or a later period is skipped.

Tiers and allowances of a late record are those of **its** period, rated on top of what that
period already counted: the late amount is the period's total over everything stored up to
``hi`` minus its total over what was stored up to ``lo`` (already invoiced), both rated in
event order. The sum of all invoices of a period therefore equals the one invoice that all of
its usage would have had. Pool overage and adaptive tiers follow the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Final
from zoneinfo import ZoneInfo

from ocs.offline.charges import Period
from ocs.offline.db import Connection

NO_LIMIT: Final = 2**63 - 1  # a watermark above every seq (preview without a lock)
LOCK_TIMEOUT_S: Final = 60  # the watermark lock waits this long for inserting transactions


def period_holding(bill_day: int, at: datetime, tz: str) -> Period:
    """The bill period (local midnight of ``bill_day`` to the next one) holding ``at``."""
    zone = ZoneInfo(tz)
    local = at.astimezone(zone)
    year, month = local.year, local.month
    start = datetime.combine(date(year, month, bill_day), time(0), zone)
    if local < start:
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        start = datetime.combine(date(year, month, bill_day), time(0), zone)
    ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
    end = datetime.combine(date(ny, nm, bill_day), time(0), zone)
    return Period(start.astimezone(UTC), end.astimezone(UTC))


def period_label(period: Period, tz: str) -> str:
    """ISO 8601 interval of local dates, e.g. ``2025-03-10/2025-04-10``."""
    zone = ZoneInfo(tz)
    return f"{period.start.astimezone(zone):%Y-%m-%d}/{period.end.astimezone(zone):%Y-%m-%d}"


@dataclass(frozen=True, slots=True)
class Window:
    """The records a run covers: ``seq <= hi``; for each account, those after its last
    watermark ``lo`` (0: never billed; every account of the run has an entry) with a time
    stamp before the period are late."""

    hi: int = NO_LIMIT
    lo: dict[str, int] = field(default_factory=dict)
    bill_day: int = 1  # the run's cycle: every account of a run shares it
    tz: str = "UTC"
    late: bool = True  # False: only the period's own records (tools, tests)

    def lo_of(self, account: str) -> int:
        return self.lo.get(account, 0)

    @property
    def lo_min(self) -> int:
        """The lowest watermark of the run's accounts (no late records: ``hi``)."""
        if not self.late:
            return self.hi
        return min(self.lo.values(), default=0)

    def period_of(self, at: datetime) -> Period:
        return period_holding(self.bill_day, at, self.tz)

    def label(self, period: Period) -> str:
        return period_label(period, self.tz)


ALL: Final = Window(late=False)  # every record of the period, no late ones


async def watermark(conn: Connection, *, lock: bool) -> int:
    """The highest seq handed out so far. With ``lock`` (a run that issues invoices; ``conn``
    in a transaction of its own, committed right after): every record up to it is committed.
    Raises ``asyncpg.LockNotAvailableError`` after ``LOCK_TIMEOUT_S``."""
    if lock:
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'")
        await conn.execute("LOCK TABLE usage_records IN SHARE MODE")
    row = await conn.fetchrow("SELECT last_value, is_called FROM usage_records_seq")
    if row is None or not row["is_called"]:
        return 0
    return int(row["last_value"])


@dataclass(frozen=True, slots=True)
class Billed:
    """An account's last run: the period start it billed and the watermark it covered."""

    period_start: datetime
    watermark: int


async def last_billed(conn: Connection, accounts: list[str]) -> dict[str, Billed]:
    """The latest billed period and the highest watermark of each account (runs done)."""
    rows = await conn.fetch(
        "SELECT a.account_id, max(r.period_start) AS billed, max(a.watermark) AS mark"
        " FROM bill_run_accounts a JOIN bill_runs r USING (tenant_id, run_id)"
        " WHERE a.account_id = ANY($1::text[]) GROUP BY a.account_id",
        accounts,
    )
    return {r["account_id"]: Billed(r["billed"], int(r["mark"])) for r in rows}


async def lock_account(conn: Connection, tenant: str, account: str) -> None:
    """Serialise runs of one account (any run key) until the transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"ocs:billrun:{tenant}:{account}"
    )
