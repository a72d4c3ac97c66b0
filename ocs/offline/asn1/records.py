"""PGW and SGW records of 3GPP TS 32.298 (``GPRSRecord``, BER, IMPLICIT TAGS) as the rows
the CSV importer makes (``cdrs.parse_row``'s dictionaries).

The file is a concatenation of ``GPRSRecord`` values (the CDRs of a TS 32.297 file without
its file and CDR headers). Read: ``pGWRecord [79]``, ``sGWRecord [78]`` and, from
``CHFRecord``, ``chargingFunctionRecord [200]`` (``chf.py``); any other record type is
reported per record. Fields used (context tags of the record SET):

========================== ==== ===================================================
servedIMSI                 [3]  TBCD (TS 29.002), filler F
chargingID                 [5]  INTEGER (0..4294967295)
accessPointNameNI          [7]  IA5String
listOfTrafficVolumes       [12] SEQUENCE OF ChangeOfCharCondition (uplink [3],
                                downlink [4], changeTime [6], rATType [15])
recordOpeningTime          [13] TimeStamp: 9 octets, BCD YYMMDDhhmmss, sign, BCD hhmm
duration                   [14] INTEGER, seconds
servedMSISDN               [22] ISDN-AddressString: type octet, then TBCD digits
servingNodePLMNIdentifier  [27] 3 octets, MCC/MNC in TBCD (TS 24.008 10.5.1.13)
rATType                    [30] INTEGER, TS 29.274 8.17 codes
listOfServiceData          [34] PGW only: SEQUENCE OF ChangeOfServiceCondition
                                (ratingGroup [1], timeOfFirstUsage [5],
                                timeOfLastUsage [6], datavolumeFBCUplink [12],
                                datavolumeFBCDownlink [13], timeOfReport [14],
                                rATType [30])
========================== ==== ===================================================

One row per rating group of ``listOfServiceData`` (its containers summed; from the first
usage to the last, else the record's opening time to its report time). Without service
data, one row of the bearer's ``listOfTrafficVolumes`` (no rating group), from the opening
time for ``duration`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from ocs.offline.asn1.ber import CONTEXT, BerError, Element, read_element
from ocs.offline.asn1.chf import CHF_RECORD_TAG, chf_rows
from ocs.offline.asn1.fields import (
    MAX_BIGINT,
    MAX_CHARGING_ID,
    MAX_DURATION,
    MAX_RATING_GROUP,
    RecordError,
    fields,
    ia5,
    items,
    plmn_id,
    rat_name,
    tbcd,
    timestamp,
    unsigned,
)
from ocs.rating import ServiceKind

RECORD_TAGS: Final = {79: "PGW", 78: "SGW"}
OTHER_RECORDS: Final = {20: "sgsnPDPRecord", 21: "ggsnPDPRecord", 22: "sgsnMMRecord"}
IMSI, CHARGING_ID, APN, TRAFFIC, OPENED, DURATION = 3, 5, 7, 12, 13, 14
MSISDN, PLMN, RAT, SERVICE_DATA = 22, 27, 30, 34
REQUIRED: Final = {
    IMSI: "servedIMSI",
    CHARGING_ID: "chargingID",
    OPENED: "recordOpeningTime",
    DURATION: "duration",
}


@dataclass(slots=True)
class DecodedFile:
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (where, row)
    records: int = 0
    errors: list[str] = field(default_factory=list)


def _service_rows(
    items: list[dict[int, Element]], opened: datetime, closed: datetime, rat: str
) -> list[dict[str, Any]]:
    groups: dict[int, dict[str, Any]] = {}
    for f in items:
        if 1 not in f:
            raise RecordError("listOfServiceData: ratingGroup: missing")
        rg = unsigned(f[1], "ratingGroup", MAX_RATING_GROUP)
        first = timestamp(f[5].content, "timeOfFirstUsage") if 5 in f else opened
        last = timestamp(f[6].content, "timeOfLastUsage") if 6 in f else None
        if last is None:
            last = timestamp(f[14].content, "timeOfReport") if 14 in f else closed
        up = unsigned(f[12], "datavolumeFBCUplink") if 12 in f else 0
        down = unsigned(f[13], "datavolumeFBCDownlink") if 13 in f else 0
        row = groups.setdefault(
            rg, {"rating_group": rg, "start_time": first, "end_time": last, "units": 0}
        )
        row["start_time"] = min(row["start_time"], first)
        row["end_time"] = max(row["end_time"], last)
        row["units"] += up + down
        if 30 in f:
            row["rat_type"] = rat_name(f[30]) or rat
    return [groups[rg] for rg in sorted(groups)]


def record_rows(el: Element) -> list[dict[str, Any]]:
    """The rows of one ``GPRSRecord`` (or ``CHFRecord``) element; raises ``RecordError`` or
    ``BerError``."""
    if el.cls == CONTEXT and el.tag == CHF_RECORD_TAG:
        return chf_rows(el)
    if el.cls != CONTEXT or el.tag not in RECORD_TAGS:
        name = OTHER_RECORDS.get(el.tag, f"[{el.tag}]")
        raise RecordError(
            f"record: {name} is not read (only pGWRecord [79], sGWRecord [78],"
            " chargingFunctionRecord [200])"
        )
    rtype = RECORD_TAGS[el.tag]
    f = fields(el)
    for tag, name in REQUIRED.items():
        if tag not in f:
            raise RecordError(f"{name}: missing")
    imsi = tbcd(f[IMSI].content, "servedIMSI")
    if not 6 <= len(imsi) <= 15:
        raise RecordError(f"servedIMSI: {imsi!r} is not 6-15 digits")
    opened = timestamp(f[OPENED].content, "recordOpeningTime")
    closed = opened + timedelta(seconds=unsigned(f[DURATION], "duration", MAX_DURATION))
    rat = rat_name(f[RAT]) if RAT in f else ""
    msisdn = tbcd(f[MSISDN].content[1:], "servedMSISDN") if MSISDN in f else ""
    apn = ia5(f[APN], "accessPointNameNI") if APN in f else ""
    common = {
        "record_type": rtype,
        "charging_id": str(unsigned(f[CHARGING_ID], "chargingID", MAX_CHARGING_ID)),
        "imsi": imsi,
        "service": ServiceKind.DATA,
        "session_id": None,
        "msisdn": msisdn or None,
        "apn": apn or None,
        "plmn": plmn_id(f[PLMN].content) if PLMN in f else None,
        "rat_type": rat or None,
    }
    service = (
        items(f[SERVICE_DATA], "listOfServiceData") if rtype == "PGW" and SERVICE_DATA in f else []
    )
    if service:
        rows = _service_rows(service, opened, closed, rat)
    else:
        units = 0
        for item in items(f[TRAFFIC], "listOfTrafficVolumes") if TRAFFIC in f else []:
            units += unsigned(item[3], "dataVolumeGPRSUplink") if 3 in item else 0
            units += unsigned(item[4], "dataVolumeGPRSDownlink") if 4 in item else 0
        rows = [{"rating_group": None, "start_time": opened, "end_time": closed, "units": units}]
    out = []
    for row in rows:
        if row["end_time"] < row["start_time"]:
            raise RecordError("timeOfLastUsage: before timeOfFirstUsage")
        if row["units"] > MAX_BIGINT:
            raise RecordError(f"volume: {row['units']} is above {MAX_BIGINT}")
        merged = {**common, **row}
        merged["rat_type"] = merged["rat_type"] or None
        out.append(merged)
    return out


def decode_file(data: bytes, name: str) -> DecodedFile:
    """Every record of a BER file; bad records are reported as ``name:record N (byte O):
    field: reason`` and skipped. Framing errors end the file (nothing after can be found)."""
    out = DecodedFile()
    pos = 0
    while pos < len(data):
        if data[pos] == 0 and data.count(0, pos) == len(data) - pos:
            break  # zero padding at the end of a block-written file
        out.records += 1
        where = f"{name}:record {out.records} (byte {pos})"
        try:
            el = read_element(data, pos)
        except BerError as exc:
            out.errors.append(f"{where}: framing: {exc.reason}; rest of file skipped")
            break
        pos = el.end
        try:
            out.rows += [(where, row) for row in record_rows(el)]
        except (RecordError, BerError) as exc:
            out.errors.append(f"{where}: {exc}")
    return out


def is_ber(head: bytes) -> bool:
    """Whether a file starting with ``head`` holds BER records (a context-class constructed
    identifier, as every GPRSRecord alternative is) rather than CSV text."""
    return bool(head) and head[0] & 0xE0 == 0xA0
