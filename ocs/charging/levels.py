"""Multi-level (B2B2B) charging in real time: the levels above a usage's payer, reserved or
checked in the same ``charge.lua`` call as the payer itself (docs/charging.md, "Multi-level
reservations").

Level 0 is the SIM's payer; each level above (the reseller, its own reseller, ...) is
priced on its own plan (``Resolution.quotes``). A prepaid level (prepaid pool, wallet)
holds its share of every grant; a postpaid level (postpaid pool, external contract) is not
held, only checked against what it can still cover (its credit limit). Every payer of a
chain keeps its keys in the slot of the chain's root (``ocs.balance.keys``), so the call is
one atomic script on one Redis Cluster slot.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from ocs.balance.models import FREE, NOT_PRICED, LevelCharge, Rate
from ocs.charging.usage import payer_key
from ocs.rating.catalogue import Catalogue
from ocs.rating.engine import Resolution
from ocs.rating.models import Payer, PayerKind
from ocs.rating.multilevel import chain_root, levels_above
from ocs.rating.quote import Quote


class ChainSlotError(RuntimeError):
    """A usage's levels are not all in one reseller chain (a payer owned outside the
    chain of the SIM's account): they cannot be reserved in one call, so nothing is
    granted (answered 5012, never a free grant)."""


class Chain(NamedTuple):
    """Where a usage is charged: the root of its payer's chain (``""``: its own slot) and
    the upper levels, level 1 first."""

    root: str
    levels: tuple[LevelCharge, ...]


NO_CHAIN = Chain("", ())
PAYER_KINDS = frozenset(str(k) for k in PayerKind)


def reservation_rate(quote: Quote) -> Rate:
    """Money per unit that sizes reservations on the payer's money buckets. A wallet reserves
    at its highest tier's rate (never less than any unit can cost; the commit debits the
    exact price); a postpaid pool pays overage into its credit bucket at the rate of the
    first tier; prepaid pools and contracts hold units only."""
    kind = quote.payer.kind
    if kind in (PayerKind.PREPAID_POOL, PayerKind.EXTERNAL_CONTRACT):
        return NOT_PRICED
    rate = quote.rate
    numerator = max(rate.numerators) if kind is PayerKind.WALLET else rate.numerators[0]
    return FREE if numerator == 0 else Rate(numerator, rate.denominator)


def root_of(catalogue: Catalogue, payer: Payer) -> str:
    """The tag of ``payer``'s chain root, or ``""`` when it is its own."""
    root = chain_root(catalogue, payer)
    return "" if root == payer else payer_key(catalogue.tenant.id, root)


class _Static(NamedTuple):
    """What a usage's chain is, whatever its zone or quantity: the root tag and, per level
    above 0 that is charged, its number, its payer tag, whether it is held, whether it pays
    in money. A level whose payer already pays a lower level of the usage (the reseller's
    own pool as the end customer's twin payer) is charged once, at the lowest level."""

    root: str
    numbers: tuple[int, ...]
    tags: tuple[str, ...]
    held: tuple[bool, ...]
    wallet: tuple[bool, ...]


CHAINS_KEPT: Final = 10_000
_chains: dict[tuple[int, str, PayerKind, str], tuple[Catalogue, _Static]] = {}


def _static(catalogue: Catalogue, resolution: Resolution) -> _Static:
    """The chain of a (SIM account, level-0 payer) on one catalogue, computed once (the
    catalogue object is kept with it, so a new catalogue never reads an old entry)."""
    payer = resolution.payer
    key = (id(catalogue), resolution.account, payer.kind, payer.id)
    hit = _chains.get(key)
    if hit is not None and hit[0] is catalogue:
        return hit[1]
    tenant = catalogue.tenant.id
    root = chain_root(catalogue, payer)
    upper = resolution.quotes[1:]
    for i, q in enumerate(upper, start=1):
        if chain_root(catalogue, q.payer) != root:
            raise ChainSlotError(
                f"level {i} payer {q.payer.kind}:{q.payer.id} is not in the reseller chain of "
                f"{payer.kind}:{payer.id} (root {root.kind}:{root.id})"
            )
    seen = {payer_key(tenant, payer)}
    charged: list[tuple[int, str, Quote]] = []
    for i, q in enumerate(upper, start=1):
        tag = payer_key(tenant, q.payer)
        if tag not in seen:
            seen.add(tag)
            charged.append((i, tag, q))
    static = _Static(
        "" if root == payer else payer_key(tenant, root),
        tuple(i for i, _, _ in charged),
        tuple(tag for _, tag, _ in charged),
        tuple(q.prepaid for _, _, q in charged),
        tuple(q.payer.kind is PayerKind.WALLET for _, _, q in charged),
    )
    if len(_chains) >= CHAINS_KEPT:
        _chains.clear()
    _chains[key] = (catalogue, static)
    return static


def chain_of(
    catalogue: Catalogue, resolution: Resolution, amounts: tuple[int, ...] | None = None
) -> Chain:
    """The chain of one usage: every level above 0 with its reservation rate and, for a
    wallet, the exact price of the used units (``amounts``: every level's, level 0 first).
    Raises :class:`ChainSlotError` when a level is outside the payer's chain."""
    static = _static(catalogue, resolution)
    if not static.tags:
        return Chain(static.root, ()) if static.root else NO_CHAIN
    quotes = resolution.quotes
    return Chain(
        static.root,
        tuple(
            LevelCharge(
                tag,
                held,
                reservation_rate(quotes[i]),
                amounts[i] if wallet and amounts is not None else None,
                i,
            )
            for i, tag, held, wallet in zip(
                static.numbers, static.tags, static.held, static.wallet, strict=True
            )
        ),
    )


def release_chain(catalogue: Catalogue, payer: str) -> Chain:
    """The chain of a payer known by its tag alone (a release at CCR-T of a rating group
    the request does not report): every level above the account that owns it, to release
    the reservations its grants hold there."""
    _tenant, kind, pid = payer.split(":", 2)
    if kind not in PAYER_KINDS:  # a SIM's test allowance: no level above it
        return NO_CHAIN
    found = Payer(kind=PayerKind(kind), id=pid)
    above = levels_above(catalogue, found)
    if not above:
        return NO_CHAIN
    tenant = catalogue.tenant.id
    levels = tuple(
        LevelCharge(payer_key(tenant, u.payer), u.payer.kind.prepaid, NOT_PRICED) for u in above
    )
    return Chain(root_of(catalogue, found), levels)


def level_refunds(
    catalogue: Catalogue, resolution: Resolution, units: int, unit: str
) -> list[tuple[int, str, dict[str, object]]]:
    """The ``adjust.lua`` refund of every prepaid level above 0 for ``units`` of a refunded
    event (REFUND_ACCOUNT): its units to a prepaid pool, its own level's amount to a wallet;
    (level, payer tag, operation). A postpaid level is not refunded online: the bill run
    rates what the records say."""
    tenant = catalogue.tenant.id
    out: list[tuple[int, str, dict[str, object]]] = []
    for i, q in enumerate(resolution.quotes[1:], start=1):
        if not q.prepaid:
            continue
        money = q.payer.kind is PayerKind.WALLET
        amount = q.price(units).amount if money else units
        op = {"op": "refund", "unit": "money" if money else unit, "amount": amount}
        out.append((i, payer_key(tenant, q.payer), op))
    return out
