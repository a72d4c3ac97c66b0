"""Purchases the bill run charges besides usage and fees: top-offs (bought over the API or
automatically) and auto renewals charged to the invoice, read from the drained balance
records, plus manual rows of ``topoff_purchases``.

The balance layer writes every purchase through ``adjust.lua``: one ``kind = 'adjust'`` record
whose context names what was bought and its price at purchase time, e.g.
``{"api": "top-off", "addon": "...", "price": 500, "currency": "EUR"}`` (``auto-top-off`` the
same, ``renewal`` with ``plan`` or ``addon`` and ``period``). The drain stores it once per
request id (``usage_records``, key ``adjust:<request id>``). Decision: the bill run reads these
records directly (no copy into another table). A purchase belongs to the period holding its
time stamp and is charged by the run of that period; one stored after that run (drain lag) is
charged by the account's next run as a "Late <period>" line (``ocs.offline.late``: the
ingest watermark), so each one is charged by exactly one run; a repeated or resumed run skips
accounts already done (``bill_run_accounts``), so it is never charged twice.

The buyer is the record's account when its context names one, else the owner of the payer
(the pool or wallet of the catalogue). Purchases paid from a wallet (already debited) or an
external contract are not invoiced, like usage.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Final

from ocs.balance.keys import payer_tag
from ocs.offline.charges import AccountRow, Line, Period, issuer_of
from ocs.offline.db import Connection
from ocs.offline.late import ALL, Window
from ocs.offline.line_words import named, words
from ocs.offline.usage import EXCLUDED_PAYERS
from ocs.rating.catalogue import Catalogue

# context "api" -> (line kind, the words of the line, ``ocs.offline.line_words``)
PURCHASE_APIS: Final = {
    "top-off": ("topoff", "topoff"),
    "auto-top-off": ("topoff", "auto_topoff"),
    "renewal": ("renewal", "renewal"),
}
_CURRENCY: Final = re.compile(r"^[A-Z]{3}$")


class PurchaseError(Exception):
    """A purchase record cannot be charged (the message names the record and field)."""


@dataclass(frozen=True, slots=True)
class Purchase:
    """One drained purchase record of a buyer."""

    record_key: str
    at: datetime
    api: str
    item: str  # add-on, pool or plan id
    item_kind: str  # "addon", "pool" (a pool renewal) or "plan"
    price: int
    currency: str
    period: str  # renewal period as recorded ('' for top-offs)
    late: str = ""  # the invoiced bill period it belongs to, when it arrived after its run


def payer_owners(catalogue: Catalogue) -> dict[str, str]:
    """Payer tag -> owning account, for every pool and wallet of the catalogue."""
    tenant = catalogue.tenant.id
    out = {
        payer_tag(tenant, f"{p.payment}_pool", p.id): p.account for p in catalogue.pools.values()
    }
    out.update({payer_tag(tenant, "wallet", w.id): w.account for w in catalogue.wallets.values()})
    return out


def _payer_kind(tag: str, tenant: str) -> str:
    rest = tag[len(tenant) + 1 :] if tag.startswith(tenant + ":") else tag
    return rest.split(":", 1)[0]


def _purchase(key: str, at: datetime, ctx: dict[str, object]) -> Purchase:
    api = str(ctx.get("api"))
    # an add-on bought or renewed, a pool's allowance renewed (docs/lifecycle.md), a plan
    item_kind = next((k for k in ("addon", "pool") if ctx.get(k) is not None), "plan")
    item = ctx.get(item_kind)
    if not isinstance(item, str) or not item:
        raise PurchaseError(f"purchase {key}: addon: missing (or plan/pool, for a renewal)")
    price = ctx.get("price")
    if isinstance(price, str) and price.isdigit():
        price = int(price)
    if not isinstance(price, int) or isinstance(price, bool) or price < 0:
        raise PurchaseError(f"purchase {key}: price: {price!r} is not minor units >= 0")
    currency = ctx.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise PurchaseError(f"purchase {key}: currency: {currency!r} is not an ISO 4217 code")
    return Purchase(key, at, api, item, item_kind, price, currency, str(ctx.get("period") or ""))


async def drained_purchases(
    conn: Connection,
    catalogue: Catalogue,
    accounts: list[str],
    period: Period,
    window: Window = ALL,
) -> dict[str, list[Purchase]]:
    """The purchases of ``accounts`` with a time stamp in ``period`` and the late ones
    (``window``), by buyer."""
    tenant = catalogue.tenant.id
    owners = payer_owners(catalogue)
    wanted = set(accounts)
    out: dict[str, list[Purchase]] = defaultdict(list)
    rows = await conn.fetch(
        "SELECT record_key, ts, payer, account_id, ctx, seq FROM usage_records"
        " WHERE kind = 'adjust' AND ctx->>'api' = ANY($3::text[])"
        " AND (seq IS NULL OR seq <= $4) AND ts < $2"  # both branches: bounds the index scan
        " AND (ts >= $1 OR seq > $5)"
        " ORDER BY ts, record_key",
        period.start,
        period.end,
        list(PURCHASE_APIS),
        window.hi,
        window.lo_min,
    )
    for r in rows:
        if _payer_kind(r["payer"], tenant) in EXCLUDED_PAYERS:
            continue
        buyer = r["account_id"] or owners.get(r["payer"])
        if buyer not in wanted:
            continue
        late = ""
        if r["ts"] < period.start:
            if r["seq"] <= window.lo_of(buyer):
                continue  # invoiced by an earlier run of the buyer
            late = window.label(window.period_of(r["ts"]))
        ctx = json.loads(r["ctx"])  # jsonb arrives as text
        if not isinstance(ctx, dict):
            raise PurchaseError(f"purchase {r['record_key']}: ctx: not a JSON object")
        bought = _purchase(r["record_key"], r["ts"], ctx)
        out[buyer].append(replace(bought, late=late) if late else bought)
    return dict(out)


def purchase_lines(
    catalogue: Catalogue, account: AccountRow, purchases: list[Purchase]
) -> list[Line]:
    """One line per (what, unit price, currency, renewal period, late period): count x
    recorded price."""
    issuer = issuer_of(account.parent_id, catalogue.tenant.id)
    groups: dict[tuple[str, str, str, str, str, int, str], list[Purchase]] = defaultdict(list)
    for p in purchases:
        groups[(p.late, p.api, p.item_kind, p.item, p.currency, p.price, p.period)].append(p)
    out: list[Line] = []
    lang = account.language
    for (late, api, item_kind, item, currency, price, renewed), items in sorted(groups.items()):
        kind, key = PURCHASE_APIS[api]
        if item_kind == "addon":
            name, product_class = named(catalogue.addons.get(item), item), "telecom"
        elif item_kind == "pool":
            name, product_class = named(catalogue.pools.get(item), item), "telecom"
        else:
            name, product_class = named(catalogue.plans.get(item), item), "subscription"
        description = words(key, lang, item=words(f"item_{item_kind}", lang, name=name))
        if renewed:
            description = words("renewed", lang, text=description, period=renewed)
        if late:
            description = words("late", lang, period=late, text=description)
        out.append(
            Line(
                issuer,
                currency,
                kind,
                description,
                product_class,
                Decimal(len(items)),
                "each",
                price * len(items),
            )
        )
    return out


async def manual_topoff_lines(
    conn: Connection, catalogue: Catalogue, account: AccountRow, period: Period
) -> list[Line]:
    """Rows of ``topoff_purchases`` (entered by hand, no price recorded): the add-on's
    catalogue price."""
    issuer = issuer_of(account.parent_id, catalogue.tenant.id)
    counts: dict[str, int] = defaultdict(int)
    for r in await conn.fetch(
        "SELECT addon_id FROM topoff_purchases WHERE account_id = $1 AND at >= $2 AND at < $3",
        account.account_id,
        period.start,
        period.end,
    ):
        counts[r["addon_id"]] += 1
    out = []
    for addon_id, count in sorted(counts.items()):
        addon = catalogue.addons.get(addon_id)
        if addon is None:
            raise PurchaseError(f"top-off {addon_id!r}: not in the catalogue")
        out.append(
            Line(
                issuer,
                addon.currency,
                "topoff",
                words("topoff", account.language, item=named(addon, addon.id)),
                "telecom",
                Decimal(count),
                "each",
                count * addon.price,
            )
        )
    return out
