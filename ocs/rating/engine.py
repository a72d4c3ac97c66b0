"""The rating engine: usage context + catalogue -> twin, payer, and one priced line per level.

Pure functions. `resolve` finds the SIM, the twin, and for every level the plan version,
zone, time band and tariff in force at the event time; `rate` also prices the context's
quantity. The online path (CCRs) and the offline path (bill runs, CDR import) both call these.

`resolve` memoises its result in `Catalogue.memo`, keyed by everything the result depends on
once the twin is chosen: the SIM, the twin, and per level the plan version, zone and band,
plus the service and rating group. The twin filters, the version, zone and band lookups run
on every call; a hit skips the tariff and allowance lookups and all allocations. A memo hit
returns the very same (immutable) `Resolution` object. `resolve_uncached` is the definition
without memo or time-zone cache; a property test checks that both always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import NamedTuple

from ocs.rating.catalogue import (
    Catalogue,
    CompiledSim,
    CompiledTwin,
    CompiledVersion,
    PlanHistory,
    UpperLevel,
)
from ocs.rating.context import UsageContext
from ocs.rating.errors import (
    NoPlanError,
    NoTariffError,
    NoTwinError,
    NoZoneError,
    SubscriptionInactive,
    TenantMismatch,
    UnknownSubscriber,
)
from ocs.rating.filters import Facts
from ocs.rating.models import ANY_BAND, Payer
from ocs.rating.quote import NO_COUNTERS, Counters, Quote
from ocs.rating.tariffs import Priced


@dataclass(frozen=True, slots=True)
class NoTwin:
    """The outcome when no twin of the SIM accepts the usage."""

    imsi: str
    twins_tried: tuple[str, ...]


class Resolution(NamedTuple):
    """Who pays for a usage and on which terms, one quote per level (level 0 first)."""

    imsi: str
    twin: str
    subscription: str
    account: str
    payer: Payer
    quotes: tuple[Quote, ...]

    @property
    def prepaid_levels(self) -> tuple[int, ...]:
        """Levels whose payer must be reserved in real time (prepaid pool or wallet)."""
        return tuple(q.level for q in self.quotes if q.prepaid)

    def counter_keys(self) -> tuple[str, ...]:
        """Every period counter the quotes read, so the caller can fetch them in one go."""
        keys: list[str] = []
        for q in self.quotes:
            keys.append(q.tier_counter)
            if q.allowance_counter is not None:
                keys.append(q.allowance_counter)
        return tuple(keys)


class RatedLine(NamedTuple):
    quote: Quote
    priced: Priced

    @property
    def amount(self) -> int:
        return self.priced.amount

    @property
    def deltas(self) -> tuple[tuple[str, int], ...]:
        return self.quote.deltas(self.priced)


class RatedUsage(NamedTuple):
    """A context priced at every level: one line per level, level 0 first."""

    resolution: Resolution
    lines: tuple[RatedLine, ...]

    @property
    def amounts(self) -> tuple[int, ...]:
        return tuple(line.priced.amount for line in self.lines)


def subscription_id(imsi: str, twin_id: str) -> str:
    """The subscription a twin stands for: one per (SIM, twin)."""
    return f"{imsi}/{twin_id}"


def find_sim(catalogue: Catalogue, ctx: UsageContext) -> CompiledSim:
    if ctx.tenant != catalogue.tenant.id:
        raise TenantMismatch(f"usage of tenant {ctx.tenant!r} against {catalogue.tenant.id!r}")
    sim = catalogue.sims_by_imsi.get(ctx.imsi)
    if sim is None and ctx.msisdn is not None:
        sim = catalogue.sims_by_msisdn.get(ctx.msisdn)
    if sim is None:
        raise UnknownSubscriber(f"no SIM with IMSI {ctx.imsi} / MSISDN {ctx.msisdn}")
    return sim


MEMO_LIMIT = 1 << 17
"""Entries of `Catalogue.memo`; it starts over when full (a new catalogue starts empty)."""


def facts_for(catalogue: Catalogue, sim: CompiledSim, ctx: UsageContext) -> Facts:
    """Derive what filters and bands read: visited network (home when unknown), its
    country, the APN in lower case, and weekday/minute in the SIM's local time."""
    mcc, mnc = ctx.mcc, ctx.mnc
    if mcc is None or mnc is None:
        plmn = catalogue.tenant.home_network
        mcc = plmn[:3]
    else:
        plmn = mcc + mnc
    at = ctx.event_time
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    weekday, minute = sim.clock.weekday_minute(at)
    apn = ctx.apn
    if apn is not None:
        apn = apn.lower()
    return Facts(ctx, plmn, mcc, catalogue.mcc_country.get(mcc), weekday, minute, apn, at)


def facts_by_definition(catalogue: Catalogue, sim: CompiledSim, ctx: UsageContext) -> Facts:
    """`facts_for` with a full time-zone conversion (no `LocalClock` cache)."""
    mcc, mnc = ctx.mcc, ctx.mnc
    if mcc is None or mnc is None:
        plmn = catalogue.tenant.home_network
        mcc = plmn[:3]
    else:
        plmn = mcc + mnc
    at = ctx.event_time
    local = at.astimezone(sim.tz)
    at = at.astimezone(UTC)
    apn = None if ctx.apn is None else ctx.apn.lower()
    country = catalogue.mcc_country.get(mcc)
    minute = local.hour * 60 + local.minute
    return Facts(ctx, plmn, mcc, country, local.weekday(), minute, apn, at)


def resolve_twin(sim: CompiledSim, facts: Facts) -> CompiledTwin | NoTwin:
    """The first twin by priority (lowest number first) whose filter matches, or NoTwin.
    Only the twins that can match the usage's APN are tried (`CompiledSim.by_apn`)."""
    for twin in sim.candidates(facts.apn):
        if twin.predicate(facts):
            return twin
    return NoTwin(sim.imsi, tuple(t.id for t in sim.twins))


def _chosen_twin(sim: CompiledSim, facts: Facts) -> CompiledTwin:
    twin = resolve_twin(sim, facts)
    if isinstance(twin, NoTwin):
        raise NoTwinError(f"no twin of SIM {sim.imsi} matches (tried {list(twin.twins_tried)})")
    if not twin.active:
        raise SubscriptionInactive(f"twin {twin.id!r} of SIM {sim.imsi} is not active")
    return twin


def _build_quote(
    level: int,
    buyer: str,
    seller: str | None,
    payer: Payer,
    owner: str,
    version: CompiledVersion,
    zone: str,
    band: str,
    ctx: UsageContext,
) -> Quote:
    """One level's terms once its plan version, zone and band are known."""
    plan_id = version.plan_id
    tariff = version.tariff_for(ctx.service, zone, ctx.rating_group)
    if tariff is None:
        raise NoTariffError(f"plan {plan_id!r} does not price {ctx.service} in zone {zone!r}")
    if tariff.account_scope:
        owner = buyer
    allowance = version.allowance_for(ctx.service, zone) if version.allowances else None
    rate = tariff.by_band.get(band) or tariff.rate_for(band)
    # positional: Quote(level, buyer, seller, payer, plan_id, plan_version, currency, zone,
    # band, service, rating_group, tier_counter, allowance_counter, allowance_units, rate)
    if allowance is None:
        return Quote(
            level, buyer, seller, payer, plan_id, version.effective_from, version.currency,
            zone, band, ctx.service, ctx.rating_group, owner + tariff.counter_suffix, None, 0,
            rate,
        )  # fmt: skip
    return Quote(
        level, buyer, seller, payer, plan_id, version.effective_from, version.currency,
        zone, band, ctx.service, ctx.rating_group, owner + tariff.counter_suffix,
        f"{owner}|allowance:{allowance.id}", allowance.units, rate,
    )  # fmt: skip


def _quote_by_definition(
    level: int,
    buyer: str,
    seller: str | None,
    plans: PlanHistory,
    payer: Payer,
    owner: str,
    facts: Facts,
) -> Quote:
    at = facts.at
    version = plans.version_by_definition(at)
    if version is None:
        raise NoPlanError(f"no plan (version) in force for {buyer!r} at {at.isoformat()}")
    zone = version.zones.zone_for(facts.plmn, facts.country)
    if zone is None:
        raise NoZoneError(f"network {facts.plmn} is in no zone of plan {version.plan_id!r}")
    bands = version.bands
    band = ANY_BAND if bands is None else bands.band_by_scan(facts.weekday, facts.minute)
    return _build_quote(level, buyer, seller, payer, owner, version, zone, band, facts.ctx)


def _resolution_by_definition(
    catalogue: Catalogue, sim: CompiledSim, twin: CompiledTwin, facts: Facts
) -> Resolution:
    subscription = subscription_id(sim.imsi, twin.id)
    quotes = [
        _quote_by_definition(
            0, sim.account, sim.seller, twin.plans, twin.payer, subscription, facts
        )
    ]
    for i, u in enumerate(catalogue.upper_levels.get(sim.account, ()), start=1):
        quotes.append(_quote_by_definition(i, u.buyer, u.seller, u.plans, u.payer, u.buyer, facts))
    return Resolution(sim.imsi, twin.id, subscription, sim.account, twin.payer, tuple(quotes))


def resolve_uncached(catalogue: Catalogue, ctx: UsageContext) -> Resolution:
    """`resolve` by its definition: no memo, a full time-zone conversion, plan versions by
    assignment then version, bands by scanning their windows. Slower; the reference that
    tests compare `resolve` with."""
    sim = find_sim(catalogue, ctx)
    facts = facts_by_definition(catalogue, sim, ctx)
    return _resolution_by_definition(catalogue, sim, _chosen_twin(sim, facts), facts)


def resolve(catalogue: Catalogue, ctx: UsageContext) -> Resolution:
    """Resolve twin, payer and per-level price terms. Raises a `RatingError` subclass."""
    sim = find_sim(catalogue, ctx)
    facts = facts_for(catalogue, sim, ctx)
    twin = None
    for candidate in sim.candidates(facts.apn):
        if candidate.predicate(facts):
            twin = candidate
            break
    if twin is None or not twin.active:
        twin = _chosen_twin(sim, facts)  # raises NoTwinError or SubscriptionInactive
    at, plmn, country = facts.at, facts.plmn, facts.country
    version = twin.plans.version_at(at)
    zone = None if version is None else version.zones.zone_for(plmn, country)
    if version is None or zone is None:  # NoPlanError / NoZoneError, at the right level
        return _resolution_by_definition(catalogue, sim, twin, facts)
    bands = version.bands
    band = ANY_BAND if bands is None else bands.band_at(facts.weekday, facts.minute)
    key: tuple[object, ...] = (
        id(twin), sim.imsi, id(version), zone, band, ctx.service, ctx.rating_group,
    )  # fmt: skip
    upper = sim.upper
    terms: list[tuple[CompiledVersion, str, str]] = []
    if upper:
        found_terms = _upper_terms(upper, facts)
        if found_terms is None:  # NoPlanError / NoZoneError at an upper level
            return _resolution_by_definition(catalogue, sim, twin, facts)
        terms = found_terms
        key = (*key, *(part for term in terms for part in (id(term[0]), term[1], term[2])))
    memo = catalogue.memo
    found = memo.get(key)
    if found is not None:
        return found
    subscription = subscription_id(sim.imsi, twin.id)
    first = _build_quote(
        0, sim.account, sim.seller, twin.payer, subscription, version, zone, band, ctx
    )
    quotes: tuple[Quote, ...] = (first,)
    if upper:
        quotes += tuple(
            _build_quote(i, u.buyer, u.seller, u.payer, u.buyer, v, z, b, ctx)
            for i, (u, (v, z, b)) in enumerate(zip(upper, terms, strict=True), start=1)
        )
    resolution = Resolution(sim.imsi, twin.id, subscription, sim.account, twin.payer, quotes)
    if len(memo) >= MEMO_LIMIT:
        memo.clear()
    memo[key] = resolution
    return resolution


def _upper_terms(
    upper: tuple[UpperLevel, ...], facts: Facts
) -> list[tuple[CompiledVersion, str, str]] | None:
    """(plan version, zone, band) of every upper level, or None when one has no plan
    version or no zone (the caller then raises the right error in level order)."""
    terms: list[tuple[CompiledVersion, str, str]] = []
    for level in upper:
        version = level.plans.version_at(facts.at)
        if version is None:
            return None
        zone = version.zones.zone_for(facts.plmn, facts.country)
        if zone is None:
            return None
        bands = version.bands
        band = ANY_BAND if bands is None else bands.band_at(facts.weekday, facts.minute)
        terms.append((version, zone, band))
    return terms


def rate(catalogue: Catalogue, ctx: UsageContext, counters: Counters = NO_COUNTERS) -> RatedUsage:
    """Resolve and price `ctx.quantity` at every level, given the period counters."""
    return _priced(resolve(catalogue, ctx), ctx.quantity, counters)


def rate_uncached(
    catalogue: Catalogue, ctx: UsageContext, counters: Counters = NO_COUNTERS
) -> RatedUsage:
    """`rate` on `resolve_uncached` (the reference for tests)."""
    return _priced(resolve_uncached(catalogue, ctx), ctx.quantity, counters)


def _priced(resolution: Resolution, quantity: int, counters: Counters) -> RatedUsage:
    quotes = resolution.quotes
    if len(quotes) == 1:
        quote = quotes[0]
        return RatedUsage(resolution, (RatedLine(quote, quote.price(quantity, counters)),))
    lines = tuple(RatedLine(q, q.price(quantity, counters)) for q in quotes)
    return RatedUsage(resolution, lines)
