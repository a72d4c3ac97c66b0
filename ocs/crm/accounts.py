"""Account rows (customers and, with ``parent``, end customers): create or update by id.

Given fields replace the current ones, fields not given keep them (a new account takes the
model's defaults); the result is validated by the rating model and stored as the catalogue
stores it, so an unchanged row compares equal and writes nothing."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from ocs.crm.fields import (
    Change,
    RowError,
    cell_int,
    cell_json,
    claim_key,
    first_error,
    payer_value,
)
from ocs.crm.readers import Row
from ocs.provisioning.catalogues import State, dump_item
from ocs.rating.models import Account, InvoiceParty

# The buyer's invoice data (Account.invoice, docs/invoices.md), one column each: a CRM export
# has them flat. A cell given replaces that field; the others keep what the account has.
INVOICE_COLUMNS: Final = tuple(InvoiceParty.model_fields)
COLUMNS: Final = (
    "id",
    "name",
    "parent",
    "kind",
    "payment",
    "currency",
    "tax_profile",
    "accounting_group",
    "bill_day",
    "time_zone",
    "plans",
    "payer",
    *INVOICE_COLUMNS,
)
_ACCOUNT: Final = TypeAdapter(Account)


def _fields(row: Row) -> dict[str, Any]:
    fields = dict(row.fields)
    if "payer" in fields:
        fields["payer"] = payer_value("payer", fields["payer"])
    if row.text:
        if "bill_day" in fields:
            fields["bill_day"] = cell_int("bill_day", fields["bill_day"])
        if "plans" in fields:
            fields["plans"] = cell_json("plans", fields["plans"], list)
    return fields


def file_ids(rows: list[Row]) -> set[str]:
    """Ids the file defines (a parent may come later in the file than its children)."""
    return {str(r.fields["id"]) for r in rows if r.problem is None and "id" in r.fields}


class AccountPlanner:
    """Turns account rows into changes against one state (one batch)."""

    section = "accounts"

    def __init__(self, state: State, in_file: Collection[str]) -> None:
        self.current: Mapping[str, dict[str, Any]] = state.get("accounts") or {}
        self.known = set(self.current) | set(in_file)
        self.taxes = set(state.get("tax_profiles") or {})
        self.lines: dict[str, int] = {}

    def plan(self, row: Row) -> Change | None:
        """The change ``row`` makes (None: unchanged); raises :class:`RowError`."""
        fields = _fields(row)
        ident = claim_key(fields, "id", f"account {fields.get('id')!r}", self.lines, row.line)
        before = self.current.get(ident)
        invoice = {k: fields.pop(k) for k in INVOICE_COLUMNS if k in fields}
        if invoice:
            fields["invoice"] = {**((before or {}).get("invoice") or {}), **invoice}
        try:
            model = _ACCOUNT.validate_python({**(before or {}), **fields})
        except ValidationError as exc:
            raise first_error(exc) from None
        if model.parent is not None:
            if model.parent == ident:
                raise RowError("parent", "an account cannot be its own parent")
            if model.parent not in self.known:
                raise RowError("parent", f"unknown parent account {model.parent!r}")
        if model.tax_profile is not None and model.tax_profile not in self.taxes:
            raise RowError("tax_profile", f"unknown tax profile {model.tax_profile!r}")
        after = dump_item(model)
        if after == before:
            return None
        return Change(row.line, self.section, ident, before, after)
