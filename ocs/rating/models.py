"""Catalogue file schemas: what a YAML file under `policies/<tenant>/` may contain.

These pydantic models validate the data as written by people. They are never used on the hot
path: `ocs.rating.catalogue` compiles them into indexes once per load.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ocs.rating.context import RatType, ServiceKind, Unit

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
PlmnId = Annotated[str, StringConstraints(pattern=r"^[0-9]{5,6}$")]
Mcc = Annotated[str, StringConstraints(pattern=r"^[0-9]{3}$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Digits = Annotated[str, StringConstraints(pattern=r"^[0-9]{5,15}$")]
# ITU-T E.118: up to 19 digits and a Luhn check digit; 18-22 in the field (the API's bound)
Iccid = Annotated[str, StringConstraints(pattern=r"^[0-9]{18,22}$")]
Count = Annotated[int, Field(ge=0, strict=True)]
Positive = Annotated[int, Field(ge=1, strict=True)]
MinorUnits = Annotated[int, Field(ge=0, strict=True)]
"""Money in integer minor units of the plan currency (cents for EUR). Floats are refused."""


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("write prices as quoted decimal strings ('0.45') or integers, not floats")
    return value


Price = Annotated[Decimal, Field(ge=0, max_digits=18), BeforeValidator(_no_float)]
"""A price in minor units per `per` units, possibly fractional ('0.0045'); exact Decimal.
(The constraints come before the validator so pydantic-core checks them natively, which is
much faster than pydantic's Python fallback; the errors are the same.)"""


def _check_tz(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


TimeZone = Annotated[str, AfterValidator(_check_tz)]
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")


def _minute_of_day(value: str) -> int:
    match = _HHMM.match(value)
    if match is None:
        raise ValueError(f"time {value!r} is not HH:MM (00:00 to 24:00)")
    if value == "24:00":
        return 1440
    return int(match.group(1)) * 60 + int(match.group(2))


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


ALL_DAYS: tuple[Weekday, ...] = tuple(Weekday)


class Rounding(StrEnum):
    """How a priced amount with a fraction of a minor unit becomes whole minor units."""

    UP = "up"
    HALF_UP = "half_up"
    HALF_EVEN = "half_even"
    DOWN = "down"


class PayerKind(StrEnum):
    POSTPAID_POOL = "postpaid_pool"
    PREPAID_POOL = "prepaid_pool"
    WALLET = "wallet"
    EXTERNAL_CONTRACT = "external_contract"

    @property
    def prepaid(self) -> bool:
        """Whether usage on this payer must be reserved before it is granted."""
        return self in (PayerKind.PREPAID_POOL, PayerKind.WALLET)


class Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TimeWindow(Base):
    """Weekdays and a time of day range in the subscriber's local time. `start` > `end`
    wraps past midnight ("22:00"-"06:00"); `start` == `end` is the whole day."""

    days: list[Weekday] = Field(default_factory=lambda: list(ALL_DAYS), min_length=1)
    start: str = "00:00"
    end: str = "24:00"

    @model_validator(mode="after")
    def _times(self) -> TimeWindow:
        _minute_of_day(self.start)
        _minute_of_day(self.end)
        return self

    @property
    def start_minute(self) -> int:
        return _minute_of_day(self.start)

    @property
    def end_minute(self) -> int:
        return _minute_of_day(self.end)


Text = Annotated[str, StringConstraints(max_length=200)]


def _one_line(value: str) -> str:
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ValueError("a name is one line of text: no control characters")
    return value


Name = Annotated[str, StringConstraints(max_length=200), AfterValidator(_one_line)]
"""A name for people (accounts, plans, zones, add-ons, pools, ...), printed on invoices and
written into e-invoices: at most 200 characters on one line (XML cannot carry control
characters)."""


class InvoiceParty(Base):
    """What an invoice says about a party, as the billing terms file's account entries do
    (docs/invoices.md): set over the catalogue folder, the API or CRM import; the bill run
    copies it to the document at issue. A field left empty falls back to the terms file.

    On an account it is the buyer (EN 16931 BG-7, BT-10; `contact_name`/`phone` the buyer's
    contact, BG-9). On the tenant, and on a reseller account for the invoices it issues to
    its own customers (B2B2B), it is the seller (BG-4), with its contact (BG-6, which
    XRechnung asks for) and where to pay (BG-16: `iban`, `bic`, due after `payment_days`)."""

    legal_name: Text = ""
    street: Text = ""
    postcode: Annotated[str, StringConstraints(max_length=20)] = ""
    city: Text = ""
    country: CountryCode | None = None
    vat_id: Annotated[str, StringConstraints(pattern=r"^([A-Z]{2}[A-Za-z0-9+*.]{2,13})?$")] = ""
    email: Text = ""
    buyer_reference: Text = ""  # the buyer's reference or purchase order (BT-10/BT-13)
    language: Literal["en", "de"] | None = None
    contact_name: Text = ""
    phone: Annotated[str, StringConstraints(max_length=40)] = ""
    iban: Annotated[str, StringConstraints(pattern=r"^([A-Z]{2}[0-9]{2}[A-Z0-9]{11,30})?$")] = ""
    bic: Annotated[str, StringConstraints(pattern=r"^([A-Z0-9]{8}([A-Z0-9]{3})?)?$")] = ""
    payment_days: Annotated[int, Field(ge=0, le=365)] | None = None


# What only a seller's invoice data holds: where its buyers pay it, and when.
SELLER_ONLY: Final = ("iban", "bic", "payment_days")


class Tenant(Base):
    id: Id
    name: Name = ""
    home_network: PlmnId
    time_zone: TimeZone = "UTC"
    currency: CurrencyCode = "EUR"
    invoice: InvoiceParty | None = None


class Country(Base):
    code: CountryCode
    mcc: list[Mcc] = Field(min_length=1)


class Region(Base):
    id: Id
    countries: list[CountryCode] = Field(min_length=1)


class Zone(Base):
    id: Id
    name: Name = ""
    networks: list[PlmnId] = Field(default_factory=list)
    countries: list[CountryCode] = Field(default_factory=list)


class ZoneSet(Base):
    """Zones priced alike. A network is matched by MCC-MNC first, then by its country; when
    neither matches, `default` (if set) is the zone."""

    id: Id
    zones: list[Zone] = Field(min_length=1)
    default: Id | None = None


class Band(Base):
    id: Id
    windows: list[TimeWindow] = Field(min_length=1)


class BandSet(Base):
    """Time-of-day / weekday bands. The first band with a matching window wins; otherwise
    the usage falls in `default`."""

    id: Id
    bands: list[Band] = Field(default_factory=list)
    default: Id = "offpeak"


class Tier(Base):
    from_: Count = Field(alias="from")
    price: Price


class BandRate(Base):
    tiers: list[Tier] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> BandRate:
        previous = -1
        for tier in self.tiers:  # a plain loop: this runs for every rate of every plan
            start = tier.from_
            if previous < 0 and start != 0:
                raise ValueError("the first tier must start from 0")
            if start <= previous:
                raise ValueError("tier 'from' values must be strictly increasing")
            previous = start
        return self


ANY_BAND = "any"
ANY_ZONE = "*"


class Tariff(Base):
    """The price of one service in one zone (or every zone: "*"), optionally for one rating
    group. `rates` maps a band id (or "any") to tiers; a tier price is in minor units per
    `per` units. Quantities are rounded up to `increment` and at least `minimum_quantity`."""

    service: ServiceKind
    zone: Id | Literal["*"]
    rating_group: Count | None = None
    per: Positive = 1
    increment: Positive = 1
    minimum_quantity: Count = 0
    minimum_charge: MinorUnits = 0
    counter: Id | None = None
    counter_scope: Literal["subscription", "account"] = "subscription"
    rates: dict[str, BandRate] = Field(min_length=1)


class Allowance(Base):
    """Units included per period before tariffs apply, in the listed zones (all if None)."""

    id: Id
    service: ServiceKind
    zones: list[Id] | None = None
    units: Count


Period = Literal["day", "week", "month", "year"]


class RecurringFee(Base):
    id: Id
    amount: MinorUnits
    period: Period = "month"


class PropertyBand(Base):
    from_: Count = Field(alias="from")
    amount: MinorUnits


class PropertyFee(Base):
    """A recurring fee priced by subscription properties: `count_property` (e.g. sensors)
    times the amount of the band the `band_property` (e.g. measurements per hour) falls in."""

    id: Id
    count_property: Id
    band_property: Id
    bands: list[PropertyBand] = Field(min_length=1)
    period: Period = "month"

    @model_validator(mode="after")
    def _ordered(self) -> PropertyFee:
        starts = [b.from_ for b in self.bands]
        if any(b <= a for a, b in itertools.pairwise(starts)):
            raise ValueError("band 'from' values must be strictly increasing")
        return self


class OneTimeFee(Base):
    id: Id
    amount: MinorUnits
    charged_on: Literal["activation", "termination", "sim_swap", "plan_change"] = "activation"


class PlanVersion(Base):
    effective_from: AwareDatetime
    zone_set: Id
    time_bands: Id | None = None
    rounding: Rounding = Rounding.UP
    tax_profile: Id | None = None
    tariffs: list[Tariff] = Field(default_factory=list)
    allowances: list[Allowance] = Field(default_factory=list)
    recurring_fees: list[RecurringFee] = Field(default_factory=list)
    property_fees: list[PropertyFee] = Field(default_factory=list)
    one_time_fees: list[OneTimeFee] = Field(default_factory=list)


LimitAction = Literal["block", "redirect", "restrict", "notify"]
CAP_FIELDS: dict[str, tuple[ServiceKind, Literal["day", "month"]]] = {
    "data_day_bytes": (ServiceKind.DATA, "day"),
    "data_month_bytes": (ServiceKind.DATA, "month"),
    "sms_day": (ServiceKind.SMS, "day"),
    "sms_month": (ServiceKind.SMS, "month"),
    "events_day": (ServiceKind.EVENT, "day"),
    "events_month": (ServiceKind.EVENT, "month"),
}
"""Each cap of a SIM's limits: the service it counts and its period (local day or month of
the tenant's time zone). docs/limits.md."""
Cap = Annotated[int, Field(ge=0, le=10**15, strict=True)]
FilterId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Url = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]{1,1000}$")]


class Caps(Base):
    """Daily and monthly caps on data (bytes), SMS and events, and what happens at the cap:
    ``block`` (4012, no further grant), ``redirect`` (Final-Unit-Indication REDIRECT to
    ``redirect_url``), ``restrict`` (FUI RESTRICT_ACCESS with ``filter_ids``) or ``notify``
    (the usage goes on; only the "SIM limit reached" event)."""

    data_day_bytes: Cap | None = None
    data_month_bytes: Cap | None = None
    sms_day: Cap | None = None
    sms_month: Cap | None = None
    events_day: Cap | None = None
    events_month: Cap | None = None
    action: LimitAction = "block"
    redirect_url: Url | None = None
    filter_ids: list[FilterId] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _action(self) -> Caps:
        if (self.action == "redirect") != (self.redirect_url is not None):
            raise ValueError("action redirect needs redirect_url (and only it has one)")
        if (self.action == "restrict") != bool(self.filter_ids):
            raise ValueError("action restrict needs filter_ids (and only it has them)")
        return self

    def caps(self) -> dict[str, int]:
        """The caps set, by name (a key of :data:`CAP_FIELDS`)."""
        return {n: v for n in CAP_FIELDS if (v := getattr(self, n)) is not None}


class Limits(Caps):
    """A plan's default caps: every twin on the plan counts its own usage against them."""

    @model_validator(mode="after")
    def _some(self) -> Limits:
        if not self.caps():
            raise ValueError(f"give at least one cap ({', '.join(CAP_FIELDS)})")
        return self


class SimLimits(Caps):
    """One SIM's own caps (``sim_limits:`` in the catalogue, ``PUT /v1/subscriptions/{imsi}/
    limits``), in place of its plans' defaults: the caps here count the usage of every twin
    of the SIM; ``twins`` caps one twin's usage (both apply)."""

    imsi: Digits
    twins: dict[Id, Limits] = Field(default_factory=dict, max_length=32)

    @model_validator(mode="after")
    def _some(self) -> SimLimits:
        if not self.caps() and not self.twins:
            raise ValueError(f"give at least one cap ({', '.join(CAP_FIELDS)}) or twins")
        return self


class TestAllowance(Base):
    """What a SIM in state `test` may use free of charge (once in its life, never billed),
    and when it becomes active by itself: `never`, on its `first_use` (from then on it is
    charged as active), or once any part of the allowance is `exhausted` (docs/sim-states.md).
    """

    data_bytes: Count = 0
    sms: Count = 0
    voice_seconds: Count = 0
    events: Count = 0
    activate: Literal["never", "first_use", "exhausted"] = "never"


class Plan(Base):
    id: Id
    name: Name = ""
    currency: CurrencyCode
    versions: list[PlanVersion] = Field(min_length=1)
    limits: Limits | None = None
    """Default per-SIM caps of every twin on this plan (docs/limits.md)."""
    test_allowance: TestAllowance | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Plan:
        times = [v.effective_from for v in self.versions]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError("versions must be listed by strictly increasing effective_from")
        return self


class Addon(Base):
    """A top-off bundle sold when a pool or allowance runs out (data for the balance layer)."""

    id: Id
    name: Name = ""
    currency: CurrencyCode
    price: MinorUnits
    service: ServiceKind
    units: Positive
    validity_days: Positive = 30
    auto: bool = False
    max_per_period: Positive | None = None


class TaxProfile(Base):
    id: Id
    name: Name = ""
    rate_percent: Annotated[Decimal, Field(ge=0, le=100), BeforeValidator(_no_float)]


class SliceSpec(Base):
    sst: Annotated[int, Field(ge=0, le=255)]
    sd: Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{6}$")] | None = None


class FilterSpec(Base):
    """A SIM-twin rating filter. Every field given must hold (AND); `all`, `any` and `not`
    combine nested filters. An empty filter matches every usage."""

    apn: list[str] | None = None
    cidr: list[IPv4Network | IPv6Network] | None = None
    domain: list[str] | None = None
    region: list[Id] | None = None
    country: list[CountryCode] | None = None
    network: list[PlmnId] | None = None
    time: list[TimeWindow] | None = None
    rat: list[RatType] | None = None
    rating_group: list[Count] | None = None
    service_id: list[Count] | None = None
    slice: list[SliceSpec] | None = None
    qos_class: list[Count] | None = None
    service: list[ServiceKind] | None = None
    all_: list[FilterSpec] | None = Field(default=None, alias="all")
    any_: list[FilterSpec] | None = Field(default=None, alias="any")
    not_: FilterSpec | None = Field(default=None, alias="not")


class Payer(Base):
    kind: PayerKind
    id: Id


class PlanAssignment(Base):
    plan: Id
    from_: AwareDatetime = Field(alias="from")


def _check_history(plans: list[PlanAssignment]) -> None:
    for before, after in itertools.pairwise(plans):
        if after.from_ <= before.from_:
            raise ValueError("plan assignments must be listed by strictly increasing 'from'")


SimState = Literal["inventory", "test", "active", "suspended", "deactivated", "terminated"]
"""A SIM's lifecycle state (docs/sim-states.md): what it may do on the network and how it is
charged. The allowed transitions are `ocs.provisioning.states.TRANSITIONS`."""
SIM_STATES: tuple[str, ...] = (
    "inventory",
    "test",
    "active",
    "suspended",
    "deactivated",
    "terminated",
)
TwinStatus = Literal["active", "suspended", "terminated"]
"""A twin's own status (one virtual subscription suspended alone); the SIM's state rules
first."""


class Twin(Base):
    """One virtual subscription of a SIM: its filter, priority (lower wins), payer and plan
    history. `properties` are numbers that property-priced fees use (sensors, ...)."""

    id: Id
    priority: Count = 0
    filter: FilterSpec = Field(default_factory=FilterSpec)
    payer: Payer
    plans: list[PlanAssignment] = Field(min_length=1)
    properties: dict[Id, Count] = Field(default_factory=dict)
    status: TwinStatus = "active"

    @model_validator(mode="after")
    def _ordered(self) -> Twin:
        _check_history(self.plans)
        return self


class Sim(Base):
    imsi: Digits
    msisdn: Digits | None = None
    iccid: Iccid | None = None
    account: Id
    time_zone: TimeZone | None = None
    twins: list[Twin] = Field(min_length=1)
    state: SimState | None = None
    """None (a catalogue of before lifecycle states): the twins' statuses tell it."""


class SimRange(Base):
    """`count` SIMs with consecutive IMSIs and MSISDNs sharing the same twins. `state` is
    every member's state but those named in `states` (IMSI -> state: a member moved on its
    own, e.g. activated out of an inventory range)."""

    id: Id
    imsi_first: Digits
    msisdn_first: Digits | None = None
    count: Annotated[int, Field(ge=1, le=10_000_000, strict=True)]
    account: Id
    time_zone: TimeZone | None = None
    twins: list[Twin] = Field(min_length=1)
    state: SimState | None = None
    states: dict[Digits, SimState] = Field(default_factory=dict)


class Account(Base):
    """An account in the hierarchy. `parent` None: a direct customer of the tenant. `plans`
    is the plan the parent charges this account on for all usage below it (wholesale), and
    `payer` pays those lines; both are needed only for accounts that are charged per usage."""

    id: Id
    name: Name = ""
    parent: Id | None = None
    kind: Literal["enterprise", "consumer", "reseller"] = "enterprise"
    payment: Literal["prepaid", "postpaid"] = "postpaid"
    currency: CurrencyCode = "EUR"
    tax_profile: Id | None = None
    accounting_group: str = ""
    bill_day: Annotated[int, Field(ge=1, le=28)] = 1
    time_zone: TimeZone | None = None
    plans: list[PlanAssignment] = Field(default_factory=list)
    payer: Payer | None = None
    invoice: InvoiceParty | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Account:
        _check_history(self.plans)
        return self

    @field_validator("invoice")
    @classmethod
    def _sells_only_as_reseller(
        cls, invoice: InvoiceParty | None, info: ValidationInfo
    ) -> InvoiceParty | None:
        """Payment data is a seller's: only a reseller issues invoices of its own (to its
        customers); on any other account it would be stored and never used."""
        kind = info.data.get("kind")
        if invoice is not None and kind not in (None, "reseller"):
            for name in SELLER_ONLY:
                if getattr(invoice, name) not in ("", None):
                    raise ValueError(
                        f"{name} is where buyers pay a seller, and only a reseller account"
                        f" sells (this one is {kind}); the tenant's own is the tenant's invoice"
                    )
        return invoice


class AutoTopOff(Base):
    """Buy `addon` automatically when a reservation on the pool cannot be met in full, at
    most `max_per_period` times a period (default: the add-on's own cap; none: no cap)."""

    addon: Id
    max_per_period: Positive | None = None


class Renewal(Base):
    """Renew the pool's allowance at the end of its period (`on: period_end`) or as soon as
    it is used up (`on: depleted`, which starts a new period). `fee` goes on the invoice or
    is debited from `wallet`; a fee the wallet cannot pay follows `on_failure` (see
    docs/lifecycle.md)."""

    on: Literal["period_end", "depleted"] = "period_end"
    fee: MinorUnits = 0
    charge_to: Literal["invoice", "wallet"] = "invoice"
    wallet: Id | None = None
    on_failure: Literal["suspend", "overage", "notify"] = "suspend"

    @model_validator(mode="after")
    def _wallet(self) -> Renewal:
        if (self.charge_to == "wallet") != (self.wallet is not None):
            raise ValueError("a renewal charged to a wallet names the wallet (and only then)")
        return self


class Thresholds(Base):
    """Balance thresholds of a pool or wallet (docs/webhooks.md): an event when the share
    used reaches each ``percent`` of the allowance, and when what is left falls to each
    ``absolute`` amount (units of the pool, minor units of a wallet); each once per period."""

    percent: list[Annotated[int, Field(ge=1, le=100)]] = Field(default_factory=list, max_length=10)
    absolute: list[Annotated[int, Field(ge=0, lt=2**53)]] = Field(
        default_factory=list, max_length=10
    )


class Pool(Base):
    id: Id
    name: Name = ""
    """What invoices call the pool (its id when none is given)."""
    account: Id
    kind: Literal["static", "flexible", "stacked", "adaptive"] = "static"
    payment: Literal["prepaid", "postpaid"] = "prepaid"
    service: ServiceKind = ServiceKind.DATA
    unit: Unit = Unit.BYTES
    size: Count
    credit_limit: MinorUnits | None = None
    period: Period = "month"
    tiers: list[Positive] = Field(default_factory=list)
    """adaptive: the sizes the pool steps up to after `size`, strictly increasing."""
    renewal: Renewal | None = None
    auto_top_off: AutoTopOff | None = None
    thresholds: Thresholds | None = None

    @model_validator(mode="after")
    def _tiers(self) -> Pool:
        if self.tiers and self.kind != "adaptive":
            raise ValueError("only adaptive pools have tiers")
        steps = [self.size, *self.tiers]
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("tiers must be strictly increasing and larger than size")
        return self


class Wallet(Base):
    id: Id
    account: Id
    currency: CurrencyCode
    balance: MinorUnits = 0
    thresholds: Thresholds | None = None


class Contract(Base):
    """An external contract: usage granted by policy, recorded, and billed elsewhere."""

    id: Id
    account: Id
    name: Name = ""


SECTIONS: dict[str, type[Base]] = {
    "countries": Country,
    "regions": Region,
    "zone_sets": ZoneSet,
    "time_bands": BandSet,
    "tax_profiles": TaxProfile,
    "plans": Plan,
    "addons": Addon,
    "accounts": Account,
    "pools": Pool,
    "wallets": Wallet,
    "contracts": Contract,
    "sims": Sim,
    "sim_ranges": SimRange,
    "sim_limits": SimLimits,
}
"""Top-level list sections of a catalogue file and the model of one item. A file may also
hold `tenant:` (one `Tenant`). Sections may be spread over any number of files."""


def parse_datetime(value: str) -> datetime:
    """Parse an ISO 8601 aware timestamp (helper for tools and tests)."""
    parsed = datetime.fromisoformat(value)
    if parsed.utcoffset() is None:
        raise ValueError(f"timestamp {value!r} has no UTC offset")
    return parsed
