"""Build CCR messages with our codec, the way a PGW/SMF sends them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import count

from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Avp, Message, avp, build_message, grouped, i32, text, u32, u64
from ocs.diameter.constants import Application, Command, SubscriptionIdType

_ids = count(1)

# (rating group, requested octets or None for an empty RSU / no RSU when -1, used octets)
MsccSpec = tuple[int, int | None, int]


def _mscc(
    rg: int, requested: int | None, used: int, *, units: bool = False, time: bool = False
) -> Avp:
    """``units``: in CC-Service-Specific-Units, ``time``: in CC-Time, else CC-Total-Octets."""
    kids: list[Avp] = []

    def amount(value: int) -> Avp:
        if time:
            return u32(A.AVP_CC_TIME, value)
        return u64(A.AVP_CC_SERVICE_SPECIFIC_UNITS if units else A.AVP_CC_TOTAL_OCTETS, value)

    if requested is None:
        kids.append(grouped(A.AVP_REQUESTED_SERVICE_UNIT, []))
    elif requested >= 0:
        kids.append(grouped(A.AVP_REQUESTED_SERVICE_UNIT, [amount(requested)]))
    if used:
        kids.append(grouped(A.AVP_USED_SERVICE_UNIT, [amount(used)]))
    kids.append(u32(A.AVP_RATING_GROUP, rg))
    return grouped(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, kids)


def build_ccr(
    session_id: str,
    *,
    request_type: int,
    number: int,
    imsi: str | None = None,
    msisdn: str | None = None,
    msccs: Sequence[MsccSpec] = (),
    apn: str | None = "iot.demo",
    sgsn_mcc_mnc: str | None = None,
    rat_type: int | None = None,
    requested_action: int | None = None,
    units: bool = False,
    time: bool = False,
    service_context: str = "32251@3gpp.org",
    retransmit: bool = False,
    when: datetime | None = None,
    sms_recipient: str | None = None,
    origin_host: str = "pgw.test",
    stamped: bool = True,
) -> Message:
    avps: list[Avp] = [
        text(A.AVP_SESSION_ID, session_id),
        text(A.AVP_ORIGIN_HOST, origin_host),
        text(A.AVP_ORIGIN_REALM, "test"),
        text(A.AVP_DESTINATION_REALM, "local"),
        u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
        text(A.AVP_SERVICE_CONTEXT_ID, service_context),
        i32(A.AVP_CC_REQUEST_TYPE, request_type),
        u32(A.AVP_CC_REQUEST_NUMBER, number),
    ]
    if stamped:  # Event-Timestamp is optional (RFC 4006 8.38): some gateways send none
        avps.append(avp(A.AVP_EVENT_TIMESTAMP, when or datetime.now(UTC)))
    if requested_action is not None:
        avps.append(i32(A.AVP_REQUESTED_ACTION, requested_action))
    for kind, data in (
        (SubscriptionIdType.END_USER_E164, msisdn),
        (SubscriptionIdType.END_USER_IMSI, imsi),
    ):
        if data is not None:
            avps.append(
                grouped(
                    A.AVP_SUBSCRIPTION_ID,
                    [i32(A.AVP_SUBSCRIPTION_ID_TYPE, kind), text(A.AVP_SUBSCRIPTION_ID_DATA, data)],
                )
            )
    avps.append(u32(A.AVP_MULTIPLE_SERVICES_INDICATOR, 1))
    avps.extend(_mscc(rg, req, used, units=units, time=time) for rg, req, used in msccs)
    ps: list[Avp] = []
    if sgsn_mcc_mnc is not None:
        ps.append(text(A.AVP_3GPP_SGSN_MCC_MNC, sgsn_mcc_mnc))
    if rat_type is not None:
        ps.append(i32(A.AVP_RAT_TYPE, rat_type))
    if apn is not None:
        ps.append(text(A.AVP_CALLED_STATION_ID, apn))
    info: list[Avp] = []
    if ps:
        info.append(grouped(A.AVP_PS_INFORMATION, ps))
    if sms_recipient is not None:
        address = grouped(A.AVP_RECIPIENT_ADDRESS, [text(A.AVP_ADDRESS_DATA, sms_recipient)])
        info.append(grouped(A.AVP_SMS_INFORMATION, [grouped(A.AVP_RECIPIENT_INFO, [address])]))
    if info:
        avps.append(grouped(A.AVP_SERVICE_INFORMATION, info))
    hop = next(_ids)
    msg = build_message(
        Command.CREDIT_CONTROL, Application.CREDIT_CONTROL, avps, hbh_id=hop, e2e_id=hop
    )
    if retransmit:
        msg.flags |= 0x10
    return msg
