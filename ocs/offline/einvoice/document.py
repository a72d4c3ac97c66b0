"""One issued document (invoice, credit or debit note) as the EN 16931 semantic model needs
it: parties, dates in the tenant's time zone, lines with quantity, unit and unit price, tax
category per line and the breakdown per category. Loaded once from PostgreSQL and shared by
the HTML/PDF templates and the UBL and CII writers, so all forms carry the same figures.

Money stays integer minor units here; ``amount()`` prints it with two decimals (ISO 4217
currencies of two minor digits, as the rest of ``ocs.offline``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from ocs.offline.db import Connection

# EN 16931 VAT category codes (UNCL 5305) per tax treatment; a standard rule at 0 % is Z.
CATEGORY: Final = {"standard": "S", "reverse_charge": "AE", "exempt": "E", "zero": "Z"}
# Default legal notes, when the tax rule carries none (BT-120 is mandatory for AE and E).
DEFAULT_NOTE: Final = {
    "AE": "Reverse charge: VAT to be accounted for by the recipient"
    " (Article 196, Council Directive 2006/112/EC).",
    "E": "Exempt from VAT.",
}
# UN/ECE Recommendation 20 unit codes; (code, divisor of the stored quantity).
UNIT_CODES: Final = {
    "bytes": ("4L", Decimal(1_000_000)),  # megabyte
    "seconds": ("SEC", Decimal(1)),
    "period": ("MON", Decimal(1)),  # recurring fees: per month of the bill period
    "each": ("C62", Decimal(1)),
    "events": ("C62", Decimal(1)),
    "units": ("C62", Decimal(1)),
}
UNIT_NAMES: Final = {"4L": "MB", "SEC": "s", "MON": "month", "C62": "pcs"}
NOTE_PREFIX: Final = {"credit_note": "CN-", "debit_note": "DN-"}
TYPE_CODES: Final = {"invoice": "380", "credit_note": "381", "debit_note": "383"}
QUANTITY_PLACES: Final = Decimal("0.0001")


class DocumentError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Party:
    name: str
    country: str
    street: str = ""
    postcode: str = ""
    city: str = ""
    vat_id: str = ""
    email: str = ""
    contact_name: str = ""
    phone: str = ""
    iban: str = ""
    bic: str = ""
    account_id: str = ""
    payment_days: int = 14
    language: str = "en"
    buyer_reference: str = ""

    @classmethod
    def from_json(cls, raw: Any) -> Party:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and v is not None}
        known.setdefault("name", "")
        known.setdefault("country", "")
        if data.get("legal_name"):
            known["name"] = data["legal_name"]
        return cls(**known)


@dataclass(frozen=True, slots=True)
class DocLine:
    line_no: int
    description: str
    quantity: Decimal  # in unit_code, signed like the net amount
    unit_code: str
    unit_price: Decimal  # minor units per unit_code, never negative
    net: int  # minor units
    tax: int
    category: str
    rate: Decimal
    tax_note: str
    accounting_group: str

    @property
    def unit_name(self) -> str:
        return UNIT_NAMES.get(self.unit_code, self.unit_code)


@dataclass(frozen=True, slots=True)
class TaxBreakdown:
    category: str
    rate: Decimal
    basis: int
    tax: int
    note: str


@dataclass(slots=True)
class Document:
    number: int
    kind: str  # invoice | credit_note | debit_note
    currency: str
    issue_date: date
    due_date: date
    period_start: date | None
    period_end: date | None  # last day, inclusive
    seller: Party
    buyer: Party
    lines: list[DocLine]
    net: int
    tax: int
    gross: int
    series_number: int | None = None  # the number in the kind's own series (0010, 0011)
    refers_to: int | None = None  # the corrected invoice's document key
    refers_to_id: str | None = None  # and its number as printed (BT-25)
    refers_to_date: date | None = None
    reason: str = ""
    template: str = "standard"
    notes: list[str] = field(default_factory=list)

    @property
    def doc_id(self) -> str:
        """The document's number as printed and sent (BT-1): the number in its kind's series
        with the kind's prefix (invoices ``<n>``, notes ``CN-<n>`` / ``DN-<n>``); a note
        issued before 0010 has none and prints its document key."""
        return doc_ref(self.kind, self.series_number, self.number)

    @property
    def type_code(self) -> str:
        return TYPE_CODES[self.kind]

    @property
    def sign(self) -> int:
        """Credit notes are stored negative; their e-invoice amounts are positive."""
        return -1 if self.kind == "credit_note" else 1

    @property
    def breakdown(self) -> list[TaxBreakdown]:
        sums: dict[tuple[str, Decimal], list[int]] = {}
        notes: dict[tuple[str, Decimal], str] = {}
        for ln in self.lines:
            key = (ln.category, ln.rate)
            acc = sums.setdefault(key, [0, 0])
            acc[0] += ln.net
            acc[1] += ln.tax
            if ln.tax_note and ln.category in ("AE", "E"):  # BR-Z-10, BR-S-10: no reason
                notes.setdefault(key, ln.tax_note)
        return [
            TaxBreakdown(c, r, b, t, notes.get((c, r), DEFAULT_NOTE.get(c, "")))
            for (c, r), (b, t) in sorted(sums.items())
        ]


def amount(minor: int) -> str:
    """Minor units as a decimal with two places: ``-1234`` -> ``-12.34``."""
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100}.{abs(minor) % 100:02d}"


def decimal_text(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if text not in ("-0", "") else "0"


def category_of(treatment: str, rate: Decimal) -> str:
    if treatment == "standard" and rate == 0:
        return "Z"
    return CATEGORY.get(treatment, "S")


def doc_line(row: Any) -> DocLine:
    """One stored line in EN 16931 terms: unit code and quantity converted (bytes -> MB),
    the unit price as the stored one or net / quantity; a line without a quantity (a late
    difference) is one lump sum."""
    code, div = UNIT_CODES.get(row["unit"], ("C62", Decimal(1)))
    net = int(row["net"])
    qty = abs(Decimal(row["quantity"])) / div
    stored_price = row.get("unit_price") if hasattr(row, "get") else None
    if qty == 0:
        code, qty, price = "C62", Decimal(1), Decimal(abs(net))
    elif stored_price is not None:
        price = Decimal(stored_price) / div
        qty = (Decimal(abs(net)) / price).quantize(QUANTITY_PLACES) if price else qty
    else:
        price = Decimal(abs(net)) / qty
        qty = qty.quantize(QUANTITY_PLACES) if qty.as_tuple().exponent < -4 else qty  # type: ignore[operator]
    rate = Decimal(row["tax_rate"])
    category = category_of(row["tax_treatment"], rate)
    return DocLine(
        int(row["line_no"]),
        row["description"],
        qty if net >= 0 else -qty,
        code,
        price,
        net,
        int(row["tax"]),
        category,
        rate if category == "S" else Decimal(0),
        row.get("tax_note") or "" if hasattr(row, "get") else "",
        row["accounting_group"],
    )


def doc_ref(kind: str, series_number: int | None, number: int) -> str:
    """A document's printed number: its kind's prefix and its series number."""
    if series_number is None:
        return str(number)
    return f"{NOTE_PREFIX.get(kind, '')}{series_number}"


REF_KINDS: Final = {"": "invoice", **{p.rstrip("-"): k for k, p in NOTE_PREFIX.items()}}


async def resolve_document(conn: Connection, ref: str, *, kind: str | None = None) -> int:
    """The document key of the printed number ``ref`` (``12``, ``CN-3``, ``DN-1``) in the
    connection's tenant; ``kind``: the kind it must be. Raises :class:`DocumentError`."""
    prefix, _, digits = ref.strip().upper().rpartition("-")
    want = REF_KINDS.get(prefix)
    if want is None or not digits.isdigit() or len(digits) > 18:
        raise DocumentError(
            f"{ref!r} is not a document number (an invoice number such as 12, or CN-3, DN-1)"
        )
    if kind is not None and want != kind:
        raise DocumentError(f"{ref}: not an {kind.replace('_', ' ')}")
    number = await conn.fetchval(
        "SELECT number FROM invoices WHERE kind = $1 AND series_number = $2", want, int(digits)
    )
    if number is None and want != "invoice":  # a note issued before 0010: its document key
        number = await conn.fetchval(
            "SELECT number FROM invoices WHERE kind = $1 AND number = $2 AND series_number IS NULL",
            want,
            int(digits),
        )
    if number is None:
        raise DocumentError(f"{want.replace('_', ' ')} {ref.strip().upper()}: not found")
    return int(number)


async def printed_numbers(conn: Connection, numbers: list[int]) -> dict[int, str]:
    """The printed number of each document key in ``numbers``."""
    rows = await conn.fetch(
        "SELECT number, kind, series_number FROM invoices WHERE number = ANY($1::bigint[])",
        numbers,
    )
    return {r["number"]: doc_ref(r["kind"], r["series_number"], r["number"]) for r in rows}


async def load_document(conn: Connection, number: int) -> Document:
    """The issued document ``number`` of the connection's tenant."""
    inv = await conn.fetchrow("SELECT * FROM invoices WHERE number = $1", number)
    if inv is None:
        raise DocumentError(f"invoice {number}: not found")
    rows = await conn.fetch(
        "SELECT * FROM invoice_lines WHERE number = $1 ORDER BY line_no", number
    )
    tz = await conn.fetchval("SELECT time_zone FROM tenants WHERE tenant_id = $1", inv["tenant_id"])
    zone = ZoneInfo(tz or "UTC")
    seller = Party.from_json(inv["seller"]) if inv["seller"] else await _issuer(conn, inv)
    buyer = Party.from_json(inv["buyer"]) if inv["buyer"] else await _buyer(conn, inv)
    refers_date = None
    refers_id = None
    period = (inv["period_start"], inv["period_end"])
    if inv["refers_to"] is not None:
        refers_id = str(inv["refers_to"])
        ref = await conn.fetchrow(
            "SELECT kind, series_number, issued_at, period_start, period_end FROM invoices"
            " WHERE number = $1",
            inv["refers_to"],
        )
        if ref is not None:
            refers_date = ref["issued_at"].astimezone(zone).date()
            refers_id = doc_ref(ref["kind"], ref["series_number"], inv["refers_to"])
            if period[0] is None:  # a note corrects the supplies of its invoice's period
                period = (ref["period_start"], ref["period_end"])
    issued, due, period_start, period_end = document_dates(inv, zone, seller.payment_days, period)
    lines = [doc_line(dict(r)) for r in rows]
    doc = Document(
        number=number,
        kind=inv["kind"],
        currency=inv["currency"],
        issue_date=issued,
        due_date=due,
        period_start=period_start,
        period_end=period_end,
        seller=seller,
        buyer=buyer,
        lines=lines,
        net=int(inv["net"]),
        tax=int(inv["tax"]),
        gross=int(inv["gross"]),
        series_number=inv["series_number"],
        refers_to=inv["refers_to"],
        refers_to_id=refers_id,
        refers_to_date=refers_date,
        reason=inv["reason"] or "",
        template=inv["template"] or "standard",
    )
    doc.notes = [b.note for b in doc.breakdown if b.note]
    return doc


def document_dates(
    inv: Any, zone: ZoneInfo, payment_days: int, period: tuple[Any, Any]
) -> tuple[date, date, date | None, date | None]:
    """Issue date, due date and the first and last day of ``period`` (the ``invoices`` row's
    own, or for a note its invoice's) of the row ``inv``, in the tenant's time zone: what
    every form prints (and the document's event says, ``ocs.offline.event_relay``)."""
    issued: date = inv["issued_at"].astimezone(zone).date()
    due = issued + timedelta(days=payment_days)
    return issued, due, _day(period[0], zone), _last_day(period[1], zone)


async def _issuer(conn: Connection, inv: Any) -> Party:
    """Documents issued before party snapshots (migration 0009): the issuer as it is now."""
    issuer = inv["issuer"]
    if issuer.startswith("tenant:"):
        row = await conn.fetchrow(
            "SELECT tenant_id AS account_id, name, country, party FROM tenants"
            " WHERE tenant_id = $1",
            issuer[7:],
        )
    else:
        row = await conn.fetchrow(
            "SELECT account_id, name, country, party FROM accounts WHERE account_id = $1", issuer
        )
    return _party_row(row, issuer)


async def _buyer(conn: Connection, inv: Any) -> Party:
    row = await conn.fetchrow(
        "SELECT account_id, name, country, language, party FROM accounts WHERE account_id = $1",
        inv["account_id"],
    )
    return _party_row(row, inv["account_id"])


def _party_row(row: Any, fallback: str) -> Party:
    if row is None:
        return Party(name=fallback, country="", account_id=fallback)
    data = json.loads(row["party"]) if isinstance(row["party"], str) else dict(row["party"] or {})
    data |= {k: v for k, v in dict(row).items() if k != "party"}
    if not data.get("name"):
        data["name"] = fallback
    return Party.from_json(data)


def _day(at: datetime | None, zone: ZoneInfo) -> date | None:
    return at.astimezone(zone).date() if at else None


def _last_day(end: datetime | None, zone: ZoneInfo) -> date | None:
    """A period ending (exclusive) at local midnight of April 1 ends on March 31."""
    if end is None:
        return None
    local = end.astimezone(zone)
    return local.date() - timedelta(days=1) if local.time() == time(0) else local.date()
