"""Batch rating with the online rating code.

Drained records carry, per level, the plan, zone and band rating chose online; the bill run
rebuilds that level's :class:`ocs.rating.Quote` from the catalogue and prices the record's
quantity with ``Quote.price`` under the period's counters (tiers and allowances in event
order), exactly as ``ocs.rating.rate`` does. Network CDRs that never went online are rated
from a full :class:`ocs.rating.UsageContext` with ``ocs.rating.rate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from ocs.rating import Counters, Quote, ServiceKind
from ocs.rating.catalogue import Catalogue
from ocs.rating.models import Payer, PayerKind, Rounding
from ocs.rating.tariffs import exact_amount


class RerateError(Exception):
    """The catalogue cannot price a recorded level (plan, zone or tariff gone)."""


@dataclass(slots=True)
class LevelCharge:
    level: int
    buyer: str
    seller: str | None
    payer_kind: str
    plan: str
    zone: str
    currency: str
    service: str
    quantity: int
    amount: int
    exact: Fraction  # the amount before rounding (wholesale lines round per line)
    rounding: Rounding


def _payer(text: str) -> Payer:
    kind, _, pid = text.partition(":")
    return Payer(kind=PayerKind(kind), id=pid)


def level_quote(
    catalogue: Catalogue,
    level: dict[str, Any],
    service: ServiceKind,
    rating_group: int | None,
    at: datetime,
    owner: str,
) -> Quote:
    """The quote of one recorded level; ``owner`` keys level 0's per-subscription counters."""
    plan = catalogue.plans.get(level["plan"])
    version = None if plan is None else plan.version_at(at)
    if version is None:
        raise RerateError(f"plan {level['plan']!r} has no version at {at.isoformat()}")
    zone = level["zone"]
    tariff = version.tariff_for(service, zone, rating_group)
    if tariff is None:
        raise RerateError(f"plan {level['plan']!r} does not price {service} in zone {zone!r}")
    buyer = level["buyer"]
    if tariff.account_scope or level["level"] > 0:
        owner = buyer
    allowance = version.allowance_for(service, zone) if version.allowances else None
    return Quote(
        level["level"],
        buyer,
        level.get("seller"),
        _payer(level["payer"]),
        version.plan_id,
        version.effective_from,
        version.currency,
        zone,
        level["band"],
        service,
        rating_group,
        owner + tariff.counter_suffix,
        None if allowance is None else f"{owner}|allowance:{allowance.id}",
        0 if allowance is None else allowance.units,
        tariff.rate_for(level["band"]),
    )


def _memo_quote(
    memo: dict[tuple[Any, ...], Quote],
    catalogue: Catalogue,
    level: dict[str, Any],
    service: ServiceKind,
    rating_group: int | None,
    at: datetime,
    owner: str,
) -> Quote:
    plan = catalogue.plans.get(level["plan"])
    version = None if plan is None else plan.version_at(at)
    key = (
        id(version), level["level"], level["buyer"], level.get("seller"), level["payer"],
        level["zone"], level["band"], service, rating_group, owner,
    )  # fmt: skip
    quote = memo.get(key)
    if quote is None:
        quote = memo[key] = level_quote(catalogue, level, service, rating_group, at, owner)
    return quote


def rerate_levels(
    catalogue: Catalogue,
    levels: list[dict[str, Any]],
    service: str,
    rating_group: int | None,
    at: datetime,
    quantity: int,
    owner: str,
    counters: dict[str, int],
    buyer: str | None = None,
    memo: dict[tuple[Any, ...], Quote] | None = None,
) -> list[LevelCharge]:
    """Price ``quantity`` at every recorded level (or only ``buyer``'s), updating
    ``counters`` with each priced level's deltas. ``memo`` keeps the quotes built (a bill
    run prices many records of one SIM with the same few quotes)."""
    kind = ServiceKind(service)
    out: list[LevelCharge] = []
    for level in levels:
        if buyer is not None and level["buyer"] != buyer:
            continue
        if memo is None:
            quote = level_quote(catalogue, level, kind, rating_group, at, owner)
        else:
            quote = _memo_quote(memo, catalogue, level, kind, rating_group, at, owner)
        view: Counters = counters
        priced = quote.price(quantity, view)
        for key, delta in quote.deltas(priced):
            counters[key] = counters.get(key, 0) + delta
        out.append(
            LevelCharge(
                quote.level,
                quote.buyer,
                quote.seller,
                str(quote.payer.kind),
                quote.plan_id,
                quote.zone,
                quote.currency,
                service,
                quantity,
                priced.amount,
                exact_amount(quote.rate, priced),
                quote.rate.rounding,
            )
        )
    return out
