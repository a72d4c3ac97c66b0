"""5G CHF records of 3GPP TS 32.298 (``CHFRecord ::= CHOICE { chargingFunctionRecord [200]
ChargingRecord }``, IMPLICIT TAGS) as importer rows. Fields used:

============================== ==== ================================================
subscriberIdentifier           [2]  SubscriptionID SET: subscriptionIDType [0]
                                    (0 E.164, 1 IMSI), subscriptionIDData [1] UTF8
listOfMultipleUnitUsage        [5]  SEQUENCE OF MultipleUnitUsage: ratingGroup [0],
                                    usedUnitContainers [1] SEQUENCE OF
                                    UsedUnitContainer (dataTotalVolume [4],
                                    dataVolumeUplink [5], dataVolumeDownlink [6])
recordOpeningTime              [6]  TimeStamp
duration                       [7]  seconds
pDUSessionChargingInformation  [13] SET: pDUSessionChargingID [0], rATType [12],
                                    dataNetworkNameIdentifier [13] (IA5)
chargingID                     [27] preferred to pDUSessionChargingID when present
============================== ==== ================================================

One row per rating group (containers summed: total volume, else uplink + downlink), from
the opening time for ``duration`` seconds. The CDR names the home PLMN of the SUPI only,
not the visited network, so ``plmn`` stays empty (home).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from ocs.offline.asn1.ber import Element
from ocs.offline.asn1.fields import (
    MAX_BIGINT,
    MAX_CHARGING_ID,
    MAX_DURATION,
    MAX_RATING_GROUP,
    RecordError,
    fields,
    ia5,
    items,
    rat_name,
    timestamp,
    unsigned,
)
from ocs.rating import ServiceKind

CHF_RECORD_TAG: Final = 200
SUBSCRIBER, UNIT_USAGE, OPENED, DURATION, PDU_SESSION, CHARGING_ID = 2, 5, 6, 7, 13, 27
E164, IMSI = 0, 1


def _subscriber(el: Element) -> tuple[str, str]:
    """(IMSI, MSISDN) of a SubscriptionID SET (an IMSI may be written ``imsi-<digits>``)."""
    f = fields(el)
    if 0 not in f or 1 not in f:
        raise RecordError("subscriberIdentifier: subscriptionIDType and Data needed")
    kind = unsigned(f[0], "subscriptionIDType")
    try:
        data = f[1].content.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError("subscriberIdentifier: subscriptionIDData is not UTF-8") from None
    digits = data.removeprefix("imsi-") if kind == IMSI else data.removeprefix("msisdn-")
    if kind == IMSI:
        return digits, ""
    if kind == E164:
        if not digits.isdigit():
            raise RecordError(f"subscriberIdentifier: {digits!r} is not an E.164 number")
        return "", digits
    raise RecordError(f"subscriberIdentifier: type {kind} is neither IMSI (1) nor E.164 (0)")


def chf_rows(el: Element) -> list[dict[str, Any]]:
    """The rows of one ``chargingFunctionRecord [200]``."""
    f = fields(el)
    for tag, name in ((OPENED, "recordOpeningTime"), (DURATION, "duration")):
        if tag not in f:
            raise RecordError(f"{name}: missing")
    if SUBSCRIBER not in f:
        raise RecordError("subscriberIdentifier: missing")
    imsi, msisdn = _subscriber(f[SUBSCRIBER])
    if not (imsi.isdigit() and 6 <= len(imsi) <= 15):
        raise RecordError(f"subscriberIdentifier: {imsi!r} is not an IMSI of 6-15 digits")
    opened = timestamp(f[OPENED].content, "recordOpeningTime")
    closed = opened + timedelta(seconds=unsigned(f[DURATION], "duration", MAX_DURATION))
    pdu = fields(f[PDU_SESSION]) if PDU_SESSION in f else {}
    if CHARGING_ID in f:
        charging_id = unsigned(f[CHARGING_ID], "chargingID", MAX_CHARGING_ID)
    elif 0 in pdu:
        charging_id = unsigned(pdu[0], "pDUSessionChargingID", MAX_CHARGING_ID)
    else:
        raise RecordError("chargingID: missing (nor pDUSessionChargingID)")
    dnn = ia5(pdu[13], "dataNetworkNameIdentifier") if 13 in pdu else ""
    rat = rat_name(pdu[12]) if 12 in pdu else ""
    units: dict[int, int] = {}
    for usage in items(f[UNIT_USAGE], "listOfMultipleUnitUsage") if UNIT_USAGE in f else []:
        if 0 not in usage:
            raise RecordError("listOfMultipleUnitUsage: ratingGroup: missing")
        rg = unsigned(usage[0], "ratingGroup", MAX_RATING_GROUP)
        total = units.get(rg, 0)
        for c in items(usage[1], "usedUnitContainers") if 1 in usage else []:
            if 4 in c:
                total += unsigned(c[4], "dataTotalVolume")
            else:
                total += unsigned(c[5], "dataVolumeUplink") if 5 in c else 0
                total += unsigned(c[6], "dataVolumeDownlink") if 6 in c else 0
        units[rg] = total
    if not units:
        raise RecordError("listOfMultipleUnitUsage: missing (no usage in the record)")
    if max(units.values()) > MAX_BIGINT:
        raise RecordError(f"volume: {max(units.values())} is above {MAX_BIGINT}")
    return [
        {
            "record_type": "CHF",
            "charging_id": str(charging_id),
            "imsi": imsi,
            "service": ServiceKind.DATA,
            "session_id": None,
            "msisdn": msisdn or None,
            "apn": dnn or None,
            "plmn": None,
            "rat_type": rat or None,
            "rating_group": rg,
            "start_time": opened,
            "end_time": closed,
            "units": units[rg],
        }
        for rg in sorted(units)
    ]
