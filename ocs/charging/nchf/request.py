"""A ChargingDataRequest (TS 32.291 6.1.6.2.1.1) as the charging core needs it, validated.

Only what charging reads is looked at, each field checked for its type and range; a field we
do not use is ignored as the spec allows (a consumer may send any of its many optional
fields). What is wrong is an :class:`InvalidRequest` naming the field (TS 29.571
``invalidParams``), answered 400 with a ProblemDetails.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Final, NamedTuple

import orjson

from ocs.balance.models import BucketUnit
from ocs.charging.usage import RatingInputs
from ocs.rating.context import RatType, Slice

UINT32: Final = 0xFFFFFFFF
UINT64: Final = 0xFFFFFFFFFFFFFFFF
MAX_UNITS: Final = 64  # multipleUnitUsage entries in one request
MAX_CONTAINERS: Final = 64  # usedUnitContainer entries in one multipleUnitUsage
MAX_DEPTH: Final = 32  # JSON nesting

# TS 29.571 RatType -> our RatType (named like the Diameter RAT-Type AVP, TS 29.212)
RAT_TYPES: Final = {
    "NR": RatType.NR,
    "NR_REDCAP": RatType.NR,
    "NR_U": RatType.NR,
    "EUTRA": RatType.EUTRAN,
    "EUTRA_U": RatType.EUTRAN,
    "WLAN": RatType.WLAN,
    "TRUSTED_WLAN": RatType.WLAN,
    "VIRTUAL": RatType.VIRTUAL,
    "NBIOT": RatType.NB_IOT,
    "LTE-M": RatType.LTE_M,
    "UTRA": RatType.UTRAN,
    "GERA": RatType.GERAN,
}


class InvalidRequest(Exception):
    """A field of the request is missing or wrong: 400 with ``invalidParams``."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UnitUsage:
    """One ``multipleUnitUsage``: a rating group's report and request (MSCC on Gy), in
    each unit kind it names: volume, ``time`` (seconds), ``serviceSpecificUnits``."""

    rating_group: int
    used: int  # bytes over every usedUnitContainer (totalVolume, else uplink + downlink)
    requested: int | None  # requestedUnit.totalVolume (None: the default quota)
    wants_units: bool  # a requestedUnit is present (an RSU on Gy)
    final: bool  # a container reports the FINAL trigger (Reporting-Reason FINAL on Gy)
    service_id: int | None
    upf_id: str | None  # uPFID, echoed in the answer
    named: BucketUnit | None = None  # the unit the request names (see ``unit_named``)
    other: OtherUnits | None = None  # its time and service-specific units, if it has any

    def amounts(self, unit: BucketUnit) -> tuple[int | None, int]:
        """What it asks for (None: the default quota) and what it reports, in ``unit``."""
        if unit is BucketUnit.BYTES:
            return self.requested, self.used
        other = self.other or NO_OTHER_UNITS
        if unit is BucketUnit.SECONDS:
            return other.requested_time, other.used_time
        return other.requested_units, other.used_units


class OtherUnits(NamedTuple):
    """A multipleUnitUsage's ``time`` and ``serviceSpecificUnits`` (None: not asked for)."""

    used_time: int  # seconds over every usedUnitContainer
    used_units: int  # serviceSpecificUnits over every usedUnitContainer
    requested_time: int | None  # requestedUnit.time
    requested_units: int | None  # requestedUnit.serviceSpecificUnits


NO_OTHER_UNITS: Final = OtherUnits(0, 0, None, None)


@dataclass(frozen=True, slots=True)
class ChargingData:
    """A validated ChargingDataRequest."""

    sequence: int  # invocationSequenceNumber
    retransmission: bool  # retransmissionIndicator
    digest: str  # of the body: tells a retry from a new request that reuses a number
    timestamp: datetime  # invocationTimeStamp
    imsi: str
    msisdn: str | None
    notify_uri: str | None
    consumer: str  # nfConsumerIdentification: nFName, else nodeFunctionality
    units: tuple[UnitUsage, ...]
    apn: str | None
    mcc: str | None
    mnc: str | None
    rat_type: RatType
    ue_ip: IPv4Address | IPv6Address | None
    qos_class: int | None
    slice: Slice | None

    def context(self) -> dict[str, Any]:
        """The session's rating context (what a later request may leave out), as JSON."""
        return {
            "apn": self.apn,
            "mcc": self.mcc,
            "mnc": self.mnc,
            "rat": str(self.rat_type),
            "ip": None if self.ue_ip is None else str(self.ue_ip),
            "qos": self.qos_class,
            "sst": None if self.slice is None else self.slice.sst,
            "sd": None if self.slice is None else self.slice.sd,
        }

    def completed(self, context: dict[str, Any], imsi: str, msisdn: str | None) -> ChargingData:
        """This request as the resource's subscriber (``imsi``, ``msisdn``), with what it
        leaves out taken from the session's ``context`` (an update carries the PDU session
        information only when it changed). Built in one constructor call (two
        ``dataclasses.replace`` cost ~10 us a request)."""
        unknown = self.rat_type is RatType.UNKNOWN
        mcc, mnc = (self.mcc, self.mnc) if self.mcc else (context.get("mcc"), context.get("mnc"))
        slice_ = self.slice
        if slice_ is None and context.get("sst") is not None:
            slice_ = Slice(int(context["sst"]), context.get("sd"))
        ip = self.ue_ip
        if ip is None and context.get("ip"):
            ip = ip_address(context["ip"])
        return ChargingData(
            sequence=self.sequence,
            retransmission=self.retransmission,
            digest=self.digest,
            timestamp=self.timestamp,
            imsi=imsi,
            msisdn=msisdn,
            notify_uri=self.notify_uri,
            consumer=self.consumer,
            units=self.units,
            apn=self.apn or context.get("apn"),
            mcc=mcc,
            mnc=mnc,
            rat_type=RatType(context.get("rat", "UNKNOWN")) if unknown else self.rat_type,
            ue_ip=ip,
            qos_class=self.qos_class if self.qos_class is not None else context.get("qos"),
            slice=slice_,
        )

    def inputs(self, unit: UnitUsage | None) -> RatingInputs:
        """What rating reads of this request and one of its rating groups."""
        return RatingInputs(
            imsi=self.imsi,
            msisdn=self.msisdn,
            event_time=self.timestamp,
            apn=self.apn,
            rating_group=unit.rating_group if unit is not None else None,
            service_id=unit.service_id if unit is not None else None,
            mcc=self.mcc,
            mnc=self.mnc,
            rat_type=self.rat_type,
            ue_ip=self.ue_ip,
            qos_class=self.qos_class,
            slice=self.slice,
        )


def parse(body: bytes) -> ChargingData:
    """The request of a JSON body; raises :class:`InvalidRequest`."""
    try:
        doc = orjson.loads(body)  # RFC 8259 strictly: no NaN, no lone surrogates
    except orjson.JSONDecodeError as exc:  # also nesting beyond orjson's 1,024 levels
        raise InvalidRequest("body", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("body", "not a JSON object (a ChargingDataRequest)")
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH:  # fewer cannot nest deeper
        _depth(doc, 0)
    sequence = _int(doc, "invocationSequenceNumber", "/invocationSequenceNumber", UINT32)
    if sequence is None:
        raise InvalidRequest("/invocationSequenceNumber", "required")
    stamp = doc.get("invocationTimeStamp")
    if stamp is None:
        raise InvalidRequest("/invocationTimeStamp", "required")
    timestamp = _datetime(stamp, "/invocationTimeStamp")
    consumer = _obj(doc, "nfConsumerIdentification", "/nfConsumerIdentification")
    if consumer is None:
        raise InvalidRequest("/nfConsumerIdentification", "required")
    node = _str(consumer, "nodeFunctionality", "/nfConsumerIdentification/nodeFunctionality")
    if node is None:
        raise InvalidRequest("/nfConsumerIdentification/nodeFunctionality", "required")
    name = _str(consumer, "nFName", "/nfConsumerIdentification/nFName")
    imsi, msisdn = _subscriber(doc)
    notify = _str(doc, "notifyUri", "/notifyUri")
    if notify is not None and not notify.startswith(("http://", "https://")):
        raise InvalidRequest("/notifyUri", "not an http or https URI")
    pdu = _obj(doc, "pDUSessionChargingInformation", "/pDUSessionChargingInformation") or {}
    info = _obj(
        pdu, "pduSessionInformation", "/pDUSessionChargingInformation/pduSessionInformation"
    )
    info = info or {}
    where = "/pDUSessionChargingInformation/pduSessionInformation"
    user = _obj(pdu, "userInformation", "/pDUSessionChargingInformation/userInformation") or {}
    if msisdn is None:
        gpsi = _str(user, "servedGPSI", "/pDUSessionChargingInformation/userInformation/servedGPSI")
        if gpsi is not None and gpsi.startswith("msisdn-"):
            msisdn = gpsi.removeprefix("msisdn-")
    mcc, mnc = _plmn(pdu, info)
    rat = _str(info, "ratType", f"{where}/ratType")
    retransmission = doc.get("retransmissionIndicator") is True
    return ChargingData(
        sequence=sequence,
        retransmission=retransmission,
        digest=hashlib.sha256(body).hexdigest()[:32],
        timestamp=timestamp,
        imsi=imsi or "",
        msisdn=msisdn,
        notify_uri=notify,
        consumer=name or node,
        units=_units(doc),
        apn=_str(info, "dnnId", f"{where}/dnnId"),
        mcc=mcc,
        mnc=mnc,
        rat_type=RAT_TYPES.get(rat, RatType.UNKNOWN) if rat else RatType.UNKNOWN,
        ue_ip=_ue_ip(info, where),
        qos_class=_qos(info, where),
        slice=_slice(info, where),
    )


def _subscriber(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    """subscriberIdentifier: a SUPI ``imsi-<digits>``, or (what some consumers send) a GPSI
    ``msisdn-<digits>``."""
    value = _str(doc, "subscriberIdentifier", "/subscriberIdentifier")
    if value is None:
        return None, None
    kind, _, digits = value.partition("-")
    if not digits.isdigit() or not 5 <= len(digits) <= 15:
        raise InvalidRequest("/subscriberIdentifier", "expected imsi-<5-15 digits>")
    if kind == "imsi":
        return digits, None
    if kind == "msisdn":
        return None, digits
    raise InvalidRequest("/subscriberIdentifier", "expected imsi-<digits> or msisdn-<digits>")


def _units(doc: dict[str, Any]) -> tuple[UnitUsage, ...]:
    raw = doc.get("multipleUnitUsage")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest("/multipleUnitUsage", "not an array")
    if len(raw) > MAX_UNITS:
        raise InvalidRequest("/multipleUnitUsage", f"more than {MAX_UNITS} entries")
    units: list[UnitUsage] = []
    seen: set[int] = set()
    for i, item in enumerate(raw):
        where = f"/multipleUnitUsage/{i}"
        if not isinstance(item, dict):
            raise InvalidRequest(where, "not an object")
        rg = _int(item, "ratingGroup", f"{where}/ratingGroup", UINT32)
        if rg is None:
            raise InvalidRequest(f"{where}/ratingGroup", "required")
        if rg in seen:
            raise InvalidRequest(f"{where}/ratingGroup", f"rating group {rg} given twice")
        seen.add(rg)
        requested = requested_time = requested_units = None
        asked = _obj(item, "requestedUnit", f"{where}/requestedUnit")
        if asked is not None:
            requested = _volume(asked, f"{where}/requestedUnit")
            if "time" in asked:  # (looked at only when there: the volume path stays as cheap)
                requested_time = _int(asked, "time", f"{where}/requestedUnit/time", UINT32)
            if "serviceSpecificUnits" in asked:
                at = f"{where}/requestedUnit/serviceSpecificUnits"
                requested_units = _int(asked, "serviceSpecificUnits", at, UINT64)
        used = used_time = used_units = 0
        volume_seen = time_seen = units_seen = False
        final = False
        service_id = None
        containers = item.get("usedUnitContainer", [])
        if not isinstance(containers, list):
            raise InvalidRequest(f"{where}/usedUnitContainer", "not an array")
        if len(containers) > MAX_CONTAINERS:
            raise InvalidRequest(f"{where}/usedUnitContainer", f"more than {MAX_CONTAINERS}")
        for j, container in enumerate(containers):
            cw = f"{where}/usedUnitContainer/{j}"
            if not isinstance(container, dict):
                raise InvalidRequest(cw, "not an object")
            if _int(container, "localSequenceNumber", f"{cw}/localSequenceNumber", UINT32) is None:
                raise InvalidRequest(f"{cw}/localSequenceNumber", "required")
            volume = _volume(container, cw)
            if volume is not None:
                used += volume
                volume_seen = True
            if "time" in container:
                seconds = _int(container, "time", f"{cw}/time", UINT32)
                if seconds is not None:
                    used_time += seconds
                    time_seen = True
            if "serviceSpecificUnits" in container:
                at = f"{cw}/serviceSpecificUnits"
                count = _int(container, "serviceSpecificUnits", at, UINT64)
                if count is not None:
                    used_units += count
                    units_seen = True
            sid = _int(container, "serviceId", f"{cw}/serviceId", UINT32)
            service_id = sid if service_id is None else service_id
            final = final or _has_trigger(container, "FINAL", f"{cw}/triggers")
        other = None
        if time_seen or units_seen or requested_time is not None or requested_units is not None:
            other = OtherUnits(used_time, used_units, requested_time, requested_units)
        if requested is not None or (volume_seen and other is None):
            named: BucketUnit | None = BucketUnit.BYTES  # the volume path, decided at once
        else:
            reported = (volume_seen, time_seen, units_seen)
            named = unit_named(requested, requested_time, requested_units, reported)
        units.append(
            UnitUsage(
                rating_group=rg,
                used=used,
                requested=requested,
                wants_units=asked is not None,
                final=final,
                service_id=service_id,
                upf_id=_str(item, "uPFID", f"{where}/uPFID"),
                named=named,
                other=other,
            )
        )
    return tuple(units)


def unit_named(
    volume: int | None, time: int | None, units: int | None, reported: tuple[bool, bool, bool]
) -> BucketUnit | None:
    """The unit a multipleUnitUsage names: the requestedUnit's (volume, else ``time``, else
    ``serviceSpecificUnits``), else what its containers report, in that order (volume first:
    an SMF may report a data flow's duration beside its volume); None: it names none (an
    empty requestedUnit, no units reported)."""
    if volume is not None:
        return BucketUnit.BYTES
    if time is not None:
        return BucketUnit.SECONDS
    if units is not None:
        return BucketUnit.EVENTS
    kinds = (BucketUnit.BYTES, BucketUnit.SECONDS, BucketUnit.EVENTS)
    return next((unit for unit, seen in zip(kinds, reported, strict=True) if seen), None)


def _volume(doc: dict[str, Any], where: str) -> int | None:
    """totalVolume, else uplinkVolume + downlinkVolume (CC-Total-Octets, else input +
    output, as on Gy); None when none is given."""
    total = _int(doc, "totalVolume", f"{where}/totalVolume", UINT64)
    if total is not None:
        return total
    up = _int(doc, "uplinkVolume", f"{where}/uplinkVolume", UINT64)
    down = _int(doc, "downlinkVolume", f"{where}/downlinkVolume", UINT64)
    if up is None and down is None:
        return None
    return (up or 0) + (down or 0)


def _has_trigger(doc: dict[str, Any], kind: str, where: str) -> bool:
    triggers = doc.get("triggers", [])
    if not isinstance(triggers, list):
        raise InvalidRequest(where, "not an array")
    return any(isinstance(t, dict) and t.get("triggerType") == kind for t in triggers)


def _plmn(pdu: dict[str, Any], info: dict[str, Any]) -> tuple[str | None, str | None]:
    """The visited network: the TAI of the NR (else E-UTRA) user location, else the serving
    core network's PLMN (servingCNPlmnId)."""
    where = "/pDUSessionChargingInformation/userLocationinfo"
    location = _obj(pdu, "userLocationinfo", where) or {}
    for kind in ("nrLocation", "eutraLocation"):
        loc = _obj(location, kind, f"{where}/{kind}")
        tai = _obj(loc, "tai", f"{where}/{kind}/tai") if loc else None
        plmn = _obj(tai, "plmnId", f"{where}/{kind}/tai/plmnId") if tai else None
        if plmn:
            return _mcc_mnc(plmn, f"{where}/{kind}/tai/plmnId")
    cn = _obj(info, "servingCNPlmnId", "/pDUSessionChargingInformation/pduSessionInformation")
    if cn:
        return _mcc_mnc(cn, "/pDUSessionChargingInformation/pduSessionInformation/servingCNPlmnId")
    return None, None


def _mcc_mnc(plmn: dict[str, Any], where: str) -> tuple[str, str]:
    mcc, mnc = plmn.get("mcc"), plmn.get("mnc")
    if not (isinstance(mcc, str) and len(mcc) == 3 and mcc.isdigit()):
        raise InvalidRequest(f"{where}/mcc", "expected 3 digits")
    if not (isinstance(mnc, str) and len(mnc) in (2, 3) and mnc.isdigit()):
        raise InvalidRequest(f"{where}/mnc", "expected 2 or 3 digits")
    return mcc, mnc


def _ue_ip(info: dict[str, Any], where: str) -> IPv4Address | IPv6Address | None:
    address = _obj(info, "pduAddress", f"{where}/pduAddress")
    if not address:
        return None
    for name in ("pduIPv4Address", "pduIPv6AddresswithPrefix"):
        text = _str(address, name, f"{where}/pduAddress/{name}")
        if text is not None:
            try:
                return ip_address(text.partition("/")[0])
            except ValueError:
                raise InvalidRequest(f"{where}/pduAddress/{name}", "not an IP address") from None
    return None


def _qos(info: dict[str, Any], where: str) -> int | None:
    qos = _obj(info, "authorizedQoSInformation", f"{where}/authorizedQoSInformation")
    if not qos:
        return None
    return _int(qos, "5qi", f"{where}/authorizedQoSInformation/5qi", 255)


def _slice(info: dict[str, Any], where: str) -> Slice | None:
    slicing = _obj(info, "networkSlicingInfo", f"{where}/networkSlicingInfo")
    if not slicing:
        return None
    at = f"{where}/networkSlicingInfo/sNSSAI"
    snssai = _obj(slicing, "sNSSAI", at)
    if snssai is None:
        raise InvalidRequest(at, "required")
    sst = _int(snssai, "sst", f"{at}/sst", 255)
    if sst is None:
        raise InvalidRequest(f"{at}/sst", "required")
    sd = _str(snssai, "sd", f"{at}/sd")
    if sd is None:
        return Slice(sst)
    if len(sd) != 6:
        raise InvalidRequest(f"{at}/sd", "expected 6 hexadecimal digits")
    try:
        return Slice(sst, int(sd, 16))
    except ValueError:
        raise InvalidRequest(f"{at}/sd", "expected 6 hexadecimal digits") from None


def _datetime(value: object, where: str) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidRequest(where, "expected a date-time (RFC 3339)")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(where, "expected a date-time (RFC 3339)") from None
    if at.utcoffset() is None:
        raise InvalidRequest(where, "a date-time needs its time zone (Z or +hh:mm)")
    return at


def _obj(doc: dict[str, Any], name: str, where: str) -> dict[str, Any] | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(where if where.endswith(name) else f"{where}/{name}", "not an object")
    return value


def _str(doc: dict[str, Any], name: str, where: str, limit: int = 1024) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidRequest(where, f"expected a string of at most {limit} characters")
    return value


def _int(doc: dict[str, Any], name: str, where: str, limit: int) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise InvalidRequest(where, f"expected an integer from 0 to {limit}")
    return value


def _depth(value: dict[str, Any] | list[Any], level: int) -> None:
    """Raises when a value sits deeper than MAX_DEPTH (only objects and arrays are walked)."""
    if value and level >= MAX_DEPTH:
        raise InvalidRequest("body", f"nested deeper than {MAX_DEPTH}")
    for item in value.values() if isinstance(value, dict) else value:
        if isinstance(item, dict | list):
            _depth(item, level + 1)
