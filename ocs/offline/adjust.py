"""Credit and debit notes against one issued invoice. Issued invoices never change: a note
is a new document with its own gapless number, referring to the invoice. A credit note of
``net`` minor units is taxed like the invoice, and
the credits against one invoice never exceed its net amount."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from ocs.offline.billrun import insert_invoice
from ocs.offline.charges import DraftInvoice, Line, round_half_up
from ocs.offline.db import Database
from ocs.offline.einvoice.document import NOTE_PREFIX
from ocs.offline.line_words import lang_of, words


class AdjustmentError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Note:
    number: int
    kind: str
    refers_to: int
    series_number: int
    net: int
    tax: int
    gross: int

    @property
    def doc_id(self) -> str:
        return f"{NOTE_PREFIX[self.kind]}{self.series_number}"


async def adjust_invoice(
    db: Database, tenant: str, number: int, *, kind: str, net: int, reason: str
) -> Note:
    """Issue a ``credit`` or ``debit`` note of ``net`` minor units against invoice ``number``."""
    if kind not in ("credit", "debit"):
        raise AdjustmentError(f"kind: must be credit or debit, not {kind!r}")
    if net <= 0:
        raise AdjustmentError("amount: must be a positive number of minor units")
    async with db.tenant(tenant) as conn:
        inv = await conn.fetchrow("SELECT * FROM invoices WHERE number = $1 FOR SHARE", number)
        if inv is None or inv["kind"] != "invoice":
            raise AdjustmentError(f"invoice {number}: no such issued invoice")
        credited = await conn.fetchval(
            "SELECT coalesce(sum(net), 0) FROM invoices WHERE refers_to = $1"
            " AND kind = 'credit_note'",
            number,
        )
        sign = -1 if kind == "credit" else 1
        if kind == "credit" and -credited + net > inv["net"]:
            raise AdjustmentError(
                f"amount: {net} exceeds what is left to credit on invoice {number}"
                f" ({inv['net'] + credited})"
            )
        parts = await conn.fetch(
            "SELECT tax_treatment, tax_rate, tax_note, min(accounting_group) AS accounting_group,"
            " sum(net) AS net FROM invoice_lines WHERE number = $1"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            number,
        )
        lang = lang_of(
            await conn.fetchval(
                "SELECT language FROM accounts WHERE account_id = $1", inv["account_id"]
            )
        )
        lines = []
        left = net
        for i, part in enumerate(parts):
            share = (
                left
                if i == len(parts) - 1
                else round_half_up(Fraction(net * int(part["net"]), inv["net"]))
                if inv["net"]
                else 0
            )
            left -= share
            if share == 0:
                continue
            rate = Decimal(part["tax_rate"])
            line = Line(
                inv["issuer"],
                inv["currency"],
                f"{kind}_note",
                words("note", lang, kind=words(kind, lang), reason=reason),
                "adjustment",
                Decimal(1),
                "each",
                sign * share,
                accounting_group=part["accounting_group"],
                tax_rate=rate,
                tax_treatment=part["tax_treatment"],
                tax=sign * round_half_up(Decimal(share) * rate / 100),
                unit_price=share,
                tax_note=part["tax_note"],
            )
            lines.append(line)
        draft = DraftInvoice(
            inv["account_id"], inv["issuer"], inv["currency"], inv["level"], inv["template"], lines
        )
        note = await insert_invoice(
            conn, tenant, draft, kind=f"{kind}_note", refers_to=number, reason=reason
        )
        series = await conn.fetchval("SELECT series_number FROM invoices WHERE number = $1", note)
    return Note(note, f"{kind}_note", number, int(series), draft.net, draft.tax, draft.gross)
