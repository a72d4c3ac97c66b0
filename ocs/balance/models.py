"""Value types of the balance store: bucket definitions, charge requests and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson


class BucketUnit(StrEnum):
    """What a bucket holds. Money is in minor units of the payer's currency."""

    MONEY = "money"
    BYTES = "bytes"
    SECONDS = "seconds"
    MESSAGES = "messages"
    EVENTS = "events"


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """A bucket as provisioned: ``priority`` orders consumption (lowest first), then the
    earliest ``valid_to``. Times are epoch milliseconds, 0 = open. ``unlimited`` buckets
    (external contracts, postpaid overage without a credit limit) grant anything and only
    count what was used."""

    id: str
    unit: BucketUnit
    size: int
    priority: int = 0
    valid_from: int = 0
    valid_to: int = 0
    unlimited: bool = False

    def definition(self) -> dict[str, Any]:
        return {
            "unit": str(self.unit),
            "prio": self.priority,
            "from": self.valid_from,
            "to": self.valid_to,
            "unlimited": self.unlimited,
        }


@dataclass(frozen=True, slots=True)
class Rate:
    """Money per unit for money buckets: ``numerator / denominator`` minor units per unit."""

    numerator: int
    denominator: int


FREE = Rate(0, 1)
NOT_PRICED = Rate(0, 0)  # money buckets are not usable for this request


@dataclass(frozen=True, slots=True)
class LevelCharge:
    """An upper level (1, 2, ...) of a multi-level usage, charged in the same ``charge.lua``
    call as level 0 (docs/charging.md, "Multi-level reservations"). ``reserve``: a prepaid
    level (prepaid pool, wallet) holds its share of every grant; otherwise (postpaid pool,
    external contract) the grant is only checked against what it can still cover (its
    credit limit) and the usage is committed when reported. ``rate``: money per unit of
    its money buckets (``NOT_PRICED``: units only); ``price``: the exact money of the
    request's ``used`` units at this level (a wallet is debited exactly it), or None."""

    payer: str
    reserve: bool
    rate: Rate = NOT_PRICED
    price: int | None = None
    level: int = 0  # its number (the level record's id suffix); 0: its place in the list


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """One call of the charge script for one (session, rating group).

    ``used`` units are committed against the existing reservation (the rest is released);
    then up to ``want`` units are reserved until ``deadline_ms`` (Validity-Time + grace).
    ``mode="debit"`` charges ``used`` all-or-nothing without a reservation (events).
    ``price``: the exact money of ``used`` as rating priced it; the usage is then paid in
    money alone and exactly that is debited (wallets; ``rate`` only sizes reservations).
    None: money buckets pay ``used`` at ``rate`` (a postpaid pool's credit limit)."""

    request_id: str
    member: str
    unit: BucketUnit
    now_ms: int
    used: int = 0
    want: int = 0
    min_grant: int = 0
    rate: Rate = NOT_PRICED
    deadline_ms: int = 0
    mode: str = "session"
    context: dict[str, Any] = field(default_factory=dict)
    context_json: str = ""  # the context already serialised (takes precedence when set)
    price: int | None = None
    counters: tuple[tuple[str, int, int], ...] = ()
    """(field, expected, delta) of the period counters ``price`` was computed from: the
    script moves them with the commit, or answers ``stale`` (nothing written) when one is
    not at its expected value."""
    limits: tuple[str | int, ...] = ()
    """The per-SIM caps the usage counts against, five values a cap (field, cap, period,
    enforce, action: ``charge.lua`` ARGV[19..], ``ocs.charging.limits.limits_arg``)."""
    root: str = ""
    """The payer's reseller chain root (``ocs.balance.keys``): its keys and every upper
    level's live in the root's slot. Empty: the payer's own."""
    levels: tuple[LevelCharge, ...] = ()
    """The upper levels, level 1 first: each reserves (or checks) and commits in the same
    script call as the payer (level 0); the grant is the smallest any level allows."""

    def priced(
        self,
        price: int | None,
        counters: tuple[tuple[str, int, int], ...],
        context_json: str,
        root: str,
        levels: tuple[LevelCharge, ...],
    ) -> ChargeRequest:
        """This request with its price, counters, record context and chain
        (``ocs.charging.pricing``): ``dataclasses.replace`` without its per-call walk over
        the fields (it cost more than the request itself on the real-time path)."""
        return ChargeRequest(
            self.request_id,
            self.member,
            self.unit,
            self.now_ms,
            self.used,
            self.want,
            self.min_grant,
            self.rate,
            self.deadline_ms,
            self.mode,
            self.context,
            context_json,
            price,
            counters,
            self.limits,
            root,
            levels,
        )


@dataclass(frozen=True, slots=True)
class LevelResult:
    """One upper level of a charge (``level``: 1, 2, ...; a level whose payer holds nothing
    of the usage's unit is passed over and not listed): units committed, money debited (a
    wallet, or a postpaid pool's credit), units it could not cover (``overrun``), money it
    could not cover (``short``), and what it still has (``left``, -1: unlimited)."""

    level: int
    units: int
    money: int
    overrun: int
    short: int
    left: int


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """``status``: ok, exhausted (nothing could be granted), insufficient (a debit was
    refused), limited (a per-SIM cap refused the grant or the debit), no_reservation (usage
    reported without a reservation; charged from available),
    stale (a counter of the price moved: nothing done, ``counters`` has the current values).
    ``left`` is what the payer still has in this unit (-1: unlimited); ``live`` the number of
    reservations on the payer. ``cost`` is the money debited; ``short`` what of the price
    the money could not cover (a wallet that ran dry; the record says so too)."""

    status: str
    granted: int
    money: int
    units: int
    cost: int
    overrun: int
    left: int
    live: int
    short: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    limit: int = 0
    """1-based index in ``ChargeRequest.limits`` of an enforced cap with nothing left under
    it after this call (or that refused it: status ``limited``); 0: none."""
    reached: tuple[int, ...] = ()
    """Indices of the caps whose used units reached the cap in this call (first time in
    their period)."""
    levels: tuple[LevelResult, ...] = ()
    """What each upper level did (level 1 first); ``left`` above is the smallest of every
    level's (the grant is the last one when any level is out)."""

    @classmethod
    def from_json(cls, raw: str | bytes) -> ChargeResult:
        data = orjson.loads(raw)  # the script's answer, once per charge: ~3x json.loads
        get = data.get
        ctr = get("ctr")
        counters = {str(k): int(v) for k, v in ctr.items()} if ctr else {}
        status = str(data["status"])
        if status == "stale":
            return cls("stale", 0, 0, 0, 0, 0, 0, 0, 0, counters)
        hit, lv = get("hit"), get("lv")  # absent on the common path: no tuple built
        return cls(
            status,
            int(data["granted"]),
            int(data["money"]),
            int(data["units"]),
            int(data["cost"]),
            int(data["overrun"]),
            int(data["left"]),
            int(data["live"]),
            int(get("short", 0)),
            counters,
            int(get("lim") or 0),
            tuple(int(i) for i in hit) if hit else (),
            tuple(
                LevelResult(
                    int(v["level"]),
                    int(v["units"]),
                    int(v["money"]),
                    int(v["overrun"]),
                    int(v["short"]),
                    int(v["left"]),
                )
                for v in lv
            )
            if lv
            else (),
        )


@dataclass(frozen=True, slots=True)
class BucketState:
    id: str
    unit: str
    priority: int
    valid_from: int
    valid_to: int
    unlimited: bool
    credited: int
    available: int
    reserved: int
    used: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "unit": self.unit,
            "priority": self.priority,
            "valid_from": self.valid_from,
            "valid_to": self.valid_to,
            "unlimited": self.unlimited,
            "credited": self.credited,
            "available": self.available,
            "reserved": self.reserved,
            "used": self.used,
        }
