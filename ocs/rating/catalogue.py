"""The compiled catalogue: immutable indexes built once per load, read on every rating.

Everything here is looked up by key or by bisect; nothing scans plans, zones or SIMs.
`ocs.rating.compiler` builds a `Catalogue` from validated file models.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from ocs.rating.bands import BandIndex
from ocs.rating.clock import LocalClock
from ocs.rating.context import ServiceKind
from ocs.rating.errors import Issue
from ocs.rating.filters import Predicate, required_apns
from ocs.rating.models import (
    ANY_ZONE,
    Account,
    Addon,
    Contract,
    Limits,
    Payer,
    PlanAssignment,
    PlanVersion,
    Pool,
    SimLimits,
    TaxProfile,
    Tenant,
    TestAllowance,
    Twin,
    Wallet,
)
from ocs.rating.tariffs import RateTable
from ocs.rating.zones import ZoneIndex

if TYPE_CHECKING:
    from ocs.rating.engine import Resolution


@dataclass(frozen=True, slots=True)
class PlanHistory:
    """Which plan is assigned from when: the assignment in force at t is the last with
    `from` <= t (a change applies from its `from` instant exactly). `plans` holds the
    compiled plan of each assignment (None only while compiling a broken catalogue).

    `cuts`/`versions` merge the assignments with the versions of each assigned plan into one
    timeline, so the version in force is one bisect: `versions[i]` is in force from `cuts[i]`
    (an assignment start or a version start inside an assignment) to the next cut."""

    starts: tuple[datetime, ...]
    plan_ids: tuple[str, ...]
    plans: tuple[CompiledPlan | None, ...]
    cuts: tuple[datetime, ...]
    versions: tuple[CompiledVersion | None, ...]

    @classmethod
    def of(
        cls, assignments: list[PlanAssignment], compiled: Mapping[str, CompiledPlan]
    ) -> PlanHistory:
        starts = tuple(a.from_.astimezone(UTC) for a in assignments)
        plans = tuple(compiled.get(a.plan) for a in assignments)
        cuts: list[datetime] = []
        versions: list[CompiledVersion | None] = []
        for i, (start, plan) in enumerate(zip(starts, plans, strict=True)):
            cuts.append(start)
            versions.append(None if plan is None else plan.version_at(start))
            if plan is None:
                continue
            end = starts[i + 1] if i + 1 < len(starts) else None
            for version_start in plan.starts:
                if start < version_start and (end is None or version_start < end):
                    cuts.append(version_start)
                    versions.append(plan.version_at(version_start))
        plan_ids = tuple(a.plan for a in assignments)
        return cls(starts, plan_ids, plans, tuple(cuts), tuple(versions))

    def plan_at(self, at: datetime) -> str | None:
        """`at` should be in UTC (comparisons across tzinfo objects are slow)."""
        index = bisect_right(self.starts, at) - 1
        return self.plan_ids[index] if index >= 0 else None

    def version_at(self, at: datetime) -> CompiledVersion | None:
        """The plan version in force at `at` (UTC) under the assignment in force then."""
        index = bisect_right(self.cuts, at) - 1
        return self.versions[index] if index >= 0 else None

    def version_by_definition(self, at: datetime) -> CompiledVersion | None:
        """`version_at` by its definition: the assignment in force at `at`, then that plan's
        version in force (the reference that tests compare the merged timeline with)."""
        index = bisect_right(self.starts, at) - 1
        if index < 0:
            return None
        plan = self.plans[index]
        return None if plan is None else plan.version_at(at)


@dataclass(frozen=True, slots=True)
class CompiledTariff:
    service: ServiceKind
    zone: str
    rating_group: int | None
    counter: str
    account_scope: bool
    counter_suffix: str  # "|<counter>", appended to the counter owner
    by_band: Mapping[str, RateTable]
    fallback: RateTable | None

    def rate_for(self, band: str) -> RateTable:
        rate = self.by_band.get(band, self.fallback)
        assert rate is not None, "the compiler checks that every band is priced"
        return rate


@dataclass(frozen=True, slots=True)
class CompiledAllowance:
    id: str
    zones: frozenset[str] | None
    units: int


TariffKey = tuple[ServiceKind, str, int | None]


@dataclass(frozen=True, slots=True)
class CompiledVersion:
    plan_id: str
    currency: str
    effective_from: datetime
    spec: PlanVersion
    zones: ZoneIndex
    bands: BandIndex | None
    tariffs: Mapping[TariffKey, CompiledTariff]
    allowances: Mapping[ServiceKind, tuple[CompiledAllowance, ...]]
    by_rating_group: bool  # some tariff is specific to a rating group

    def tariff_for(
        self, service: ServiceKind, zone: str, rating_group: int | None
    ) -> CompiledTariff | None:
        """Most specific first: (zone, rating group), ("*", rating group), (zone), ("*")."""
        get = self.tariffs.get
        if rating_group is not None and self.by_rating_group:
            found = get((service, zone, rating_group)) or get((service, ANY_ZONE, rating_group))
            if found is not None:
                return found
        return get((service, zone, None)) or get((service, ANY_ZONE, None))

    def allowance_for(self, service: ServiceKind, zone: str) -> CompiledAllowance | None:
        for allowance in self.allowances.get(service, ()):
            if allowance.zones is None or zone in allowance.zones:
                return allowance
        return None


@dataclass(frozen=True, slots=True)
class CompiledPlan:
    id: str
    currency: str
    starts: tuple[datetime, ...]
    versions: tuple[CompiledVersion, ...]
    limits: Limits | None = None  # the plan's default per-SIM caps (docs/limits.md)
    test_allowance: TestAllowance | None = None
    name: str = ""  # the plan's name for people (invoices); "" when the catalogue gives none

    def version_at(self, at: datetime) -> CompiledVersion | None:
        index = bisect_right(self.starts, at) - 1
        return self.versions[index] if index >= 0 else None


@dataclass(frozen=True, slots=True)
class CompiledTwin:
    id: str
    priority: int
    predicate: Predicate
    payer: Payer
    plans: PlanHistory
    active: bool
    spec: Twin


@dataclass(frozen=True, slots=True)
class CompiledSim:
    imsi: str
    msisdn: str | None
    account: str
    seller: str | None  # the account's parent; None: the tenant
    tz: ZoneInfo
    twins: tuple[CompiledTwin, ...]  # sorted by priority, lowest first
    by_apn: Mapping[str, tuple[CompiledTwin, ...]]
    """For each APN some twin requires: the twins that can match it, in priority order."""
    apn_free: tuple[CompiledTwin, ...]
    """The twins whose filter does not require an APN (the candidates for any other APN)."""
    clock: LocalClock
    """Local time in `tz` (shared by every SIM of the catalogue in that zone)."""
    upper: tuple[UpperLevel, ...]
    """Levels 1.. of every usage of this SIM (`Catalogue.upper_levels` of its account)."""
    state: str = "active"
    """The SIM's lifecycle state (`models.SIM_STATES`; docs/sim-states.md)."""

    def candidates(self, apn: str | None) -> tuple[CompiledTwin, ...]:
        if apn is None:
            return self.apn_free
        return self.by_apn.get(apn, self.apn_free)


@dataclass(frozen=True, slots=True)
class TwinIndex:
    twins: tuple[CompiledTwin, ...]
    by_apn: Mapping[str, tuple[CompiledTwin, ...]]
    apn_free: tuple[CompiledTwin, ...]

    @classmethod
    def build(
        cls,
        ordered: tuple[CompiledTwin, ...],
        required_by_twin: Sequence[frozenset[str] | None] | None = None,
    ) -> TwinIndex:
        """Index twins (already in priority order) by the APNs their filters require
        (`required_by_twin[i]`: `required_apns` of twin i's filter; computed when not given)."""
        if required_by_twin is None:
            required_by_twin = [required_apns(t.spec.filter) for t in ordered]
        required = list(zip(ordered, required_by_twin, strict=True))
        apns = sorted({a for _, r in required if r is not None for a in r})
        by_apn = {a: tuple(t for t, r in required if r is None or a in r) for a in apns}
        return cls(ordered, by_apn, tuple(t for t, r in required if r is None))


@dataclass(frozen=True, slots=True)
class UpperLevel:
    """A level above the SIM's account: `seller` charges `buyer` on `plans`, `payer` pays."""

    buyer: str
    seller: str | None
    plans: PlanHistory
    payer: Payer


@dataclass(frozen=True, slots=True)
class Catalogue:
    """One tenant's compiled catalogue. Treat every mapping as read-only."""

    tenant: Tenant
    mcc_country: Mapping[str, str]
    regions: Mapping[str, frozenset[str]]
    zone_sets: Mapping[str, ZoneIndex]
    band_sets: Mapping[str, BandIndex]
    plans: Mapping[str, CompiledPlan]
    sims_by_imsi: Mapping[str, CompiledSim]
    sims_by_msisdn: Mapping[str, CompiledSim]
    accounts: Mapping[str, Account]
    upper_levels: Mapping[str, tuple[UpperLevel, ...]]
    pools: Mapping[str, Pool]
    wallets: Mapping[str, Wallet]
    contracts: Mapping[str, Contract]
    addons: Mapping[str, Addon]
    tax_profiles: Mapping[str, TaxProfile]
    warnings: tuple[Issue, ...] = field(default=())
    tiered_counters: frozenset[str] = frozenset()
    """Counter suffixes (``"|<counter>"``) that some graduated rate reads
    (``compiler.tiered_counters``)."""
    sim_limits: Mapping[str, SimLimits] = field(default_factory=dict)
    """IMSI -> the SIM's own caps (``sim_limits:``), in place of its plans' defaults."""
    iccid_by_imsi: Mapping[str, str] = field(default_factory=dict)
    """The ICCID of each SIM listed one by one that has one (a range's SIMs have none)."""
    memo: dict[tuple[object, ...], Resolution] = field(
        default_factory=dict, compare=False, repr=False
    )
    """`engine.resolve`'s results by what determines them (SIM, twin, and per level the plan
    version, zone and band; service, rating group). Belongs to this catalogue, so a reload
    (a new `Catalogue`) starts empty; bounded by `engine.MEMO_LIMIT`."""

    @property
    def home_plmn(self) -> str:
        return self.tenant.home_network

    def summary(self) -> dict[str, int]:
        twins = sum(len(s.twins) for s in self.sims_by_imsi.values())
        return {
            "plans": len(self.plans),
            "plan_versions": sum(len(p.versions) for p in self.plans.values()),
            "zone_sets": len(self.zone_sets),
            "zones": sum(len(z.zone_ids) for z in self.zone_sets.values()),
            "band_sets": len(self.band_sets),
            "countries": len(set(self.mcc_country.values())),
            "regions": len(self.regions),
            "accounts": len(self.accounts),
            "sims": len(self.sims_by_imsi),
            "twins": twins,
            "pools": len(self.pools),
            "wallets": len(self.wallets),
            "contracts": len(self.contracts),
            "addons": len(self.addons),
            "tax_profiles": len(self.tax_profiles),
            "warnings": len(self.warnings),
        }
