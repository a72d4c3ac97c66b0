"""SIM lifecycle states (docs/sim-states.md): the allowed transitions, a SIM's state as the
catalogue state holds it (a SIM item, or a member of a ``sim_ranges`` item), and the moves
between two catalogue states, checked and journaled by :meth:`TenantCatalogues.change`, the
one place every front door (API, CRM import, ``ocs catalog apply``, auto activation) goes
through.

A SIM item names its ``state``; one of a catalogue written before lifecycle states names
none, and its twins' statuses tell it (:func:`ocs.rating.compiler.twins_state`). The first
move of such a SIM writes ``state`` and lifts the twins' statuses that stood for it back to
``active``: from then on the SIM's state rules and a twin's status only suspends that twin.
"""

from __future__ import annotations

import getpass
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from ocs.balance.keys import PayerKeys, payer_tag
from ocs.provisioning.errors import Refused

STATES: Final = ("inventory", "test", "active", "suspended", "deactivated", "terminated")
TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "inventory": frozenset({"test", "active", "terminated"}),
    "test": frozenset({"inventory", "active", "deactivated", "terminated"}),
    "active": frozenset({"suspended", "deactivated", "terminated"}),
    "suspended": frozenset({"active", "deactivated", "terminated"}),
    "deactivated": frozenset({"inventory", "active", "terminated"}),
    "terminated": frozenset(),
}
"""From -> the states it may move to (docs/sim-states.md says why). Terminated is final."""
CREATED_IN: Final = frozenset({"inventory", "test", "active", "suspended"})
"""The states a SIM created over the API or by CRM import may start in."""
SIGNAL_ON_ENTRY: Final[Mapping[str, str | None]] = {
    "inventory": "asr",
    "test": "rar",
    "active": "rar",
    "suspended": "asr",
    "deactivated": "asr",
    "terminated": "asr",
}
"""What the open sessions of a SIM get when it enters a state: an ASR where it may no longer
use the network, an RAR where it is charged differently from now on (test <-> active)."""
HISTORY_KEPT: Final = 200  # moves kept per SIM (and per range) in Redis; PostgreSQL keeps all


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a move: ``token:<token id>`` (the API), ``cli:<OS user>``, ``lifecycle``
    (the lifecycle runner) or ``system`` (auto activation)."""

    kind: str
    id: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}" if self.id else self.kind


SYSTEM: Final = Actor("system")
LIFECYCLE: Final = Actor("lifecycle")


def cli_actor() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, no LOGNAME (a container)
        user = "unknown"
    return Actor("cli", user)


def refused(current: str, to: str, subject: str) -> Refused:
    allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none (final)"
    return Refused(
        409,
        "state-transition",
        "State transition not allowed",
        f"{subject} cannot move from {current} to {to} (from {current}: {allowed})",
        **{"from": current, "to": to},
    )


def check(current: str, to: str, subject: str) -> None:
    """Raise the 409 :class:`Refused` naming both states when ``current -> to`` is not in
    :data:`TRANSITIONS`."""
    if to not in TRANSITIONS.get(current, ()):
        raise refused(current, to, subject)


def _twins_state(twins: list[dict[str, Any]]) -> str:
    present = {t.get("status", "active") for t in twins}
    return next((s for s in ("active", "suspended") if s in present), "terminated")


def item_state(item: Mapping[str, Any]) -> str:
    """The state of a ``sims`` item (every member of a ``sim_ranges`` item but its own).
    Runs for every SIM on every catalogue change (``snapshot``, ``moves``): the common
    cases return at once."""
    state = item.get("state")
    if state:
        return str(state)
    for twin in item["twins"]:
        if twin.get("status", "active") == "active":
            return "active"
    return _twins_state(item["twins"])


def member_state(item: Mapping[str, Any], imsi: str) -> str:
    own = item.get("states") or {}
    return str(own[imsi]) if imsi in own else item_state(item)


def _lift(item: dict[str, Any]) -> None:
    """Give an item of before lifecycle states its ``state`` (what its twins tell) and set
    the twins that stood for it back to active."""
    if item.get("state"):
        return
    derived = _twins_state(item["twins"])
    if derived != "active":
        for twin in item["twins"]:
            if twin.get("status", "active") == derived:
                twin["status"] = "active"
    item["state"] = derived


def set_state(item: dict[str, Any], to: str) -> str:
    """Move a ``sims`` item to ``to`` (checked); the state it was in."""
    current = item_state(item)
    check(current, to, f"SIM {item['imsi']}")
    _lift(item)
    item["state"] = to
    return current


def set_member_state(item: dict[str, Any], imsi: str, to: str) -> str:
    """Move one member of a ``sim_ranges`` item to ``to`` (checked); the state it was in.
    A member back in the range's own state drops out of ``states``."""
    current = member_state(item, imsi)
    check(current, to, f"SIM {imsi}")
    _lift(item)
    own = dict(item.get("states") or {})
    if to == item["state"]:
        own.pop(imsi, None)
    else:
        own[imsi] = to
    item["states"] = own
    return current


def range_of(ranges: Mapping[str, Any], imsi: str) -> dict[str, Any] | None:
    """The ``sim_ranges`` item holding ``imsi``, or None."""
    number = int(imsi)
    for item in ranges.values():
        first = str(item["imsi_first"])
        if len(first) == len(imsi) and int(first) <= number < int(first) + int(item["count"]):
            result: dict[str, Any] = item
            return result
    return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every SIM's state in a catalogue state (ranges as their state and own states)."""

    sims: dict[str, str]
    ranges: dict[str, tuple[str, dict[str, str]]]


def snapshot(state: Mapping[str, Any]) -> Snapshot:
    sims = {imsi: item_state(item) for imsi, item in (state.get("sims") or {}).items()}
    ranges = {
        rid: (item_state(item), dict(item.get("states") or {}))
        for rid, item in (state.get("sim_ranges") or {}).items()
    }
    return Snapshot(sims, ranges)


@dataclass(frozen=True, slots=True)
class Explicit:
    """The items of a catalogue state that name a state (``state``, a range's ``states``),
    held (so that an item replaced by a change is told from one edited in place), to give
    back their states to the items that replace them without naming one."""

    sims: dict[str, dict[str, Any]]
    ranges: dict[str, dict[str, Any]]


def explicit(state: Mapping[str, Any]) -> Explicit:
    sims = {imsi: item for imsi, item in (state.get("sims") or {}).items() if item.get("state")}
    ranges = {
        rid: item
        for rid, item in (state.get("sim_ranges") or {}).items()
        if item.get("state") or item.get("states")
    }
    return Explicit(sims, ranges)


def keep_states(kept: Explicit, after: Mapping[str, Any]) -> bool:
    """A SIM's state is operational data, like a wallet's balance: an item that a change
    replaced (a catalogue file or document applied again) without naming a state keeps the
    one it had; an item edited in place (the API, an import) is as the edit left it. Only a
    ``state`` written in the new item moves a SIM. True if an item got its state back."""
    changed = False
    for imsi, item in (after.get("sims") or {}).items():
        old = kept.sims.get(imsi)
        if old is not None and item is not old and not item.get("state"):
            item["state"] = old["state"]
            changed = True
    for rid, item in (after.get("sim_ranges") or {}).items():
        old = kept.ranges.get(rid)
        if old is None or item is old:
            continue
        if not item.get("state") and old.get("state"):
            item["state"] = old["state"]
            changed = True
        own: dict[str, str] = old.get("states") or {}
        if not item.get("states") and own:
            first, count = str(item["imsi_first"]), int(item["count"])
            inside = {
                imsi: s
                for imsi, s in own.items()
                if len(imsi) == len(first) and int(first) <= int(imsi) < int(first) + count
            }
            if inside:
                item["states"] = inside
                changed = True
    return changed


@dataclass(frozen=True, slots=True)
class Move:
    """One state change: of one SIM (``imsi``), or of a whole range (``range`` and no IMSI:
    its members without a state of their own)."""

    imsi: str | None
    range: str | None
    from_: str
    to: str

    def subject(self) -> str:
        return f"SIM {self.imsi}" if self.imsi else f"sim_range {self.range}"


def moves(before: Snapshot, after: Mapping[str, Any]) -> list[Move]:
    """The state changes from ``before`` to ``after`` of the SIMs and ranges in both (a SIM
    created or removed is no move), each checked against :data:`TRANSITIONS` (raises the
    409 :class:`Refused` of the first one not allowed)."""
    out: list[Move] = []
    for imsi, item in (after.get("sims") or {}).items():
        old = before.sims.get(imsi)
        if old is not None and (new := item_state(item)) != old:
            out.append(Move(imsi, None, old, new))
    for rid, item in (after.get("sim_ranges") or {}).items():
        was = before.ranges.get(rid)
        if was is None:
            continue
        old_state, old_own = was
        new_state = item_state(item)
        new_own: dict[str, str] = item.get("states") or {}
        if new_state != old_state:
            out.append(Move(None, rid, old_state, new_state))
        for imsi in sorted(set(old_own) | set(new_own)):
            a, b = old_own.get(imsi, old_state), new_own.get(imsi, new_state)
            if a != b:
                out.append(Move(imsi, rid, a, b))
    for move in out:
        check(move.from_, move.to, move.subject())
    return out


EVENT_TYPE: Final = "sim.state_changed"


def outbox_event(
    tenant: str, entry: Mapping[str, Any], payer: tuple[str, str], now_ms: int, root: str = ""
) -> tuple[str, dict[str, str]]:
    """The outbox stream and the fields of the ``sim.state_changed`` event of one journaled
    move (docs/webhooks.md): the outbox of the SIM's first payer (``payer``: kind, id), the
    format ``emit`` of ``_events.lua`` writes. Its id is derived from the subject and the
    revision (a replay of the same move has the same id). ``root``: the payer's reseller
    chain root (its keys, the outbox too, live in the root's slot; ``ocs.balance.keys``)."""
    kind, pid = payer
    tag = payer_tag(tenant, kind, pid)
    subject: dict[str, Any] = {"payer": pid, "payer_kind": kind}
    if entry.get("imsi"):
        subject["imsi"] = entry["imsi"]
    if entry.get("range"):
        subject["range"] = entry["range"]
    natural = f"{entry.get('imsi') or 'range:' + str(entry.get('range'))}|{entry['revision']}"
    digest = hashlib.sha1(f"{tag}|{EVENT_TYPE}|{natural}".encode()).hexdigest()
    data = {k: entry[k] for k in ("from", "to", "by", "reason", "at", "revision")}
    fields = {
        "id": "evt_" + digest[:32],
        "tenant": tenant,
        "type": EVENT_TYPE,
        "subject": json.dumps(subject, sort_keys=True, separators=(",", ":")),
        "time": str(now_ms),
        "data": json.dumps(data, sort_keys=True, separators=(",", ":")),
    }
    return PayerKeys(tag, root).events, fields


def entries(
    moves_: list[Move], actor: Actor, reason: str, revision: int
) -> Iterator[dict[str, Any]]:
    """The journal entries of ``moves_`` (what history shows and PostgreSQL keeps)."""
    at = datetime.now(UTC).isoformat(timespec="milliseconds")
    for move in moves_:
        entry: dict[str, Any] = {"from": move.from_, "to": move.to}
        if move.imsi is not None:
            entry["imsi"] = move.imsi
        if move.range is not None:
            entry["range"] = move.range
        entry.update(by=str(actor), reason=reason, at=at, revision=revision)
        yield entry
