"""Invoices to HTML (Jinja2 templates, one per account: standard, detailed, compact) and to
PDF (fpdf2 renders the same HTML; core fonts, so text stays extractable). Accounting
export: journal lines per accounting group, as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from functools import cache
from itertools import groupby, zip_longest
from pathlib import Path
from typing import Any, Final

from fpdf import FPDF
from jinja2 import Environment, PackageLoader, TemplateNotFound, select_autoescape

from ocs.offline.db import Connection
from ocs.offline.einvoice.document import (
    DocumentError,
    Party,
    decimal_text,
    doc_ref,
    load_document,
)
from ocs.offline.einvoice.labels import LABELS
from ocs.offline.line_words import PER_TWIN

TEMPLATES: Final = ("standard", "detailed", "compact")
_ENV = Environment(
    loader=PackageLoader("ocs.offline", "templates"), autoescape=select_autoescape(["html"])
)


class RenderError(Exception):
    pass


def money(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100:,}.{abs(minor) % 100:02d}"


def quantity(value: Decimal) -> str:
    return f"{value.normalize():,f}"


def unit_price(minor: Decimal) -> str:
    """A unit price in major units with at least two decimals (0.005 EUR per MB stays)."""
    major = (minor / 100).normalize()
    places = max(2, -int(major.as_tuple().exponent))
    return f"{major:,.{places}f}"


async def invoice_document(conn: Connection, number: int) -> dict[str, Any]:
    """What the templates print: the EN 16931 document (``doc``, the same the e-invoices
    are made of), its lines per accounting group and the labels of the buyer's language."""
    try:
        doc = await load_document(conn, number)
    except DocumentError as exc:
        raise RenderError(str(exc)) from None
    groups = [
        (g, list(it))
        for g, it in groupby(
            sorted(doc.lines, key=lambda x: x.accounting_group), key=lambda x: x.accounting_group
        )
    ]
    lang = doc.buyer.language if doc.buyer.language in LABELS else "en"
    words = LABELS[lang]
    return {
        "doc": doc,
        "groups": groups,
        "t": words,
        "lang": lang,
        "title": words[doc.kind],
        "per_twin": any(m in ln.description for ln in doc.lines for m in PER_TWIN),
        "parties": list(
            zip_longest(
                _party_lines(doc.seller, words),
                [*_party_lines(doc.buyer, words), f"{words['account']}: {doc.buyer.account_id}"],
                fillvalue="",
            )
        ),
    }


def _party_lines(party: Party, words: dict[str, str]) -> list[str]:
    """Name, street, postcode and city, country, VAT ID, e-mail: the lines that are set."""
    lines = [party.name, party.street, f"{party.postcode} {party.city}".strip(), party.country]
    lines += [f"{words['vat_id']}: {party.vat_id}" if party.vat_id else "", party.email]
    lines += [" ".join(x for x in (party.contact_name, party.phone) if x)]
    return [line for line in lines if line]


def render_html(doc: dict[str, Any], template: str | None = None) -> str:
    name = template or doc["doc"].template or "standard"
    try:
        tpl = _ENV.get_template(f"{name}.html")
    except TemplateNotFound:
        raise RenderError(f"template {name!r}: not found (have {', '.join(TEMPLATES)})") from None
    # A credit note is stored negative (it takes money off the account) but printed as its
    # e-invoices send it, in magnitudes under its title: "Total credited: 119.00 EUR", not
    # the double negative "-119.00". The four forms then show the same numbers.
    sign = doc["doc"].sign

    def shown_money(minor: int) -> str:
        return money(minor * sign)

    def shown_qty(value: Decimal) -> str:
        return quantity(value * sign)

    return tpl.render(**doc, money=shown_money, qty=shown_qty, price=unit_price, pct=decimal_text)


# DejaVu Sans (Debian/Ubuntu fonts-dejavu-core, Fedora, Arch): embedded in the PDF, which
# PDF/A (and so Factur-X) requires; the PDF core fonts are never embedded.
FONT_DIRS: Final = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu-sans-fonts"),
    Path("/usr/share/fonts/TTF"),
)
FONT_FILES: Final = {
    "": "DejaVuSans.ttf",
    "B": "DejaVuSans-Bold.ttf",
    "I": "DejaVuSans-Oblique.ttf",
    "BI": "DejaVuSans-BoldOblique.ttf",
}


@cache
def pdf_font_dir() -> Path | None:
    """The folder holding the four DejaVu Sans faces, or None (core fonts, not PDF/A)."""
    for folder in FONT_DIRS:
        if all((folder / name).is_file() for name in FONT_FILES.values()):
            return folder
    return None


def render_pdf(html: str, lang: str = "en", *, pdfa: bool = False) -> bytes:
    """The HTML as PDF in the core Helvetica (Latin-1, ~45 ms a page); with ``pdfa`` as
    PDF/A-3B with embedded DejaVu Sans when the font is installed (what Factur-X needs;
    ~10x the time: the font is parsed, measured glyph by glyph and subset)."""
    html = _META.sub("", html)  # <meta> has no end tag: fpdf warned of every tag after it
    folder = pdf_font_dir() if pdfa else None
    if folder is None:
        pdf = FPDF()
        pdf.add_page()
        pdf.set_font("helvetica", size=10)
        pdf.write_html(html.encode("latin-1", "replace").decode("latin-1"))
        return bytes(pdf.output())
    pdf = FPDF(enforce_compliance="PDF/A-3B")  # adds the sRGB output intent and XMP
    for style, name in FONT_FILES.items():
        pdf.add_font("dejavu", style, str(folder / name))
    pdf.set_lang(lang)
    pdf.add_page()
    pdf.set_font("dejavu", size=9)
    pdf.write_html(html, font_family="dejavu")
    return bytes(pdf.output())


_META: Final = re.compile(r"<meta\b[^>]*>", re.IGNORECASE)  # for browsers only
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
    treatment, the net and tax amounts (credit notes negative). ``number`` is the document's
    printed number (``12``, ``CN-3``), in the order the documents were issued."""
    rows = await conn.fetch(
        "SELECT i.number, i.kind, i.issued_at, i.account_id, i.issuer, i.currency,"
        " l.accounting_group, l.product_class, l.kind AS line_kind, l.tax_treatment,"
        " i.series_number, sum(l.net) AS net, sum(l.tax) AS tax FROM invoices i"
        " JOIN invoice_lines l USING (tenant_id, number)"
        " WHERE ($1::timestamptz IS NULL OR i.issued_at >= $1)"
        " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 ORDER BY 1, 7, 8, 9",
        since,
    )
    printed = [{**r, "number": doc_ref(r["kind"], r["series_number"], r["number"])} for r in rows]
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
        for r in printed
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
