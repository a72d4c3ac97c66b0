"""Usage and revenue reports of one tenant, grouped by the dimensions asked for.

* **usage**: the stored usage records (online and batch-rated, ``kind = 'usage'``) whose time
  stamp is in the range: records, units (per unit) and the amount rated online at the first
  level (the SIM owner's plan; allowances and tiers are applied by the bill run, so the
  invoiced amount can differ — that is the revenue report's job), per currency.
* **revenue**: the issued documents whose issue time is in the range, from their lines:
  invoiced net, credited (credit notes, as a positive amount), debited (debit notes), and
  revenue = invoiced - credited + debited as net, tax and gross, per currency.

Periods are calendar days or months in the tenant's time zone (``tenants.time_zone``); the
range is ``[from, to)`` at local midnight. Every query runs in the tenant's transaction as the
application role, so row-level security applies. Money is in minor units.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, Final
from zoneinfo import ZoneInfo

from ocs.offline.db import Database

PERIOD_SQL: Final = "to_char(date_trunc($3, {ts} AT TIME ZONE $4), $5)"
PERIOD_FORMAT: Final = {"day": "YYYY-MM-DD", "month": "YYYY-MM"}
USAGE_DIMENSIONS: Final = {
    "period": PERIOD_SQL.format(ts="u.ts"),
    "account": "coalesce(u.account_id, '')",
    "group": "coalesce(a.accounting_group, '')",
    "plan": "coalesce(u.ctx->'levels'->0->>'plan', '')",
    "zone": "coalesce(u.ctx->'levels'->0->>'zone', '')",
    "service": "coalesce(u.service, '')",
}
REVENUE_DIMENSIONS: Final = {
    "period": PERIOD_SQL.format(ts="i.issued_at"),
    "account": "i.account_id",
    "group": "l.accounting_group",
    "issuer": "i.issuer",
    "level": "i.level",
    "class": "l.product_class",
}
USAGE_MEASURES: Final = ("unit", "records", "units", "currency", "amount")
REVENUE_MEASURES: Final = (
    "currency",
    "documents",
    "invoiced",
    "credited",
    "debited",
    "net",
    "tax",
    "gross",
)
MONEY: Final = frozenset({"amount", "invoiced", "credited", "debited", "net", "tax", "gross"})


class ReportError(Exception):
    """A report cannot be made as asked (the message names the option and the reason)."""


@dataclass(slots=True)
class Report:
    kind: str  # usage | revenue
    by: list[str]
    start: datetime | None
    end: datetime | None
    granularity: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def totals(self) -> list[dict[str, Any]]:
        """The measures summed per currency (and unit, for usage)."""
        keys = ["unit", "currency"] if self.kind == "usage" else ["currency"]
        summed = [c for c in self.columns if c not in keys and c not in self.by]
        out: dict[tuple[str, ...], dict[str, Any]] = {}
        for row in self.rows:
            k = tuple(row[c] for c in keys)
            acc = out.setdefault(k, {**dict(zip(keys, k, strict=True)), **dict.fromkeys(summed, 0)})
            for c in summed:
                acc[c] += row[c]
        return [out[k] for k in sorted(out)]


def dimensions(kind: str, by: str) -> list[str]:
    """``by`` (comma separated) checked against the report's dimensions."""
    allowed = USAGE_DIMENSIONS if kind == "usage" else REVENUE_DIMENSIONS
    names = [n.strip() for n in by.split(",") if n.strip()]
    for name in names:
        if name not in allowed:
            raise ReportError(f"--by: {name!r} is not one of {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise ReportError(f"--by: {by!r} names a dimension twice")
    return names


def local_midnight(day: date | None, tz: str) -> datetime | None:
    if day is None:
        return None
    return datetime.combine(day, time(0), ZoneInfo(tz)).astimezone(UTC)


async def make_report(
    db: Database,
    tenant: str,
    kind: str,
    *,
    by: str = "period,account",
    start: date | None = None,
    end: date | None = None,
    granularity: str = "month",
) -> Report:
    """The ``usage`` or ``revenue`` report of ``tenant`` for ``[start, end)`` (local days)."""
    if kind not in ("usage", "revenue"):
        raise ReportError(f"report: {kind!r} is not usage or revenue")
    if granularity not in PERIOD_FORMAT:
        raise ReportError(f"--period: {granularity!r} is not day or month")
    if start is not None and end is not None and end <= start:
        raise ReportError(f"--to: {end} is not after --from {start}")
    names = dimensions(kind, by)
    async with db.tenant(tenant) as conn:
        tz = await conn.fetchval("SELECT time_zone FROM tenants WHERE tenant_id = $1", tenant)
        if tz is None:
            raise ReportError(f"tenant {tenant!r}: not known to the offline database")
        lo, hi = local_midnight(start, tz), local_midnight(end, tz)
        sql = _usage_sql(names) if kind == "usage" else _revenue_sql(names)
        args: list[Any] = [lo, hi]
        if "period" in names:
            args += [granularity, tz, PERIOD_FORMAT[granularity]]
        rows = await conn.fetch(sql, *args)
    measures = USAGE_MEASURES if kind == "usage" else REVENUE_MEASURES
    columns = [*names, *measures]
    report = Report(kind, names, lo, hi, granularity, columns)
    report.rows = [{c: _plain(r[c]) for c in columns} for r in rows]
    return report


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else int(value)


def _select(dims: dict[str, str], names: list[str], keys: int) -> tuple[str, str]:
    """The dimension columns, and GROUP BY positions of them and the ``keys`` after them."""
    select = "".join(f'{dims[n]} AS "{n}", ' for n in names)
    return select, ", ".join(str(i) for i in range(1, len(names) + keys + 1))


def _usage_sql(names: list[str]) -> str:
    select, group = _select(USAGE_DIMENSIONS, names, 2)
    return (
        f"SELECT {select}u.unit AS unit,"
        " coalesce(u.ctx->'levels'->0->>'currency', '') AS currency,"
        " count(*) AS records, sum(u.units) AS units,"
        " coalesce(sum((u.ctx->'levels'->0->>'amount')::bigint), 0) AS amount"
        " FROM usage_records u LEFT JOIN accounts a USING (tenant_id, account_id)"
        " WHERE u.kind = 'usage' AND ($1::timestamptz IS NULL OR u.ts >= $1)"
        " AND ($2::timestamptz IS NULL OR u.ts < $2)"
        f" GROUP BY {group} ORDER BY {group}"
    )


def _revenue_sql(names: list[str]) -> str:
    select, group = _select(REVENUE_DIMENSIONS, names, 1)
    return (
        f"SELECT {select}i.currency AS currency,"
        " count(DISTINCT i.number) AS documents,"
        " coalesce(sum(l.net) FILTER (WHERE i.kind = 'invoice'), 0) AS invoiced,"
        " coalesce(-sum(l.net) FILTER (WHERE i.kind = 'credit_note'), 0) AS credited,"
        " coalesce(sum(l.net) FILTER (WHERE i.kind = 'debit_note'), 0) AS debited,"
        " sum(l.net) AS net, sum(l.tax) AS tax, sum(l.net + l.tax) AS gross"
        " FROM invoices i JOIN invoice_lines l USING (tenant_id, number)"
        " WHERE ($1::timestamptz IS NULL OR i.issued_at >= $1)"
        " AND ($2::timestamptz IS NULL OR i.issued_at < $2)"
        f" GROUP BY {group} ORDER BY {group}"
    )


def report_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=report.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report.rows)
    return out.getvalue()


def report_json(report: Report) -> str:
    body = {
        "report": report.kind,
        "from": report.start.isoformat() if report.start else None,
        "to": report.end.isoformat() if report.end else None,
        "period": report.granularity,
        "by": report.by,
        "rows": report.rows,
        "totals": report.totals(),
    }
    return json.dumps(body, indent=2) + "\n"
