"""Bulk SIM state moves (docs/sim-states.md, "Many SIMs at once"): thousands of SIMs of a
tenant, named by IMSI, ICCID or MSISDN or chosen by a selector, moved to one state in **one**
catalogue change (one revision, one compile, one put in force), each SIM checked against
:data:`ocs.provisioning.states.TRANSITIONS` on its own: the SIMs whose move is allowed move,
the others are answered one by one (refused with both states, already there, unknown)
without stopping the rest.

The writes of that change are bounded (``TenantCatalogues._put_in_force``: the journal of
the moves goes in chunks, every command small) and the tenant lock is renewed while it runs,
so a 10,000-SIM move never holds Redis, nor the tenant's lock, long enough to stop the
charging of other SIMs and tenants. Its cost is one change, where 10,000 single moves are
10,000 changes (docs/benchmarks-states.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ocs.provisioning.states import TRANSITIONS, _lift, item_state, member_state, range_of
from ocs.rating.catalogue import Catalogue

MAX_SIMS: Final = 10_000  # SIMs one request may name or select
KINDS: Final = ("imsi", "iccid", "msisdn")

MOVED, UNCHANGED, REFUSED, UNKNOWN = "moved", "unchanged", "refused", "unknown"


class NothingMoved(Exception):
    """No SIM of the request may move: no catalogue change is made."""


@dataclass(slots=True)
class Target:
    """One SIM of the request: as named (``kind``, ``value``), its IMSI once resolved."""

    kind: str
    value: str
    imsi: str | None = None
    outcome: str = UNKNOWN
    from_: str | None = None
    reason: str = ""

    def view(self, to: str) -> dict[str, Any]:
        out: dict[str, Any] = {self.kind: self.value, "outcome": self.outcome}
        if self.imsi is not None and self.kind != "imsi":
            out["imsi"] = self.imsi
        if self.from_ is not None:
            out["from"] = self.from_
            out["to"] = to
        if self.reason:
            out["reason"] = self.reason
        return out


def resolve(
    catalogue: Catalogue, iccid_to_imsi: Mapping[str, str], named: Iterable[tuple[str, str]]
) -> list[Target]:
    """The IMSI of every SIM named (kind, value) in the tenant's catalogue; a SIM of another
    tenant, or none, is ``unknown`` (the same answer: nothing of another tenant is told)."""
    out: list[Target] = []
    for kind, value in named:
        target = Target(kind, value)
        if kind == "imsi":
            target.imsi = value if value in catalogue.sims_by_imsi else None
        elif kind == "msisdn":
            sim = catalogue.sims_by_msisdn.get(value)
            target.imsi = None if sim is None else sim.imsi
        else:
            target.imsi = iccid_to_imsi.get(value)
        out.append(target)
    return out


@dataclass(slots=True)
class BulkMove:
    """The mutation of one bulk move (``TenantCatalogues.change``): every resolved target
    checked against the state as it is under the tenant lock, the allowed ones moved."""

    targets: list[Target]
    to: str
    moved: list[str] = field(default_factory=list)  # IMSIs

    def __call__(self, state: dict[str, Any]) -> None:
        singles: dict[str, Any] = state.get("sims") or {}
        ranges: dict[str, Any] = state.get("sim_ranges") or {}
        members: dict[str, tuple[dict[str, Any], list[str]]] = {}  # range id -> (item, IMSIs)
        seen: set[str] = set()
        for target in self.targets:
            imsi = target.imsi
            if imsi is None:
                continue
            item = singles.get(imsi)
            held = None if item is not None else range_of(ranges, imsi)
            if item is None and held is None:  # removed since it was resolved
                target.imsi, target.outcome = None, UNKNOWN
                continue
            current = item_state(item) if item is not None else member_state(held or {}, imsi)
            target.from_ = current
            if imsi in seen:  # named twice (by two identities): moved by the first
                target.outcome, target.from_, target.reason = UNCHANGED, None, "named twice"
                continue
            if current == self.to:
                target.outcome, target.from_ = UNCHANGED, None
                target.reason = f"already {current}"
                continue
            if self.to not in TRANSITIONS.get(current, frozenset()):
                allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none (final)"
                target.outcome = REFUSED
                target.reason = (
                    f"cannot move from {current} to {self.to} (from {current}: {allowed})"
                )
                continue
            seen.add(imsi)
            target.outcome = MOVED
            self.moved.append(imsi)
            if item is not None:
                _lift(item)
                item["state"] = self.to
            else:
                assert held is not None
                members.setdefault(str(held["id"]), (held, []))[1].append(imsi)
        for item, imsis in members.values():  # each range's own states rewritten once
            _lift(item)
            own = dict(item.get("states") or {})
            for imsi in imsis:
                if self.to == item["state"]:
                    own.pop(imsi, None)
                else:
                    own[imsi] = self.to
            item["states"] = own
        if not self.moved:
            raise NothingMoved


def counts(targets: list[Target]) -> dict[str, int]:
    out = dict.fromkeys((MOVED, UNCHANGED, REFUSED, UNKNOWN), 0)
    for target in targets:
        out[target.outcome] += 1
    return out


def select(
    catalogue: Catalogue,
    *,
    account: str | None,
    plan: str | None,
    payer: str | None,
    status: str | None,
    at: Any,
) -> list[str]:
    """The IMSIs the selector of ``GET /v1/subscriptions`` chooses (every filter given
    holds), in IMSI order."""
    out: list[str] = []
    for imsi in sorted(catalogue.sims_by_imsi):
        sim = catalogue.sims_by_imsi[imsi]
        if account is not None and sim.account != account:
            continue
        if payer is not None and not any(t.payer.id == payer for t in sim.twins):
            continue
        if plan is not None and not any(t.plans.plan_at(at) == plan for t in sim.twins):
            continue
        if status is not None and sim.state != status:
            continue
        out.append(imsi)
    return out
