"""Compile validated file models into a `Catalogue`, checking every cross reference.

Input items carry where they came from (file, path), so every problem is reported as
(file, path inside it, reason). All problems are collected; none stops the others.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from ocs.rating.bands import BandIndex
from ocs.rating.catalogue import (
    Catalogue,
    CompiledAllowance,
    CompiledPlan,
    CompiledSim,
    CompiledTariff,
    CompiledTwin,
    CompiledVersion,
    PlanHistory,
    TariffKey,
    TwinIndex,
    UpperLevel,
)
from ocs.rating.clock import LocalClock
from ocs.rating.context import SERVICE_UNIT
from ocs.rating.errors import Issue, Severity
from ocs.rating.filters import (
    Predicate,
    ShadowProbe,
    compile_filter,
    never_matches,
    probe_shadows,
    required_apns,
)
from ocs.rating.models import (
    ANY_BAND,
    ANY_ZONE,
    Account,
    Addon,
    BandRate,
    BandSet,
    Base,
    Contract,
    Country,
    FilterSpec,
    Payer,
    PayerKind,
    Plan,
    PlanAssignment,
    Pool,
    Region,
    Rounding,
    Sim,
    SimLimits,
    SimRange,
    Tariff,
    TaxProfile,
    Tenant,
    Twin,
    Wallet,
    ZoneSet,
)
from ocs.rating.tariffs import RateTable
from ocs.rating.zones import ZoneIndex

M = TypeVar("M", bound=Base)


@dataclass(frozen=True, slots=True)
class Where:
    file: str
    path: str

    def at(self, sub: str) -> Where:
        return Where(self.file, f"{self.path}.{sub}" if self.path else sub)


Sourced = tuple[Where, Any]


class _Compiler:
    def __init__(self, sections: dict[str, list[Sourced]]) -> None:
        self.sections = sections
        self.issues: list[Issue] = []
        self.rate_tables: dict[tuple[object, ...], RateTable] = {}
        self.filters: dict[tuple[object, ...], _AnalysedFilter] = {}
        self.twin_indexes: dict[tuple[str, ...], TwinIndex] = {}

    def rate_table(self, rate: BandRate, tariff: Tariff, rounding: Rounding) -> RateTable:
        """Compile a band's tiers, once per distinct (tiers, terms): catalogues repeat the
        same price lists over many plans and zones, and equal tables behave alike."""
        key = (
            tuple((t.from_, t.price) for t in rate.tiers),
            tariff.per,
            tariff.increment,
            tariff.minimum_quantity,
            tariff.minimum_charge,
            rounding,
        )
        table = self.rate_tables.get(key)
        if table is None:
            table = self.rate_tables[key] = RateTable.compile(
                rate,
                per=tariff.per,
                increment=tariff.increment,
                minimum_quantity=tariff.minimum_quantity,
                minimum_charge=tariff.minimum_charge,
                rounding=rounding,
            )
        return table

    def filter(
        self, spec: FilterSpec, regions: dict[str, frozenset[str]], mcc_country: dict[str, str]
    ) -> _AnalysedFilter:
        """Compile and analyse a twin filter once per distinct content: fleets repeat the
        same few filters over thousands of SIMs. Everything cached is a function of the
        filter's field values (its JSON form) and of this catalogue's regions/countries."""
        key = _content(spec)
        found = self.filters.get(key)
        if found is None:
            found = self.filters[key] = _AnalysedFilter(
                predicate=compile_filter(spec, regions),
                never=never_matches(spec, regions, mcc_country),
                required_apns=required_apns(spec),
                shadow=ShadowProbe.of(spec),
            )
        return found

    def error(self, where: Where, reason: str) -> None:
        self.issues.append(Issue(where.file, where.path, reason))

    def warn(self, where: Where, reason: str) -> None:
        self.issues.append(Issue(where.file, where.path, reason, Severity.WARNING))

    def items(self, section: str, kind: type[M]) -> Iterator[tuple[Where, M]]:
        for where, item in self.sections.get(section, []):
            assert isinstance(item, kind)
            yield where, item

    def by_id(self, section: str, kind: type[M]) -> dict[str, tuple[Where, M]]:
        found: dict[str, tuple[Where, M]] = {}
        for where, item in self.items(section, kind):
            key = str(getattr(item, "id"))  # noqa: B009 - every keyed model has an id
            if key in found:
                first = found[key][0]
                self.error(where.at("id"), f"duplicate id {key!r} (first in {first.file})")
                continue
            found[key] = (where, item)
        return found

    # --- sections ------------------------------------------------------------------

    def tenant(self) -> Tenant | None:
        tenants = list(self.items("tenant", Tenant))
        if not tenants:
            self.error(Where("(catalogue)", "tenant"), "no file defines the tenant")
            return None
        for where, _ in tenants[1:]:
            self.error(where, f"tenant already defined in {tenants[0][0].file}")
        return tenants[0][1]

    def countries(self) -> dict[str, str]:
        mcc_country: dict[str, str] = {}
        for where, country in self.items("countries", Country):
            for i, mcc in enumerate(country.mcc):
                other = mcc_country.setdefault(mcc, country.code)
                if other != country.code:
                    self.error(where.at(f"mcc[{i}]"), f"MCC {mcc} already belongs to {other}")
        return mcc_country

    def plan(
        self,
        where: Where,
        plan: Plan,
        zone_sets: dict[str, ZoneIndex],
        band_sets: dict[str, BandIndex],
        taxes: set[str],
    ) -> CompiledPlan:
        versions: list[CompiledVersion] = []
        for vi, version in enumerate(plan.versions):
            vw = where.at(f"versions[{vi}]")
            zones = zone_sets.get(version.zone_set)
            if zones is None:
                self.error(vw.at("zone_set"), f"unknown zone set {version.zone_set!r}")
                zones = ZoneIndex(version.zone_set, {}, {}, None, frozenset())
            bands: BandIndex | None = None
            if version.time_bands is not None:
                bands = band_sets.get(version.time_bands)
                if bands is None:
                    self.error(vw.at("time_bands"), f"unknown band set {version.time_bands!r}")
            if version.tax_profile is not None and version.tax_profile not in taxes:
                self.error(vw.at("tax_profile"), f"unknown tax profile {version.tax_profile!r}")
            band_ids = bands.band_ids if bands is not None else frozenset()
            rate_ids = band_ids | {ANY_BAND}
            tariffs: dict[TariffKey, CompiledTariff] = {}
            for ti, tariff in enumerate(version.tariffs):
                rates = tariff.rates
                # the path is built only for a problem: this loop runs for every tariff
                if tariff.zone != ANY_ZONE and tariff.zone not in zones.zone_ids:
                    where_zone = vw.at(f"tariffs[{ti}].zone")
                    self.error(where_zone, f"zone {tariff.zone!r} is not in {zones.id!r}")
                unknown = rates.keys() - rate_ids
                for band in sorted(unknown):
                    where_band = vw.at(f"tariffs[{ti}].rates.{band}")
                    self.error(where_band, f"unknown time band {band!r}")
                if ANY_BAND not in rates:
                    missing = (band_ids or {ANY_BAND}) - rates.keys()
                    if missing:
                        self.error(
                            vw.at(f"tariffs[{ti}].rates"),
                            f"no rate for band(s) {sorted(missing)} and no 'any' rate",
                        )
                tables = {
                    band: self.rate_table(rate, tariff, version.rounding)
                    for band, rate in tariff.rates.items()
                }
                key = (tariff.service, tariff.zone, tariff.rating_group)
                if key in tariffs:
                    self.error(
                        vw.at(f"tariffs[{ti}]"),
                        f"a tariff for {key[0]} in zone {key[1]!r} already exists",
                    )
                tariffs[key] = CompiledTariff(
                    service=tariff.service,
                    zone=tariff.zone,
                    rating_group=tariff.rating_group,
                    counter=tariff.counter or str(tariff.service),
                    account_scope=tariff.counter_scope == "account",
                    counter_suffix="|" + (tariff.counter or str(tariff.service)),
                    by_band={b: t for b, t in tables.items() if b != ANY_BAND},
                    fallback=tables.get(ANY_BAND),
                )
            allowances: dict[Any, list[CompiledAllowance]] = defaultdict(list)
            seen: set[str] = set()
            for ai, allowance in enumerate(version.allowances):
                aw = vw.at(f"allowances[{ai}]")
                if allowance.id in seen:
                    self.error(aw.at("id"), f"duplicate allowance id {allowance.id!r}")
                seen.add(allowance.id)
                for zi, zone in enumerate(allowance.zones or ()):
                    if zone not in zones.zone_ids:
                        self.error(aw.at(f"zones[{zi}]"), f"zone {zone!r} is not in {zones.id!r}")
                zone_set = None if allowance.zones is None else frozenset(allowance.zones)
                allowances[allowance.service].append(
                    CompiledAllowance(allowance.id, zone_set, allowance.units)
                )
            versions.append(
                CompiledVersion(
                    plan_id=plan.id,
                    currency=plan.currency,
                    effective_from=version.effective_from.astimezone(UTC),
                    spec=version,
                    zones=zones,
                    bands=bands,
                    tariffs=tariffs,
                    allowances={k: tuple(v) for k, v in allowances.items()},
                    by_rating_group=any(key[2] is not None for key in tariffs),
                )
            )
        return CompiledPlan(
            plan.id,
            plan.currency,
            tuple(v.effective_from for v in versions),
            tuple(versions),
            plan.limits,
            plan.test_allowance,
            plan.name,
        )

    def history(
        self, where: Where, assignments: list[PlanAssignment], plans: dict[str, CompiledPlan]
    ) -> PlanHistory:
        for i, assignment in enumerate(assignments):
            if assignment.plan not in plans:
                self.error(where.at(f"plans[{i}].plan"), f"unknown plan {assignment.plan!r}")
        return PlanHistory.of(assignments, plans)

    def payer(
        self,
        where: Where,
        payer: Payer,
        assignments: list[PlanAssignment],
        plans: dict[str, CompiledPlan],
        funds: _Funds,
    ) -> None:
        kind = payer.kind
        if kind in (PayerKind.PREPAID_POOL, PayerKind.POSTPAID_POOL):
            pool = funds.pools.get(payer.id)
            if pool is None:
                self.error(where.at("id"), f"unknown pool {payer.id!r}")
            elif (pool.payment == "prepaid") != (kind is PayerKind.PREPAID_POOL):
                self.error(where.at("kind"), f"pool {pool.id!r} is {pool.payment}, not {kind}")
        elif kind is PayerKind.WALLET:
            wallet = funds.wallets.get(payer.id)
            if wallet is None:
                self.error(where.at("id"), f"unknown wallet {payer.id!r}")
                return
            for assignment in assignments:
                plan = plans.get(assignment.plan)
                if plan is not None and plan.currency != wallet.currency:
                    self.error(
                        where.at("id"),
                        f"wallet {wallet.id!r} holds {wallet.currency} but plan "
                        f"{plan.id!r} is priced in {plan.currency}",
                    )
        elif payer.id not in funds.contracts:
            self.error(where.at("id"), f"unknown contract {payer.id!r}")

    def twin_index(
        self,
        where: Where,
        twins: list[Twin],
        plans: dict[str, CompiledPlan],
        funds: _Funds,
        regions: dict[str, frozenset[str]],
        mcc_country: dict[str, str],
    ) -> TwinIndex:
        """The compiled twins of a SIM, shared by every SIM whose twins are equal (the
        usual case: thousands of SIMs of one customer on the same plan and payer), so a
        catalogue holds one set of twin objects per distinct twin list, not one per SIM.
        Twins whose compile reported anything are compiled again for each SIM (every SIM
        gets its issues)."""
        key = tuple(t.model_dump_json() for t in twins)
        found = self.twin_indexes.get(key)
        if found is not None:
            return found
        before = len(self.issues)
        index = TwinIndex.build(*self.twins(where, twins, plans, funds, regions, mcc_country))
        if len(self.issues) == before:
            self.twin_indexes[key] = index
        return index

    def twins(
        self,
        where: Where,
        twins: list[Twin],
        plans: dict[str, CompiledPlan],
        funds: _Funds,
        regions: dict[str, frozenset[str]],
        mcc_country: dict[str, str],
    ) -> tuple[tuple[CompiledTwin, ...], list[frozenset[str] | None]]:
        """The twins in priority order, with the APNs each one's filter requires."""
        compiled: list[tuple[CompiledTwin, _AnalysedFilter]] = []
        ids: set[str] = set()
        priorities: dict[int, str] = {}
        for i, twin in enumerate(twins):
            tw = where.at(f"twins[{i}]")
            if twin.id in ids:
                self.error(tw.at("id"), f"duplicate twin id {twin.id!r}")
            ids.add(twin.id)
            if twin.priority in priorities:
                self.error(
                    tw.at("priority"),
                    f"priority {twin.priority} is also used by twin {priorities[twin.priority]!r};"
                    " overlapping twins need distinct priorities",
                )
            priorities.setdefault(twin.priority, twin.id)
            for region in twin.filter.region or ():
                if region not in regions:
                    self.error(tw.at("filter.region"), f"unknown region {region!r}")
            history = self.history(tw, twin.plans, plans)
            self.payer(tw.at("payer"), twin.payer, twin.plans, plans, funds)
            analysed = self.filter(twin.filter, regions, mcc_country)
            if analysed.never is not None:
                self.warn(tw.at("filter"), f"twin {twin.id!r} can never match: {analysed.never}")
            compiled_twin = CompiledTwin(
                id=twin.id,
                priority=twin.priority,
                predicate=analysed.predicate,
                payer=twin.payer,
                plans=history,
                active=twin.status == "active",
                spec=twin,
            )
            compiled.append((compiled_twin, analysed))
        compiled.sort(key=lambda pair: pair[0].priority)
        ordered = [t for t, _ in compiled]
        probes = [a.probe(t.spec.filter) for t, a in compiled]
        for later_index, later in enumerate(ordered):
            for earlier_index, earlier in enumerate(ordered[:later_index]):
                if probe_shadows(probes[earlier_index], probes[later_index]):
                    index = twins.index(later.spec)
                    self.warn(
                        where.at(f"twins[{index}].filter"),
                        f"twin {later.id!r} can never match: twin {earlier.id!r} "
                        f"(priority {earlier.priority}) takes every usage it would match",
                    )
                    break
        return tuple(ordered), [a.required_apns for _, a in compiled]

    def accounts(
        self,
        accounts: dict[str, tuple[Where, Account]],
        plans: dict[str, CompiledPlan],
        funds: _Funds,
    ) -> dict[str, tuple[UpperLevel, ...]]:
        for account_id, (where, account) in accounts.items():
            if account.parent is not None and account.parent not in accounts:
                self.error(where.at("parent"), f"unknown parent account {account.parent!r}")
            self.history(where, account.plans, plans)
            if account.plans and account.payer is None:
                self.error(where.at("payer"), f"account {account_id!r} has plans but no payer")
            if account.payer is not None:
                self.payer(where.at("payer"), account.payer, account.plans, plans, funds)
        upper: dict[str, tuple[UpperLevel, ...]] = {}
        for account_id, (where, account) in accounts.items():
            levels: list[UpperLevel] = []
            seen = {account_id}
            parent = account.parent
            while parent is not None and parent in accounts:
                if parent in seen:
                    self.error(where.at("parent"), f"account hierarchy loops at {parent!r}")
                    break
                seen.add(parent)
                above = accounts[parent][1]
                if above.plans and above.payer is not None:
                    levels.append(
                        UpperLevel(
                            above.id, above.parent, PlanHistory.of(above.plans, plans), above.payer
                        )
                    )
                parent = above.parent
            upper[account_id] = tuple(levels)
        return upper


def _content(spec: FilterSpec) -> tuple[object, ...]:
    """A hashable value that is equal for two filters exactly when their fields are: the
    (name, value) of every field that is set, lists as tuples, nested filters recursively."""
    out: list[object] = []
    for name, value in spec.__dict__.items():
        if value is None:
            continue
        frozen: object
        if name in _NESTED:
            frozen = tuple(_content(child) for child in value)
        elif name == "not_":
            frozen = _content(value)
        elif name == "time":
            frozen = tuple((tuple(w.days), w.start, w.end) for w in value)
        else:  # str, int, enum, IP network or SliceSpec (frozen): all hashable
            frozen = tuple(value)
        out.append((name, frozen))
    return tuple(out)


_NESTED = frozenset({"all_", "any_"})


@dataclass(frozen=True, slots=True)
class _AnalysedFilter:
    predicate: Predicate
    never: str | None  # why it can never match
    required_apns: frozenset[str] | None
    shadow: ShadowProbe

    def probe(self, spec: FilterSpec) -> ShadowProbe:
        """The shadowing probe of `spec` (equal in content to the cached one's)."""
        shadow = self.shadow
        return ShadowProbe(spec, shadow.catch_all, shadow.simple, shadow.fields)


@dataclass(frozen=True, slots=True)
class _Funds:
    pools: dict[str, Pool]
    wallets: dict[str, Wallet]
    contracts: dict[str, Contract]


def twins_state(twins: Iterable[Twin]) -> str:
    """The state of a SIM that names none (catalogues of before lifecycle states): active
    when a twin is, else suspended when one is, else terminated."""
    present = {t.status for t in twins}
    return next((s for s in ("active", "suspended") if s in present), "terminated")


def _expand(entry: SimRange) -> Iterator[tuple[int, str, str | None]]:
    """(offset, imsi, msisdn) for every SIM of a range, keeping the digit widths."""
    imsi0, width = int(entry.imsi_first), len(entry.imsi_first)
    msisdn0 = None if entry.msisdn_first is None else int(entry.msisdn_first)
    mwidth = 0 if entry.msisdn_first is None else len(entry.msisdn_first)
    for offset in range(entry.count):
        msisdn = None if msisdn0 is None else str(msisdn0 + offset).zfill(mwidth)
        yield offset, str(imsi0 + offset).zfill(width), msisdn


def compile_catalogue(sections: dict[str, list[Sourced]]) -> tuple[Catalogue | None, list[Issue]]:
    """Build a catalogue; return it with all issues, or None when any issue is an error."""
    c = _Compiler(sections)
    tenant = c.tenant()
    mcc_country = c.countries()
    regions = {r.id: frozenset(r.countries) for _, r in c.by_id("regions", Region).values()}
    zone_sets: dict[str, ZoneIndex] = {}
    for key, (where, zone_set) in c.by_id("zone_sets", ZoneSet).items():
        zone_sets[key], problems = ZoneIndex.build(zone_set)
        for path, reason in problems:
            c.error(where.at(path), reason)
    band_sets = {k: BandIndex.build(b) for k, (_, b) in c.by_id("time_bands", BandSet).items()}
    taxes = {k: t for k, (_, t) in c.by_id("tax_profiles", TaxProfile).items()}
    plans = {
        key: c.plan(where, plan, zone_sets, band_sets, set(taxes))
        for key, (where, plan) in c.by_id("plans", Plan).items()
    }
    addons = {k: a for k, (_, a) in c.by_id("addons", Addon).items()}
    accounts = c.by_id("accounts", Account)
    funds = _Funds(
        pools={k: p for k, (_, p) in c.by_id("pools", Pool).items()},
        wallets={k: w for k, (_, w) in c.by_id("wallets", Wallet).items()},
        contracts={k: x for k, (_, x) in c.by_id("contracts", Contract).items()},
    )
    owned: list[tuple[Where, Pool | Wallet | Contract]] = [
        *c.items("pools", Pool),
        *c.items("wallets", Wallet),
        *c.items("contracts", Contract),
    ]
    for where, item in owned:
        if item.account not in accounts:
            c.error(where.at("account"), f"unknown account {item.account!r}")
        if isinstance(item, Pool):
            _check_lifecycle(c, where, item, addons, funds.wallets)
    upper = c.accounts(accounts, plans, funds)

    default_tz = tenant.time_zone if tenant is not None else "UTC"
    by_imsi: dict[str, CompiledSim] = {}
    by_msisdn: dict[str, CompiledSim] = {}
    iccids: dict[str, str] = {}
    clocks: dict[str, LocalClock] = {}

    def add(where: Where, sim: CompiledSim) -> None:
        if by_imsi.setdefault(sim.imsi, sim) is not sim:
            c.error(where, f"IMSI {sim.imsi} is defined twice")
        if sim.msisdn is not None and by_msisdn.setdefault(sim.msisdn, sim) is not sim:
            c.error(where, f"MSISDN {sim.msisdn} is defined twice")

    sim_items: list[tuple[Where, Sim | SimRange]] = [
        *c.items("sims", Sim),
        *c.items("sim_ranges", SimRange),
    ]
    for where, entry in sim_items:
        if entry.account not in accounts:
            c.error(where.at("account"), f"unknown account {entry.account!r}")
        index = c.twin_index(where, entry.twins, plans, funds, regions, mcc_country)
        tz_name = entry.time_zone or default_tz
        clock = clocks.get(tz_name)
        if clock is None:
            clock = clocks[tz_name] = LocalClock(ZoneInfo(tz_name))
        parent = accounts[entry.account][1].parent if entry.account in accounts else None
        shared = (
            entry.account,
            parent,
            clock.tz,
            index.twins,
            index.by_apn,
            index.apn_free,
            clock,
            upper.get(entry.account, ()),
        )
        state = entry.state or twins_state(entry.twins)
        if isinstance(entry, Sim):
            add(where, CompiledSim(entry.imsi, entry.msisdn, *shared, state))
            if entry.iccid is not None:
                iccids[entry.imsi] = str(entry.iccid)
            continue
        own = entry.states
        if own:
            first, last = int(entry.imsi_first), int(entry.imsi_first) + entry.count - 1
            for imsi in own:
                if not first <= int(imsi) <= last or len(imsi) != len(entry.imsi_first):
                    c.error(where.at(f"states.{imsi}"), f"IMSI {imsi} is not in the range")
        for offset, imsi, msisdn in _expand(entry):
            member = own.get(imsi, state) if own else state
            add(where.at(f"[{offset}]"), CompiledSim(imsi, msisdn, *shared, member))

    sim_limits = _sim_limits(c, by_imsi)
    if tenant is not None and tenant.home_network[:3] not in mcc_country:
        c.warn(Where("(catalogue)", "tenant.home_network"), "home MCC has no country entry")
    errors = [i for i in c.issues if i.severity is Severity.ERROR]
    if errors or tenant is None:
        return None, c.issues
    warnings = tuple(i for i in c.issues if i.severity is Severity.WARNING)
    catalogue = Catalogue(
        tenant=tenant,
        mcc_country=mcc_country,
        regions=regions,
        zone_sets=zone_sets,
        band_sets=band_sets,
        plans=plans,
        sims_by_imsi=by_imsi,
        sims_by_msisdn=by_msisdn,
        accounts={k: a for k, (_, a) in accounts.items()},
        upper_levels=upper,
        pools=funds.pools,
        wallets=funds.wallets,
        contracts=funds.contracts,
        addons=addons,
        tax_profiles=taxes,
        warnings=warnings,
        tiered_counters=tiered_counters(plans.values()),
        sim_limits=sim_limits,
        iccid_by_imsi=iccids,
    )
    return catalogue, c.issues


def _sim_limits(c: _Compiler, by_imsi: Mapping[str, CompiledSim]) -> dict[str, SimLimits]:
    """``sim_limits:`` by IMSI: each names a SIM of the catalogue (one of a range too) and
    its twins. (A SIM-wide cap is counted with the payer of the twin a usage goes to: where
    one service of a SIM goes to twins on several payers, each counts its own share;
    docs/limits.md.)"""
    out: dict[str, SimLimits] = {}
    for where, limits in c.items("sim_limits", SimLimits):
        sim = by_imsi.get(limits.imsi)
        if sim is None:
            c.error(where.at("imsi"), f"unknown IMSI {limits.imsi}")
            continue
        if limits.imsi in out:
            c.error(where.at("imsi"), f"limits of IMSI {limits.imsi} are given twice")
            continue
        twins = {t.id for t in sim.twins}
        for twin in limits.twins:
            if twin not in twins:
                c.error(where.at(f"twins.{twin}"), f"SIM {sim.imsi} has no twin {twin!r}")
        out[limits.imsi] = limits
    return out


def tiered_counters(plans: Iterable[CompiledPlan]) -> frozenset[str]:
    """The counter suffixes (``"|<counter>"``) some rate with graduated tiers reads: usage on
    such a counter moves a later usage's tier even where its own rate is flat."""
    out: set[str] = set()
    for plan in plans:
        for version in plan.versions:
            for tariff in version.tariffs.values():
                rates = [*tariff.by_band.values()]
                if tariff.fallback is not None:
                    rates.append(tariff.fallback)
                if any(len(r.starts) > 1 for r in rates):
                    out.add(tariff.counter_suffix)
    return frozenset(out)


def _check_lifecycle(
    c: _Compiler, where: Where, pool: Pool, addons: dict[str, Addon], wallets: dict[str, Wallet]
) -> None:
    """A pool's auto top-off names an add-on of its unit; a renewal charged to a wallet
    names a wallet."""
    rule = pool.auto_top_off
    if rule is not None:
        addon = addons.get(rule.addon)
        if addon is None:
            c.error(where.at("auto_top_off.addon"), f"unknown add-on {rule.addon!r}")
        elif SERVICE_UNIT[addon.service] != pool.unit:
            c.error(
                where.at("auto_top_off.addon"),
                f"add-on {addon.id!r} is {addon.service}, pool {pool.id!r} holds {pool.unit}",
            )
    renewal = pool.renewal
    if renewal is not None and renewal.wallet is not None and renewal.wallet not in wallets:
        c.error(where.at("renewal.wallet"), f"unknown wallet {renewal.wallet!r}")
