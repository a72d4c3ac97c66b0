"""Typed, lazy views over a Credit-Control-Request and builders for the answer (RFC 4006/8506,
3GPP TS 32.299). Pure message access: no charging logic, no I/O.

A view reads AVPs on attribute access (values are decoded by the codec on first read), so a
handler pays only for the fields it looks at.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address

from . import avp_codes as A
from .answers import Identity, make_answer
from .codec import Avp, Message, avp, grouped, i32, text, u32, u64
from .constants import (
    FLAG_ERROR,
    FinalUnitAction,
    RedirectAddressType,
    SubscriptionIdType,
    is_protocol_error,
)
from .errors import InvalidAvpValue, MissingAvp

IPAddress = IPv4Address | IPv6Address


def _req(msg: Message, key: int, what: str) -> Avp:
    found = msg.find(key)
    if found is None:
        raise MissingAvp(f"{what} missing", Avp(key, 0, b"\0\0\0\0"))
    return found


@dataclass(frozen=True, slots=True)
class SubscriptionId:
    type: int
    data: str


@dataclass(frozen=True, slots=True)
class UserEquipment:
    type: int
    value: bytes


class ServiceUnits:
    """Requested-, Used- or Granted-Service-Unit: octets, time and service-specific units."""

    __slots__ = ("avp",)

    def __init__(self, avp: Avp) -> None:
        self.avp = avp

    def _u(self, key: int) -> int | None:
        v = self.avp.get(key)
        return None if v is None else int(v)

    @property
    def total_octets(self) -> int | None:
        return self._u(A.AVP_CC_TOTAL_OCTETS)

    @property
    def input_octets(self) -> int | None:
        return self._u(A.AVP_CC_INPUT_OCTETS)

    @property
    def output_octets(self) -> int | None:
        return self._u(A.AVP_CC_OUTPUT_OCTETS)

    @property
    def time(self) -> int | None:
        return self._u(A.AVP_CC_TIME)

    @property
    def service_specific_units(self) -> int | None:
        return self._u(A.AVP_CC_SERVICE_SPECIFIC_UNITS)

    @property
    def octets(self) -> int | None:
        """Total octets, else input + output when either is given."""
        total = self.total_octets
        if total is not None:
            return total
        i, o = self.input_octets, self.output_octets
        if i is None and o is None:
            return None
        return (i or 0) + (o or 0)

    @property
    def reporting_reason(self) -> int | None:
        return self._u(A.AVP_3GPP_REPORTING_REASON)

    @property
    def empty(self) -> bool:
        """An RSU with no member: "give me the default quota" (RFC 4006 8.18)."""
        return not self.avp.children


class MultipleServicesCreditControl:
    """One MSCC of a CCR: a rating group (and/or service ids) with its RSU and USUs."""

    __slots__ = ("avp",)

    def __init__(self, avp: Avp) -> None:
        self.avp = avp

    @property
    def rating_group(self) -> int | None:
        v = self.avp.get(A.AVP_RATING_GROUP)
        return None if v is None else int(v)

    @property
    def service_identifiers(self) -> list[int]:
        return [int(a.value) for a in self.avp.find_all(A.AVP_SERVICE_IDENTIFIER)]

    @property
    def requested(self) -> ServiceUnits | None:
        found = self.avp.find(A.AVP_REQUESTED_SERVICE_UNIT)
        return None if found is None else ServiceUnits(found)

    @property
    def used(self) -> list[ServiceUnits]:
        return [ServiceUnits(a) for a in self.avp.find_all(A.AVP_USED_SERVICE_UNIT)]

    def used_total(self, unit: str) -> int:
        """The sum over every USU of one unit: "octets", "time" or "units"."""
        total = 0
        for usu in self.used:
            value = (
                usu.octets
                if unit == "octets"
                else usu.time
                if unit == "time"
                else usu.service_specific_units
            )
            total += value or 0
        return total

    @property
    def reporting_reason(self) -> int | None:
        v = self.avp.get(A.AVP_3GPP_REPORTING_REASON)
        if v is None:
            for usu in self.used:
                if (reason := usu.reporting_reason) is not None:
                    return reason
            return None
        return int(v)


class PsInformation:
    """PS-Information (TS 32.299 7.2.158): the packet core's view of the bearer."""

    __slots__ = ("avp",)

    def __init__(self, avp: Avp) -> None:
        self.avp = avp

    @property
    def sgsn_mcc_mnc(self) -> str | None:
        v = self.avp.get(A.AVP_3GPP_SGSN_MCC_MNC)
        return None if v is None else str(v)

    @property
    def user_location_info(self) -> bytes | None:
        v = self.avp.get(A.AVP_3GPP_USER_LOCATION_INFO)
        return None if v is None else bytes(v)

    @property
    def threegpp_rat_type(self) -> int | None:
        """The 3GPP-RAT-Type octet."""
        v = self.avp.get(A.AVP_3GPP_RAT_TYPE)
        return v[0] if isinstance(v, bytes) and v else None

    @property
    def rat_type(self) -> int | None:
        v = self.avp.get(A.AVP_RAT_TYPE)
        return None if v is None else int(v)

    @property
    def called_station_id(self) -> str | None:
        """The APN."""
        v = self.avp.get(A.AVP_CALLED_STATION_ID)
        return None if v is None else str(v)

    @property
    def charging_id(self) -> int | None:
        v = self.avp.get(A.AVP_3GPP_CHARGING_ID)
        return None if v is None else int(v)

    @property
    def pdp_addresses(self) -> list[IPAddress]:
        out: list[IPAddress] = []
        for a in self.avp.find_all(A.AVP_PDP_ADDRESS):
            v = a.value
            if isinstance(v, IPv4Address | IPv6Address):
                out.append(v)
        return out

    @property
    def qos_class(self) -> int | None:
        qos = self.avp.find(A.AVP_QOS_INFORMATION)
        v = None if qos is None else qos.get(A.AVP_QOS_CLASS_IDENTIFIER)
        return None if v is None else int(v)


class SmsInformation:
    """SMS-Information (TS 32.299 7.2.193)."""

    __slots__ = ("avp",)

    def __init__(self, avp: Avp) -> None:
        self.avp = avp

    @property
    def recipients(self) -> list[str]:
        out: list[str] = []
        for info in self.avp.find_all(A.AVP_RECIPIENT_INFO):
            for addr in info.find_all(A.AVP_RECIPIENT_ADDRESS):
                data = addr.get(A.AVP_ADDRESS_DATA)
                if data is not None:
                    out.append(str(data))
        return out

    @property
    def smsc_address(self) -> IPAddress | None:
        v = self.avp.get(A.AVP_SMSC_ADDRESS)
        return v if isinstance(v, IPv4Address | IPv6Address) else None


class CreditControlRequest:
    """A lazy, typed view of a CCR message."""

    __slots__ = ("msg",)

    def __init__(self, msg: Message) -> None:
        self.msg = msg

    @property
    def session_id(self) -> str:
        return str(_req(self.msg, A.AVP_SESSION_ID, "Session-Id").value)

    @property
    def origin_host(self) -> str:
        return str(_req(self.msg, A.AVP_ORIGIN_HOST, "Origin-Host").value)

    @property
    def origin_realm(self) -> str:
        return str(_req(self.msg, A.AVP_ORIGIN_REALM, "Origin-Realm").value)

    @property
    def auth_application_id(self) -> int | None:
        v = self.msg.get(A.AVP_AUTH_APPLICATION_ID)
        return None if v is None else int(v)

    @property
    def service_context_id(self) -> str | None:
        v = self.msg.get(A.AVP_SERVICE_CONTEXT_ID)
        return None if v is None else str(v)

    @property
    def request_type(self) -> int:
        return int(_req(self.msg, A.AVP_CC_REQUEST_TYPE, "CC-Request-Type").value)

    @property
    def request_number(self) -> int:
        return int(_req(self.msg, A.AVP_CC_REQUEST_NUMBER, "CC-Request-Number").value)

    @property
    def requested_action(self) -> int | None:
        v = self.msg.get(A.AVP_REQUESTED_ACTION)
        return None if v is None else int(v)

    @property
    def event_timestamp(self) -> datetime | None:
        v = self.msg.get(A.AVP_EVENT_TIMESTAMP)
        return v if isinstance(v, datetime) else None

    @property
    def termination_cause(self) -> int | None:
        v = self.msg.get(A.AVP_TERMINATION_CAUSE)
        return None if v is None else int(v)

    @property
    def subscription_ids(self) -> list[SubscriptionId]:
        out: list[SubscriptionId] = []
        for sub in self.msg.find_all(A.AVP_SUBSCRIPTION_ID):
            kind = sub.get(A.AVP_SUBSCRIPTION_ID_TYPE)
            data = sub.get(A.AVP_SUBSCRIPTION_ID_DATA)
            if kind is not None and data is not None:
                out.append(SubscriptionId(int(kind), str(data)))
        return out

    def subscription(self, kind: SubscriptionIdType) -> str | None:
        for sub in self.subscription_ids:
            if sub.type == kind:
                return sub.data
        return None

    @property
    def imsi(self) -> str | None:
        return self.subscription(SubscriptionIdType.END_USER_IMSI)

    @property
    def msisdn(self) -> str | None:
        return self.subscription(SubscriptionIdType.END_USER_E164)

    @property
    def user_equipment(self) -> UserEquipment | None:
        ue = self.msg.find(A.AVP_USER_EQUIPMENT_INFO)
        if ue is None:
            return None
        kind = ue.get(A.AVP_USER_EQUIPMENT_INFO_TYPE)
        value = ue.get(A.AVP_USER_EQUIPMENT_INFO_VALUE)
        if kind is None or value is None:
            return None
        return UserEquipment(int(kind), bytes(value))

    @property
    def mscc(self) -> list[MultipleServicesCreditControl]:
        return [
            MultipleServicesCreditControl(a)
            for a in self.msg.find_all(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
        ]

    @property
    def _service_information(self) -> Avp | None:
        return self.msg.find(A.AVP_SERVICE_INFORMATION)

    @property
    def ps_information(self) -> PsInformation | None:
        si = self._service_information
        ps = None if si is None else si.find(A.AVP_PS_INFORMATION)
        return None if ps is None else PsInformation(ps)

    @property
    def sms_information(self) -> SmsInformation | None:
        si = self._service_information
        sms = None if si is None else si.find(A.AVP_SMS_INFORMATION)
        return None if sms is None else SmsInformation(sms)

    @property
    def apn(self) -> str | None:
        """Called-Station-Id from PS-Information, else at the top level (some gateways)."""
        ps = self.ps_information
        if ps is not None and (apn := ps.called_station_id) is not None:
            return apn
        v = self.msg.get(A.AVP_CALLED_STATION_ID)
        return None if v is None else str(v)

    def echo_avps(self) -> list[Avp]:
        """Auth-Application-Id, CC-Request-Type and CC-Request-Number for any CCA, as far as
        the request has them (for error answers to malformed requests)."""
        out: list[Avp] = [u32(A.AVP_AUTH_APPLICATION_ID, self.auth_application_id or 4)]
        for key in (A.AVP_CC_REQUEST_TYPE, A.AVP_CC_REQUEST_NUMBER):
            found = self.msg.find(key)
            if found is not None:
                out.append(found)
        return out


# -- answer builders -------------------------------------------------------------------------


def granted_service_unit(
    *,
    total_octets: int | None = None,
    input_octets: int | None = None,
    output_octets: int | None = None,
    time: int | None = None,
    service_specific_units: int | None = None,
) -> Avp:
    kids: list[Avp] = []
    if time is not None:
        kids.append(u32(A.AVP_CC_TIME, time))
    if total_octets is not None:
        kids.append(u64(A.AVP_CC_TOTAL_OCTETS, total_octets))
    if input_octets is not None:
        kids.append(u64(A.AVP_CC_INPUT_OCTETS, input_octets))
    if output_octets is not None:
        kids.append(u64(A.AVP_CC_OUTPUT_OCTETS, output_octets))
    if service_specific_units is not None:
        kids.append(u64(A.AVP_CC_SERVICE_SPECIFIC_UNITS, service_specific_units))
    return grouped(A.AVP_GRANTED_SERVICE_UNIT, kids)


@dataclass(frozen=True, slots=True)
class RedirectServer:
    address: str
    address_type: RedirectAddressType = RedirectAddressType.URL

    def avp(self) -> Avp:
        return grouped(
            A.AVP_REDIRECT_SERVER,
            [
                i32(A.AVP_REDIRECT_ADDRESS_TYPE, self.address_type),
                text(A.AVP_REDIRECT_SERVER_ADDRESS, self.address),
            ],
        )


def final_unit_indication(
    action: FinalUnitAction,
    *,
    redirect: RedirectServer | None = None,
    restriction_rules: Sequence[str] = (),
    filter_ids: Sequence[str] = (),
) -> Avp:
    """Final-Unit-Indication (RFC 4006 8.34): what the gateway does when the grant is used."""
    if action is FinalUnitAction.REDIRECT and redirect is None:
        raise InvalidAvpValue("REDIRECT needs a Redirect-Server")
    kids: list[Avp] = [i32(A.AVP_FINAL_UNIT_ACTION, action)]
    if action is FinalUnitAction.RESTRICT_ACCESS:
        kids.extend(text(A.AVP_RESTRICTION_FILTER_RULE, r) for r in restriction_rules)
        kids.extend(text(A.AVP_FILTER_ID, f) for f in filter_ids)
    if action is FinalUnitAction.REDIRECT and redirect is not None:
        kids.append(redirect.avp())
    return grouped(A.AVP_FINAL_UNIT_INDICATION, kids)


def mscc_answer(
    result_code: int,
    *,
    rating_group: int | None = None,
    service_identifiers: Iterable[int] = (),
    granted: Avp | None = None,
    validity_time: int | None = None,
    volume_quota_threshold: int | None = None,
    time_quota_threshold: int | None = None,
    quota_holding_time: int | None = None,
    final_unit: Avp | None = None,
    extra: Iterable[Avp] = (),
) -> Avp:
    """One Multiple-Services-Credit-Control of a CCA."""
    kids: list[Avp] = []
    if granted is not None:
        kids.append(granted)
    kids.extend(u32(A.AVP_SERVICE_IDENTIFIER, s) for s in service_identifiers)
    if rating_group is not None:
        kids.append(u32(A.AVP_RATING_GROUP, rating_group))
    if validity_time is not None:
        kids.append(u32(A.AVP_VALIDITY_TIME, validity_time))
    kids.append(u32(A.AVP_RESULT_CODE, result_code))
    if final_unit is not None:
        kids.append(final_unit)
    if time_quota_threshold is not None:
        kids.append(u32(A.AVP_TIME_QUOTA_THRESHOLD, time_quota_threshold))
    if volume_quota_threshold is not None:
        kids.append(u32(A.AVP_VOLUME_QUOTA_THRESHOLD, volume_quota_threshold))
    if quota_holding_time is not None:
        kids.append(u32(A.AVP_QUOTA_HOLDING_TIME, quota_holding_time))
    kids.extend(extra)
    return grouped(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, kids)


def credit_control_answer(
    request: Message,
    identity: Identity,
    result_code: int,
    *,
    msccs: Iterable[Avp] = (),
    extra: Iterable[Avp] = (),
) -> Message:
    """A CCA: Session-Id, Result-Code, Origin-*, Auth-Application-Id, CC-Request-Type and
    -Number echoed from the request, then the MSCCs and any other AVPs."""
    view = CreditControlRequest(request)
    avps = view.echo_avps()
    avps.extend(msccs)
    avps.extend(extra)
    return make_answer(request, identity, result_code, avps)


class CcaBuilder:
    """:func:`credit_control_answer` for one identity, byte for byte, with the AVPs that are
    the same in every answer (Origin-Host/-Realm, Auth-Application-Id 4, Result-Codes) built
    once: the per-CCR answer only allocates the message and its list."""

    __slots__ = ("_auth", "_origin", "_results")

    def __init__(self, identity: Identity) -> None:
        self._origin = identity.origin_avps()
        self._auth = u32(A.AVP_AUTH_APPLICATION_ID, 4)
        self._results: dict[int, Avp] = {}

    def answer(
        self,
        request: Message,
        result_code: int,
        msccs: Iterable[Avp] = (),
        extra: Iterable[Avp] = (),
    ) -> Message:
        answer = request.answer_header(FLAG_ERROR if is_protocol_error(result_code) else 0)
        out = answer.avps
        session = ctype = number = None
        app_id: object = None
        for a in request.avps:  # one pass for the four AVPs the answer echoes
            key = a.key
            if key == A.AVP_SESSION_ID:
                session = session or a
            elif key == A.AVP_CC_REQUEST_TYPE:
                ctype = ctype or a
            elif key == A.AVP_CC_REQUEST_NUMBER:
                number = number or a
            elif key == A.AVP_AUTH_APPLICATION_ID and app_id is None:
                app_id = a.value
        if session is not None:
            out.append(session)
        result = self._results.get(result_code)
        if result is None:
            result = self._results[result_code] = u32(A.AVP_RESULT_CODE, result_code)
        out.append(result)
        out.extend(self._origin)
        auth = int(app_id) if isinstance(app_id, int) else 0
        out.append(self._auth if auth in (0, 4) else u32(A.AVP_AUTH_APPLICATION_ID, auth))
        if ctype is not None:
            out.append(ctype)
        if number is not None:
            out.append(number)
        out.extend(msccs)
        out.extend(extra)
        return answer


def cost_information(amount: int, currency_code: int, exponent: int = -2) -> Avp:
    """Cost-Information (RFC 4006 8.7) for PRICE_ENQUIRY answers: amount x 10^exponent."""
    return grouped(
        A.AVP_COST_INFORMATION,
        [
            grouped(
                A.AVP_UNIT_VALUE,
                [avp(A.AVP_VALUE_DIGITS, amount), i32(A.AVP_EXPONENT, exponent)],
            ),
            u32(A.AVP_CURRENCY_CODE, currency_code),
        ],
    )


__all__ = [
    "CcaBuilder",
    "CreditControlRequest",
    "MultipleServicesCreditControl",
    "PsInformation",
    "RedirectServer",
    "ServiceUnits",
    "SmsInformation",
    "SubscriptionId",
    "UserEquipment",
    "cost_information",
    "credit_control_answer",
    "final_unit_indication",
    "granted_service_unit",
    "mscc_answer",
]
