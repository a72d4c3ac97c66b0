"""Per-SIM limits on the charging path (docs/limits.md): the caps a usage counts against,
in the form ``charge.lua`` enforces them (ARGV[17]), and what the answer says at a cap.

The caps of a usage are the SIM's own (``sim_limits``: the SIM-wide caps and its twin's)
or, when the SIM has none, the defaults of the plan its twin is on. Each cap is one field
of the payer's limits hash (``ocs.balance.keys.PayerKeys.limits``): ``<imsi>|<scope>|<cap>``
with scope ``*`` (the whole SIM) or the twin id, and its period is the tenant's local day
or month (``d2026-12-06``, ``m2026-12``): a new period starts at zero in the script itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from ocs.balance import BalanceStore
from ocs.balance.keys import PayerKeys, payer_tag
from ocs.balance.models import BucketUnit
from ocs.charging.levels import root_of
from ocs.rating.catalogue import Catalogue, CompiledSim
from ocs.rating.context import ServiceKind
from ocs.rating.engine import Resolution
from ocs.rating.models import CAP_FIELDS, Caps
from ocs.rating.models import LimitAction as ActionName

SIM_SCOPE: Final = "*"
SERVICE_OF_UNIT: Final = {
    BucketUnit.BYTES: ServiceKind.DATA,
    BucketUnit.MESSAGES: ServiceKind.SMS,
    BucketUnit.EVENTS: ServiceKind.EVENT,
}


@dataclass(frozen=True, slots=True)
class LimitAction:
    """What the answer does at a cap: ``block``, ``redirect``, ``restrict`` or ``notify``."""

    kind: ActionName
    redirect_url: str | None = None
    filter_ids: tuple[str, ...] = ()

    @classmethod
    def of(cls, caps: Caps) -> LimitAction:
        return cls(caps.action, caps.redirect_url, tuple(caps.filter_ids))

    @property
    def enforced(self) -> bool:
        return self.kind != "notify"


@dataclass(frozen=True, slots=True)
class CapRef:
    """One cap of one SIM (or twin): its field in the payer's limits hash, its size and
    period, and its action."""

    field: str
    name: str  # a key of CAP_FIELDS
    scope: str  # SIM_SCOPE or a twin id
    cap: int
    window: str  # "day" | "month"
    action: LimitAction


def _refs(imsi: str, scope: str, caps: Caps, service: ServiceKind | None) -> list[CapRef]:
    action = LimitAction.of(caps)
    out = []
    for name, value in caps.caps().items():
        kind, window = CAP_FIELDS[name]
        if service is None or kind is service:
            out.append(CapRef(f"{imsi}|{scope}|{name}", name, scope, value, window, action))
    return out


def sim_caps(
    catalogue: Catalogue, imsi: str, twin: str, plan: str | None, service: ServiceKind | None
) -> tuple[CapRef, ...]:
    """The caps a usage of ``service`` (None: every service) by ``twin`` of SIM ``imsi``,
    on ``plan``, counts against."""
    own = catalogue.sim_limits.get(imsi)
    if own is not None:
        refs = _refs(imsi, SIM_SCOPE, own, service)
        twin_caps = own.twins.get(twin)
        if twin_caps is not None:
            refs += _refs(imsi, twin, twin_caps, service)
        return tuple(refs)
    compiled = catalogue.plans.get(plan) if plan is not None else None
    if compiled is None or compiled.limits is None:
        return ()
    return tuple(_refs(imsi, twin, compiled.limits, service))


def usage_caps(
    catalogue: Catalogue, resolution: Resolution, unit: BucketUnit
) -> tuple[CapRef, ...]:
    """The caps of a rated usage in ``unit`` (none for units no cap counts: seconds)."""
    service = SERVICE_OF_UNIT.get(unit)
    if service is None:
        return ()
    plan = resolution.quotes[0].plan_id if resolution.quotes else None
    return sim_caps(catalogue, resolution.imsi, resolution.twin, plan, service)


class Periods:
    """The current period ids (local day, local month) of each time zone, recomputed once
    a local day."""

    __slots__ = ("_zones",)

    def __init__(self) -> None:
        self._zones: dict[str, tuple[int, int, str, str]] = {}

    def ids(self, tz: str, now_ms: int) -> tuple[str, str]:
        entry = self._zones.get(tz)
        if entry is None or not entry[0] <= now_ms < entry[1]:
            entry = self._zones[tz] = _day_of(tz, now_ms)
        return entry[2], entry[3]


def _day_of(tz: str, now_ms: int) -> tuple[int, int, str, str]:
    zone = ZoneInfo(tz)
    local = datetime.fromtimestamp(now_ms / 1000, zone)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=1)).date()
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    day = start.date()
    return (
        int(start.timestamp() * 1000),
        int(end.timestamp() * 1000),
        f"d{day.isoformat()}",
        f"m{day.year:04d}-{day.month:02d}",
    )


PERIODS: Final = Periods()


def period_of(cap: CapRef, ids: tuple[str, str]) -> str:
    return ids[0] if cap.window == "day" else ids[1]


def limits_arg(caps: tuple[CapRef, ...], tz: str, now_ms: int) -> tuple[str | int, ...]:
    """``ChargeRequest.limits`` for ``caps`` at ``now_ms``: five values a cap (field, cap,
    period, enforce, action; ``charge.lua`` ARGV[17] and ARGV[19..])."""
    if not caps:
        return ()
    ids = PERIODS.ids(tz, now_ms)
    out: list[str | int] = []
    for c in caps:
        out += (c.field, c.cap, period_of(c, ids), 1 if c.action.enforced else 0, c.action.kind)
    return tuple(out)


def binding(caps: tuple[CapRef, ...], index: int) -> CapRef | None:
    """The cap a result's ``limit`` index names (1-based), or None."""
    return caps[index - 1] if 0 < index <= len(caps) else None


@dataclass(frozen=True, slots=True)
class CapUsage:
    """One cap of a SIM in its current period: used and reserved units (summed over the
    payers its usage went to), and what remains."""

    ref: CapRef
    period: str
    used: int
    reserved: int

    @property
    def remaining(self) -> int:
        return max(self.ref.cap - self.used - self.reserved, 0)


async def caps_in_use(
    store: BalanceStore, catalogue: Catalogue, sim: CompiledSim, now_ms: int
) -> list[CapUsage]:
    """Every cap of ``sim`` with its state in the current period (one pipelined read of
    the payers' limits hashes)."""
    at = datetime.fromtimestamp(now_ms / 1000, UTC)
    ids = PERIODS.ids(catalogue.tenant.time_zone, now_ms)
    tenant = catalogue.tenant.id
    refs: dict[str, CapRef] = {}
    payers: dict[str, list[str]] = {}
    roots: dict[str, str] = {}  # a payer of a reseller chain keeps its keys in the root's slot
    for twin in sim.twins:
        payer = payer_tag(tenant, str(twin.payer.kind), twin.payer.id)
        roots[payer] = root_of(catalogue, twin.payer)
        for ref in sim_caps(catalogue, sim.imsi, twin.id, twin.plans.plan_at(at), None):
            refs.setdefault(ref.field, ref)
            if payer not in payers.setdefault(ref.field, []):
                payers[ref.field].append(payer)
    reads = [(f, p) for f, ps in payers.items() for p in ps]
    async with store.redis.pipeline(transaction=False) as pipe:
        for f, p in reads:
            pipe.hget(PayerKeys(p, roots[p]).limits, f)
        values = await pipe.execute() if reads else []
    totals = {f: [0, 0] for f in refs}
    for (f, _), raw in zip(reads, values, strict=True):
        if raw is None:
            continue
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        period, used, reserved, _ = text.split(":")
        if period == period_of(refs[f], ids):
            totals[f][0] += int(used)
            totals[f][1] += int(reserved)
    return [
        CapUsage(ref, period_of(ref, ids)[1:], totals[f][0], totals[f][1])
        for f, ref in refs.items()
    ]
