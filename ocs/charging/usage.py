"""From a CCR and one MSCC to what rating and the balance store need: the usage context,
the unit, the payer's key and the money rate of the reservation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from ocs.balance.keys import payer_tag
from ocs.balance.models import BucketUnit
from ocs.diameter.constants import CcRequestType, SubscriptionIdType
from ocs.diameter.dcca import CreditControlRequest, MultipleServicesCreditControl
from ocs.rating.context import RatType, ServiceKind, Slice, UsageContext
from ocs.rating.engine import Resolution
from ocs.rating.models import Payer

SMS_SERVICE_CONTEXT = "32274@3gpp.org"

UNIT_OF: dict[ServiceKind, BucketUnit] = {
    ServiceKind.DATA: BucketUnit.BYTES,
    ServiceKind.SMS: BucketUnit.MESSAGES,
    ServiceKind.VOICE: BucketUnit.SECONDS,
    ServiceKind.EVENT: BucketUnit.EVENTS,
}

# the service a session's units are rated as: data by volume, voice by time, IoT events by
# service-specific units (SMS over a session is not a thing: SMS is a CCR-Event)
RATED_AS: dict[BucketUnit, ServiceKind] = {
    BucketUnit.BYTES: ServiceKind.DATA,
    BucketUnit.SECONDS: ServiceKind.VOICE,
    BucketUnit.EVENTS: ServiceKind.EVENT,
    BucketUnit.MESSAGES: ServiceKind.SMS,
}


def session_units(mscc: MultipleServicesCreditControl) -> tuple[BucketUnit, int | None, int]:
    """The unit of a session's MSCC, the units its RSU asks for (None: no RSU, an empty
    one, or one naming no unit: the default quota) and the units its USUs report. The unit
    is what the RSU names (CC-Total-Octets or input/output octets, else CC-Time, else
    CC-Service-Specific-Units), else what the USUs report in that order; an MSCC naming
    none is volume. Octets first: a data session's USU may carry its duration as well."""
    unit: BucketUnit | None = None
    requested: int | None = None
    rsu = mscc.requested
    if rsu is not None and not rsu.empty:
        if (value := rsu.octets) is not None:
            unit, requested = BucketUnit.BYTES, value
        elif (value := rsu.time) is not None:
            unit, requested = BucketUnit.SECONDS, value
        elif (value := rsu.service_specific_units) is not None:
            unit, requested = BucketUnit.EVENTS, value
    used = mscc.used
    if not used:
        return unit or BucketUnit.BYTES, requested, 0
    octets = [u.octets for u in used]
    if unit is None or unit is BucketUnit.BYTES:
        if unit is not None or any(v is not None for v in octets):
            return BucketUnit.BYTES, requested, sum(v or 0 for v in octets)
        if any(u.time is not None for u in used):
            unit = BucketUnit.SECONDS
        elif any(u.service_specific_units is not None for u in used):
            unit = BucketUnit.EVENTS
        else:
            return BucketUnit.BYTES, requested, 0
    if unit is BucketUnit.SECONDS:
        return unit, requested, sum(u.time or 0 for u in used)
    return unit, requested, sum(u.service_specific_units or 0 for u in used)


def service_of(ccr: CreditControlRequest) -> ServiceKind:
    """Sessions are data; events are SMS (SMS-Information or the SMS context) or IoT events."""
    if ccr.request_type != CcRequestType.EVENT_REQUEST:
        return ServiceKind.DATA
    context = ccr.service_context_id or ""
    if ccr.sms_information is not None or context.startswith(SMS_SERVICE_CONTEXT):
        return ServiceKind.SMS
    return ServiceKind.EVENT


def requested_units(mscc: MultipleServicesCreditControl, unit: BucketUnit) -> int | None:
    """What the RSU asks for in ``unit`` (None: no RSU or an empty one: the default quota)."""
    rsu = mscc.requested
    if rsu is None or rsu.empty:
        return None
    if unit is BucketUnit.BYTES:
        return rsu.octets
    if unit is BucketUnit.SECONDS:
        return rsu.time
    return rsu.service_specific_units


def used_units(mscc: MultipleServicesCreditControl, unit: BucketUnit) -> int:
    if unit is BucketUnit.BYTES:
        return mscc.used_total("octets")
    if unit is BucketUnit.SECONDS:
        return mscc.used_total("time")
    return mscc.used_total("units")


def _rat(ccr: CreditControlRequest) -> RatType:
    ps = ccr.ps_information
    if ps is None:
        return RatType.UNKNOWN
    if (rat := ps.rat_type) is not None:
        return RatType.from_rat_type_avp(rat)
    if (octet := ps.threegpp_rat_type) is not None:
        return RatType.from_3gpp_rat_type(octet)
    return RatType.UNKNOWN


@dataclass(frozen=True, slots=True)
class RatingInputs:
    """Everything of a CCR and one MSCC that rating reads, except the quantity: two CCRs with
    equal inputs resolve alike on one catalogue (``resolve`` ignores the quantity)."""

    imsi: str
    msisdn: str | None
    event_time: datetime | None  # None: no Event-Timestamp, rated at the time of arrival
    apn: str | None
    rating_group: int | None
    service_id: int | None
    mcc: str | None
    mnc: str | None
    rat_type: RatType
    ue_ip: IPv4Address | IPv6Address | None
    qos_class: int | None
    slice: Slice | None = None  # the 5G S-NSSAI (Nchf sNSSAI)


def rating_inputs(
    ccr: CreditControlRequest, mscc: MultipleServicesCreditControl | None
) -> RatingInputs:
    ps = ccr.ps_information
    plmn = ps.sgsn_mcc_mnc if ps is not None else None
    ue_ip: IPv4Address | IPv6Address | None = None
    if ps is not None and (addresses := ps.pdp_addresses):
        ue_ip = addresses[0]
    service_ids = mscc.service_identifiers if mscc is not None else []
    imsi = msisdn = None
    for sub in ccr.subscription_ids:  # one pass for both
        if sub.type == SubscriptionIdType.END_USER_IMSI and imsi is None:
            imsi = sub.data
        elif sub.type == SubscriptionIdType.END_USER_E164 and msisdn is None:
            msisdn = sub.data
    return RatingInputs(
        imsi=imsi or "",
        msisdn=msisdn,
        event_time=ccr.event_timestamp,
        apn=ccr.apn,
        rating_group=mscc.rating_group if mscc is not None else None,
        service_id=service_ids[0] if service_ids else None,
        mcc=plmn[:3] if plmn and len(plmn) >= 5 else None,
        mnc=plmn[3:] if plmn and len(plmn) >= 5 else None,
        rat_type=_rat(ccr),
        ue_ip=ue_ip,
        qos_class=ps.qos_class if ps is not None else None,
    )


def context_of(
    tenant: str, inputs: RatingInputs, service: ServiceKind, quantity: int
) -> UsageContext:
    return UsageContext(
        tenant=tenant,
        imsi=inputs.imsi,
        event_time=inputs.event_time or datetime.now(UTC),
        service=service,
        quantity=quantity,
        msisdn=inputs.msisdn,
        apn=inputs.apn,
        rating_group=inputs.rating_group,
        service_id=inputs.service_id,
        mcc=inputs.mcc,
        mnc=inputs.mnc,
        rat_type=inputs.rat_type,
        ue_ip=inputs.ue_ip,
        qos_class=inputs.qos_class,
        slice=inputs.slice,
    )


def usage_context(
    tenant: str,
    ccr: CreditControlRequest,
    mscc: MultipleServicesCreditControl | None,
    service: ServiceKind,
    quantity: int,
) -> UsageContext:
    return context_of(tenant, rating_inputs(ccr, mscc), service, quantity)


def payer_key(tenant: str, payer: Payer) -> str:
    return payer_tag(tenant, str(payer.kind), payer.id)


def usage_record(
    resolution: Resolution,
    amounts: tuple[int, ...],
    *,
    session: str,
    n: int,
    rg: int,
    msisdn: str | None,
    interface: str | None = None,
) -> dict[str, Any]:
    """The context of a rated usage record (``ctx`` of the stream entry): who used what, and
    one priced line per level (``amounts``, level 0 first). CCRs (sessions and events), Nchf
    charging data requests and events posted over HTTP all write this one shape, which drain,
    bill run and reports read. ``interface`` ("gy", "nchf") marks where a session's usage
    was reported; the rest of the record does not depend on it."""
    levels = [q.level_line(amount) for q, amount in zip(resolution.quotes, amounts, strict=True)]
    return {
        "session": session,
        "n": n,
        "rg": rg,
        "imsi": resolution.imsi,
        "msisdn": msisdn,
        "twin": resolution.twin,
        "subscription": resolution.subscription,
        "account": resolution.account,
        "service": str(resolution.quotes[0].service) if resolution.quotes else None,
        "levels": levels,
    } | ({} if interface is None else {"interface": interface})
