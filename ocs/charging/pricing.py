"""One price online and offline (docs/rating.md, "One price"): the money a usage costs a level
is what ``ocs.rating`` prices it at (rule 8: increments, minimum quantity, allowance,
graduated tiers from the period counters, rounding once, minimum charge), and nothing else.

The record of a usage carries that amount per level, and a level paid online in money (a
wallet) is debited exactly it: ``charge.lua`` gets the price (``ChargeRequest.price``), not a
rate. When the price reads period counters (tiers or an allowance) they are kept with the
wallet (``ocs:{P}:ctr``, per bill period of the buyer) and the script moves them in the same
step as the debit, after checking they are still where the price was computed from; when
another usage moved them first, nothing is written and the usage is priced again
(``MAX_REPRICES`` times at most). The bill run re-rates the same records with
``ocs.offline.rerate``: same quotes, same counters, same order, same amounts.

Every level above 0 goes into the same call (``ocs.charging.levels``): a prepaid level
holds the grant too, a wallet level is debited exactly its own amount.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Final, NamedTuple

from ocs.balance import BalanceStore, ChargeRequest, ChargeResult
from ocs.charging.levels import chain_of, reservation_rate
from ocs.rating.catalogue import Catalogue
from ocs.rating.engine import Resolution
from ocs.rating.models import PayerKind
from ocs.rating.periods import counter_period
from ocs.rating.quote import Quote

__all__ = [  # reservation_rate lives with the levels (ocs.charging.levels), used from here
    "CounterCache",
    "Prices",
    "StaleCounters",
    "charge_at_price",
    "counted",
    "paid_in_money",
    "prices",
    "reservation_rate",
]

MAX_REPRICES: Final = 16
COUNTER_CACHE: Final = 100_000


class StaleCounters(RuntimeError):
    """The counters of a price kept moving under it (never expected: a bug, answered 5012)."""


class Prices(NamedTuple):
    """The amount of every level for one usage, and what the level-0 payer is debited.
    ``price`` None: the payer is not debited in money by the price (pools, contracts)."""

    amounts: tuple[int, ...]
    price: int | None
    counters: tuple[tuple[str, int, int], ...]


def paid_in_money(quote: Quote) -> bool:
    """The level's payer is debited the price online: a wallet."""
    return quote.payer.kind is PayerKind.WALLET


class CounterCache:
    """The last known value of the wallet counters this process priced with (field ->
    units); a miss costs one ``stale`` round trip, never a wrong price. Usage on one
    counter is priced and committed one at a time in this process (``hold``): without it,
    40 concurrent sessions of one SIM re-priced each other out (each round trip let one
    commit through), so only another process can make a price stale."""

    __slots__ = ("_locks", "values")

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, counter: str) -> AsyncIterator[None]:
        """Commits on ``counter`` one at a time (the lock lives while someone holds or
        waits for it)."""
        entry = self._locks.get(counter)
        if entry is None:
            entry = self._locks[counter] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[counter]

    def update(self, values: dict[str, int]) -> None:
        if len(self.values) + len(values) > COUNTER_CACHE:
            self.values.clear()
        self.values.update(values)


def counted(catalogue: Catalogue, quote: Quote) -> bool:
    """The quote's price reads the period counters, or moves a counter some graduated rate
    reads (a flat night rate on the counter of a tiered day rate)."""
    if quote.counted:
        return True
    counter = quote.tier_counter
    return counter[counter.rfind("|") :] in catalogue.tiered_counters


def prices(
    catalogue: Catalogue,
    resolution: Resolution,
    used: int,
    at_ms: int,
    known: dict[str, int],
) -> Prices:
    """Every level's amount for ``used`` units committed at ``at_ms`` (the record's time)."""
    quotes = resolution.quotes
    first = quotes[0]
    money = paid_in_money(first)
    if used <= 0:
        return Prices((0,) * len(quotes), 0 if money else None, ())
    if not money or not counted(catalogue, first):
        amounts = tuple(q.price(used).amount for q in quotes)
        return Prices(amounts, amounts[0] if money else None, ())
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    period = counter_period(catalogue, first.buyer, at)
    keys = [first.tier_counter]
    if first.allowance_counter is not None:
        keys.append(first.allowance_counter)
    fields = {key: f"{period}|{key}" for key in keys}
    counters = {key: known.get(fields[key], 0) for key in keys}
    priced = first.price(used, counters)
    deltas = dict(first.deltas(priced))
    checks = tuple((fields[k], counters[k], deltas.get(k, 0)) for k in keys)
    amounts = (priced.amount, *(q.price(used).amount for q in quotes[1:]))
    return Prices(amounts, priced.amount, checks)


async def charge_at_price(
    store: BalanceStore,
    payer: str,
    request: ChargeRequest,
    catalogue: Catalogue,
    resolution: Resolution,
    cache: CounterCache,
    context: Callable[[tuple[int, ...]], str],
    *,
    result_ttl_ms: int | None = None,
) -> tuple[ChargeResult, Prices]:
    """One charge of ``request.used`` units at their price: the record context is
    ``context(amounts)``; a wallet is debited exactly the level-0 amount. The script's result
    is kept ``result_ttl_ms`` (default: the store's)."""
    first = resolution.quotes[0]
    args = (store, payer, request, catalogue, resolution, cache, context, result_ttl_ms)
    if request.used > 0 and paid_in_money(first) and counted(catalogue, first):
        async with cache.hold(first.tier_counter):
            return await _charge(*args)
    return await _charge(*args)


async def _charge(
    store: BalanceStore,
    payer: str,
    request: ChargeRequest,
    catalogue: Catalogue,
    resolution: Resolution,
    cache: CounterCache,
    context: Callable[[tuple[int, ...]], str],
    result_ttl_ms: int | None,
) -> tuple[ChargeResult, Prices]:
    for _ in range(MAX_REPRICES):
        p = prices(catalogue, resolution, request.used, request.now_ms, cache.values)
        root, levels = chain_of(catalogue, resolution, p.amounts)
        result = await store.charge(
            payer,
            request.priced(p.price, p.counters, context(p.amounts), root, levels),
            result_ttl_ms=result_ttl_ms,
        )
        if result.counters:
            cache.update(result.counters)
        if result.status != "stale":
            return result, p
    raise StaleCounters(f"the counters of {payer} moved {MAX_REPRICES} times under one price")
