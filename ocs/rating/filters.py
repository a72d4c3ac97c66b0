"""SIM-twin rating filters: compile a `FilterSpec` into a predicate once, evaluate it per usage.

A compiled predicate is a plain closure over precomputed sets and integer ranges, so resolving
a twin costs a few attribute reads and set lookups per twin. `never_matches` and `shadows`
give the loader's warnings for twins that can never be chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from ocs.rating.context import UsageContext
from ocs.rating.models import ALL_DAYS, FilterSpec, TimeWindow

WEEKDAY_BIT = {day: 1 << index for index, day in enumerate(ALL_DAYS)}


@dataclass(slots=True)
class Facts:
    """What filters and tariffs read about one usage, derived once per rating."""

    ctx: UsageContext
    plmn: str
    mcc: str
    country: str | None
    weekday: int  # 0 = Monday, local time of the subscriber
    minute: int  # minute of the local day, 0..1439
    apn: str | None  # lower case
    at: datetime  # event time in UTC


Predicate = Callable[[Facts], bool]


def always(_: Facts) -> bool:
    return True


def never(_: Facts) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class CompiledWindow:
    day_mask: int
    start: int
    end: int

    @classmethod
    def of(cls, window: TimeWindow) -> CompiledWindow:
        mask = 0
        for day in window.days:
            mask |= WEEKDAY_BIT[day]
        return cls(mask, window.start_minute, window.end_minute)

    def contains(self, weekday: int, minute: int) -> bool:
        if not self.day_mask >> weekday & 1:
            return False
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def _windows(windows: list[TimeWindow]) -> Predicate:
    compiled = tuple(CompiledWindow.of(w) for w in windows)

    def pred(f: Facts) -> bool:
        return any(w.contains(f.weekday, f.minute) for w in compiled)

    return pred


def _leaves(spec: FilterSpec, regions: Mapping[str, frozenset[str]]) -> list[Predicate]:
    preds: list[Predicate] = []
    if spec.apn is not None:
        apns = frozenset(a.lower() for a in spec.apn)
        preds.append(lambda f: f.apn in apns)
    if spec.cidr is not None:
        ranges = tuple(
            (n.version, int(n.network_address), int(n.broadcast_address)) for n in spec.cidr
        )

        def in_cidr(f: Facts) -> bool:
            ip = f.ctx.destination_ip
            if ip is None:
                return False
            value, version = int(ip), ip.version
            return any(v == version and lo <= value <= hi for v, lo, hi in ranges)

        preds.append(in_cidr)
    if spec.domain is not None:
        exact = frozenset(d.lower().removeprefix("*.") for d in spec.domain)
        suffixes = tuple("." + d for d in exact)

        def in_domain(f: Facts) -> bool:
            domain = f.ctx.domain
            if domain is None:
                return False
            domain = domain.lower().rstrip(".")
            return domain in exact or domain.endswith(suffixes)

        preds.append(in_domain)
    if spec.region is not None:
        countries = frozenset().union(*(regions.get(r, frozenset()) for r in spec.region))
        preds.append(lambda f: f.country in countries)
    if spec.country is not None:
        wanted = frozenset(spec.country)
        preds.append(lambda f: f.country in wanted)
    if spec.network is not None:
        networks = frozenset(spec.network)
        preds.append(lambda f: f.plmn in networks)
    if spec.time is not None:
        preds.append(_windows(spec.time))
    if spec.rat is not None:
        rats = frozenset(spec.rat)
        preds.append(lambda f: f.ctx.rat_type in rats)
    if spec.rating_group is not None:
        groups = frozenset(spec.rating_group)
        preds.append(lambda f: f.ctx.rating_group in groups)
    if spec.service_id is not None:
        service_ids = frozenset(spec.service_id)
        preds.append(lambda f: f.ctx.service_id in service_ids)
    if spec.slice is not None:
        slices = tuple((s.sst, None if s.sd is None else int(s.sd, 16)) for s in spec.slice)

        def in_slice(f: Facts) -> bool:
            nssai = f.ctx.slice
            if nssai is None:
                return False
            return any(sst == nssai.sst and sd in (None, nssai.sd) for sst, sd in slices)

        preds.append(in_slice)
    if spec.qos_class is not None:
        classes = frozenset(spec.qos_class)
        preds.append(lambda f: f.ctx.qos_class in classes)
    if spec.service is not None:
        services = frozenset(spec.service)
        preds.append(lambda f: f.ctx.service in services)
    return preds


def _both(first: Predicate, second: Predicate) -> Predicate:
    return lambda f: first(f) and second(f)


def _and(preds: list[Predicate]) -> Predicate:
    """AND predicates as nested closures (cheaper per call than `all()` over a generator)."""
    if not preds:
        return always
    combined = preds[-1]
    for pred in reversed(preds[:-1]):
        combined = _both(pred, combined)
    return combined


def _either(first: Predicate, second: Predicate) -> Predicate:
    return lambda f: first(f) or second(f)


def _or(preds: list[Predicate]) -> Predicate:
    if not preds:
        return never
    combined = preds[-1]
    for pred in reversed(preds[:-1]):
        combined = _either(pred, combined)
    return combined


def compile_filter(spec: FilterSpec, regions: Mapping[str, frozenset[str]]) -> Predicate:
    """Compile a filter into a predicate over `Facts` (fields AND-ed, then all/any/not)."""
    preds = _leaves(spec, regions)
    if spec.all_ is not None:
        preds.extend(compile_filter(child, regions) for child in spec.all_)
    if spec.any_ is not None:
        options = [compile_filter(child, regions) for child in spec.any_]
        preds.append(_or(options))
    if spec.not_ is not None:
        inner = compile_filter(spec.not_, regions)
        preds.append(lambda f: not inner(f))
    return _and(preds)


def required_apns(spec: FilterSpec) -> frozenset[str] | None:
    """The APNs (lower case) a usage must have for the filter to match, or None when the
    filter does not constrain the APN at its top-level AND. Used to index twins by APN."""
    required: frozenset[str] | None = None
    for part in _conjunction(spec):
        if part.apn is not None:
            apns = frozenset(a.lower() for a in part.apn)
            required = apns if required is None else required & apns
    return required


# --- static analysis for loader warnings -------------------------------------------------

_SET_FIELDS = ("apn", "rat", "rating_group", "service_id", "network", "qos_class", "service")


def _has_leaf(spec: FilterSpec) -> bool:
    return any(
        getattr(spec, name) is not None
        for name in (*_SET_FIELDS, "cidr", "domain", "region", "country", "time", "slice")
    )


def is_catch_all(spec: FilterSpec) -> bool:
    """True when the filter matches every usage (nothing constrains it)."""
    if _has_leaf(spec) or spec.not_ is not None:
        return False
    if spec.all_ is not None and not all(is_catch_all(c) for c in spec.all_):
        return False
    return spec.any_ is None or any(is_catch_all(c) for c in spec.any_)


def _conjunction(spec: FilterSpec) -> list[FilterSpec]:
    parts = [spec]
    for child in spec.all_ or ():
        parts.extend(_conjunction(child))
    return parts


def never_matches(
    spec: FilterSpec,
    regions: Mapping[str, frozenset[str]],
    mcc_country: Mapping[str, str],
) -> str | None:
    """A reason why the filter can never match, or None if it may. Sound, not complete: it
    finds empty value lists, contradictory AND-ed values, `not` of a catch-all and `any` of
    nothing."""
    allowed: dict[str, set[object]] = {}
    countries: set[str] | None = None
    for part in _conjunction(spec):
        for name in _SET_FIELDS:
            values = getattr(part, name)
            if values is None:
                continue
            normal = {v.lower() if isinstance(v, str) and name == "apn" else v for v in values}
            allowed[name] = allowed[name] & normal if name in allowed else normal
            if not allowed[name]:
                return f"'{name}' values AND-ed together leave nothing to match"
        for name in ("cidr", "domain", "time", "slice"):
            if getattr(part, name) == []:
                return f"'{name}' is an empty list"
        scoped: list[set[str]] = []
        if part.country is not None:
            scoped.append(set(part.country))
        if part.region is not None:
            scoped.append(set().union(*(regions.get(r, frozenset()) for r in part.region)))
        for group in scoped:
            countries = group if countries is None else countries & group
            if not countries:
                return "'country'/'region' values AND-ed together leave no country"
        if part.not_ is not None and is_catch_all(part.not_):
            return "'not' of a filter that matches everything"
        if part.any_ is not None and all(never_matches(c, regions, mcc_country) for c in part.any_):
            return "every alternative of 'any' can never match"
        for child in part.all_ or ():
            reason = never_matches(child, regions, mcc_country)
            if reason is not None:
                return reason
    networks = allowed.get("network")
    if (
        networks is not None
        and countries is not None
        and not any(mcc_country.get(str(n)[:3]) in countries for n in networks)
    ):
        return "no 'network' lies in the allowed countries"
    return None


def _simple(spec: FilterSpec) -> bool:
    return spec.all_ is None and spec.any_ is None and spec.not_ is None


def shadows(earlier: FilterSpec, later: FilterSpec) -> bool:
    """True when every usage `later` matches is already taken by `earlier` (checked for
    catch-alls, identical filters and plain field filters whose value sets contain later's)."""
    if is_catch_all(earlier) or earlier == later:
        return True
    if not (_simple(earlier) and _simple(later)):
        return False
    return _contains(earlier, later)


@dataclass(frozen=True, slots=True)
class ShadowProbe:
    """What `shadows` needs to reject most pairs cheaply, computed once per twin filter
    (the loader compares every pair of twins of a SIM)."""

    spec: FilterSpec
    catch_all: bool
    simple: bool
    fields: frozenset[str]  # the fields that are set (not None)

    @classmethod
    def of(cls, spec: FilterSpec) -> ShadowProbe:
        names = frozenset(n for n in FilterSpec.model_fields if getattr(spec, n) is not None)
        return cls(spec, is_catch_all(spec), _simple(spec), names)


def probe_shadows(earlier: ShadowProbe, later: ShadowProbe) -> bool:
    """`shadows(earlier.spec, later.spec)`. Equal filters set the same fields, and the
    field-by-field containment needs every field of `earlier` set in `later`, so a pair
    failing that is rejected without comparing models; for two plain filters equality
    implies containment, so only containment is checked."""
    if earlier.catch_all:
        return True
    if not earlier.fields <= later.fields:
        return False
    if earlier.simple and later.simple:
        return _contains(earlier.spec, later.spec)
    return earlier.fields == later.fields and earlier.spec == later.spec


def _contains(earlier: FilterSpec, later: FilterSpec) -> bool:
    for name in type(earlier).model_fields:
        mine = getattr(earlier, name)
        if mine is None:
            continue
        theirs = getattr(later, name)
        if theirs is None:
            return False
        if name in _SET_FIELDS or name in ("country", "region"):
            if not set(theirs) <= set(mine):
                return False
        elif theirs != mine:
            return False
    return True
