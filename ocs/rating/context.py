"""The usage context: everything rating needs to know about one usage, built from a CCR.

The charging layer builds a `UsageContext` from a CCR (or the offline path from a CDR) and hands
it to `ocs.rating.engine`. Rating never looks at Diameter; it only reads these fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address


class RatType(StrEnum):
    """Radio access technology, named like the Diameter RAT-Type AVP (TS 29.212 5.3.31)."""

    UTRAN = "UTRAN"
    GERAN = "GERAN"
    WLAN = "WLAN"
    GAN = "GAN"
    HSPA_EVOLUTION = "HSPA_EVOLUTION"
    EUTRAN = "EUTRAN"
    VIRTUAL = "VIRTUAL"
    NB_IOT = "NB_IOT"
    LTE_M = "LTE_M"
    NR = "NR"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def from_3gpp_rat_type(cls, value: int) -> RatType:
        """Map the 3GPP-RAT-Type octet (TS 29.061 16.4.7.2, same codes as TS 29.274 8.17)."""
        return _GTP_RAT.get(value, cls.UNKNOWN)

    @classmethod
    def from_rat_type_avp(cls, value: int) -> RatType:
        """Map the Diameter RAT-Type AVP (code 1032, TS 29.212) enumerated value."""
        return _AVP_RAT.get(value, cls.UNKNOWN)


_GTP_RAT: dict[int, RatType] = {
    1: RatType.UTRAN,
    2: RatType.GERAN,
    3: RatType.WLAN,
    4: RatType.GAN,
    5: RatType.HSPA_EVOLUTION,
    6: RatType.EUTRAN,
    7: RatType.VIRTUAL,
    8: RatType.NB_IOT,
    9: RatType.LTE_M,
    10: RatType.NR,
}

_AVP_RAT: dict[int, RatType] = {
    0: RatType.WLAN,
    1: RatType.VIRTUAL,
    1000: RatType.UTRAN,
    1001: RatType.GERAN,
    1002: RatType.GAN,
    1003: RatType.HSPA_EVOLUTION,
    1004: RatType.EUTRAN,
    1005: RatType.NB_IOT,
    1006: RatType.NR,
    1007: RatType.LTE_M,
}


class ServiceKind(StrEnum):
    """What is being used; tariffs are keyed by zone x service kind."""

    DATA = "data"
    SMS = "sms"
    VOICE = "voice"
    EVENT = "event"


class Unit(StrEnum):
    """The unit a quantity is counted in; each service kind has exactly one."""

    BYTES = "bytes"
    MESSAGES = "messages"
    SECONDS = "seconds"
    EVENTS = "events"


SERVICE_UNIT: dict[ServiceKind, Unit] = {
    ServiceKind.DATA: Unit.BYTES,
    ServiceKind.SMS: Unit.MESSAGES,
    ServiceKind.VOICE: Unit.SECONDS,
    ServiceKind.EVENT: Unit.EVENTS,
}


@dataclass(frozen=True, slots=True)
class Slice:
    """A 5G S-NSSAI: slice/service type and optional slice differentiator (24 bits)."""

    sst: int
    sd: int | None = None


@dataclass(frozen=True, slots=True)
class UsageContext:
    """One usage (or one request for quota) as rating sees it.

    `event_time` must be timezone aware; rating converts it to the subscriber's time zone.
    `mcc`/`mnc` are the visited network (None: the SIM is at home). `quantity` is counted in
    `unit`, which must be the unit of `service` (bytes for data, seconds for voice, ...).
    """

    tenant: str
    imsi: str
    event_time: datetime
    service: ServiceKind = ServiceKind.DATA
    quantity: int = 0
    msisdn: str | None = None
    apn: str | None = None
    rating_group: int | None = None
    service_id: int | None = None
    mcc: str | None = None
    mnc: str | None = None
    rat_type: RatType = RatType.UNKNOWN
    ue_ip: IPAddress | None = None
    destination_ip: IPAddress | None = None
    domain: str | None = None
    slice: Slice | None = None
    qos_class: int | None = None
    unit: Unit | None = None

    def __post_init__(self) -> None:
        if self.event_time.utcoffset() is None:
            raise ValueError("UsageContext.event_time must be timezone aware")
        if self.quantity < 0:
            raise ValueError("UsageContext.quantity must not be negative")
        if self.unit is not None and self.unit is not SERVICE_UNIT[self.service]:
            raise ValueError(f"unit {self.unit} does not fit service {self.service}")

    @property
    def plmn(self) -> str | None:
        """Visited network as MCC+MNC ("26201"), or None when not known."""
        if self.mcc is None or self.mnc is None:
            return None
        return self.mcc + self.mnc
