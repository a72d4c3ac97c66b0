"""Invoices to HTML (Jinja2 templates, one per account: standard, detailed, compact) and to
PDF (fpdf2 renders the same HTML; core fonts, so text stays extractable). Accounting
export: journal lines per accounting group, as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import datetime, time, timedelta
from decimal import Decimal
from itertools import groupby
from typing import Any, Final
from zoneinfo import ZoneInfo

from fpdf import FPDF
from jinja2 import Environment, PackageLoader, TemplateNotFound, select_autoescape

from ocs.offline.db import Connection

TEMPLATES: Final = ("standard", "detailed", "compact")
TITLES: Final = {"invoice": "Invoice", "credit_note": "Credit note", "debit_note": "Debit note"}
_ENV = Environment(
    loader=PackageLoader("ocs.offline", "templates"), autoescape=select_autoescape(["html"])
)


class RenderError(Exception):
    pass


def money(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100:,}.{abs(minor) % 100:02d}"


async def invoice_document(conn: Connection, number: int) -> dict[str, Any]:
    inv = await conn.fetchrow("SELECT * FROM invoices WHERE number = $1", number)
    if inv is None:
        raise RenderError(f"invoice {number}: not found")
    lines = await conn.fetch(
        "SELECT * FROM invoice_lines WHERE number = $1 ORDER BY line_no", number
    )
    account = await conn.fetchrow("SELECT * FROM accounts WHERE account_id = $1", inv["account_id"])
    issuer = inv["issuer"]
    if not issuer.startswith("tenant:"):
        row = await conn.fetchrow("SELECT name FROM accounts WHERE account_id = $1", issuer)
        issuer_name = row["name"] if row else issuer
    else:
        row = await conn.fetchrow("SELECT name FROM tenants WHERE tenant_id = $1", issuer[7:])
        issuer_name = (row["name"] if row else "") or issuer[7:]
    tz = await conn.fetchval("SELECT time_zone FROM tenants WHERE tenant_id = $1", inv["tenant_id"])
    zone = ZoneInfo(tz or "UTC")  # dates print in the tenant's local time, not UTC
    treatments = {ln["tax_treatment"] for ln in lines}
    notes = []
    if "reverse_charge" in treatments:
        notes.append("Reverse charge: VAT to be accounted for by the recipient.")
    if "exempt" in treatments:
        notes.append("Exempt from VAT.")
    ls = [dict(ln) for ln in lines]
    groups = [
        (g, list(it))
        for g, it in groupby(
            sorted(ls, key=lambda x: x["accounting_group"]), key=lambda x: x["accounting_group"]
        )
    ]
    return {
        "inv": dict(inv)
        | {
            "period_start": _day(inv["period_start"], zone),
            "period_end": _last_day(inv["period_end"], zone),
            "issued_at": _day(inv["issued_at"], zone),
        },
        "lines": ls,
        "groups": groups,
        "account": dict(account)
        if account
        else {"name": inv["account_id"], "account_id": inv["account_id"]},
        "issuer_name": issuer_name,
        "notes": notes,
        "title": TITLES[inv["kind"]],
    }


def _day(at: datetime | None, zone: ZoneInfo) -> str:
    return at.astimezone(zone).date().isoformat() if at else ""


def _last_day(end: datetime | None, zone: ZoneInfo) -> str:
    """The last day of a period that ends (exclusive) at ``end``: a period ending at local
    midnight of April 1 prints as ending March 31."""
    if end is None:
        return ""
    local = end.astimezone(zone)
    return (
        local.date() - timedelta(days=1) if local.time() == time(0) else local.date()
    ).isoformat()


def render_html(doc: dict[str, Any], template: str | None = None) -> str:
    name = template or doc["inv"]["template"] or "standard"
    try:
        tpl = _ENV.get_template(f"{name}.html")
    except TemplateNotFound:
        raise RenderError(f"template {name!r}: not found (have {', '.join(TEMPLATES)})") from None
    return tpl.render(**doc, money=money)


def render_pdf(html: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=10)
    pdf.write_html(html.encode("latin-1", "replace").decode("latin-1"))
    return bytes(pdf.output())


JOURNAL_FIELDS: Final = (
    "number",
    "kind",
    "issued_at",
    "account_id",
    "issuer",
    "currency",
    "accounting_group",
    "product_class",
    "line_kind",
    "net",
    "tax",
    "tax_treatment",
)


async def journal(conn: Connection, since: datetime | None = None) -> list[dict[str, Any]]:
    """Journal lines: per document, accounting group, product class, line kind and tax
    treatment, the net and tax amounts (credit notes negative)."""
    rows = await conn.fetch(
        "SELECT i.number, i.kind, i.issued_at, i.account_id, i.issuer, i.currency,"
        " l.accounting_group, l.product_class, l.kind AS line_kind, l.tax_treatment,"
        " sum(l.net) AS net, sum(l.tax) AS tax FROM invoices i JOIN invoice_lines l"
        " USING (tenant_id, number) WHERE ($1::timestamptz IS NULL OR i.issued_at >= $1)"
        " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 ORDER BY 1, 7, 8, 9",
        since,
    )
    return [
        {
            k: (
                r[k].isoformat()
                if isinstance(r[k], datetime)
                else int(r[k])
                if isinstance(r[k], Decimal)
                else r[k]
            )
            for k in JOURNAL_FIELDS
        }
        for r in rows
    ]


def journal_csv(entries: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(JOURNAL_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(entries)
    return out.getvalue()


def journal_json(entries: list[dict[str, Any]]) -> str:
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"net": 0, "tax": 0})
    for e in entries:
        key = f"{e['accounting_group']}/{e['currency']}"
        totals[key]["net"] += e["net"]
        totals[key]["tax"] += e["tax"]
    return json.dumps({"entries": entries, "totals": dict(totals)}, indent=2)
