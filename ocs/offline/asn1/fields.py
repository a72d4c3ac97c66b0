"""Field decoders shared by the TS 32.298 record mappings: TBCD digits, PLMN-Id, TimeStamp,
unsigned integers, RAT type codes, the context-tagged fields of a SET/SEQUENCE."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Final

from ocs.offline.asn1.ber import CONTEXT, UNIVERSAL, Element
from ocs.rating import RatType

SEQUENCE: Final = 16
MAX_BIGINT: Final = 2**63 - 1
MAX_CHARGING_ID: Final = 2**32 - 1  # ChargingID ::= INTEGER (0..4294967295)
MAX_RATING_GROUP: Final = 2**31 - 1  # the rating_group column is an integer
MAX_DURATION: Final = 366 * 86_400  # seconds; a CDR covering more than a year is corrupt


class RecordError(ValueError):
    """A field of one record is missing or malformed (``field: reason``)."""


def tbcd(data: bytes, name: str) -> str:
    """Telephony BCD: low nibble first, 0xF fills the last octet."""
    digits = []
    for i, octet in enumerate(data):
        for nibble in (octet & 0x0F, octet >> 4):
            if nibble == 0xF and i == len(data) - 1:
                continue
            if nibble > 9:
                raise RecordError(f"{name}: {data.hex()} is not TBCD digits")
            digits.append(str(nibble))
    return "".join(digits)


def plmn_id(data: bytes) -> str:
    """MCC+MNC of a 3-octet PLMN-Id (MNC digit 3 is F for a 2-digit MNC)."""
    if len(data) != 3:
        raise RecordError(f"servingNodePLMNIdentifier: {len(data)} octets, expected 3")
    nib = [data[0] & 0xF, data[0] >> 4, data[1] & 0xF, data[2] & 0xF, data[2] >> 4, data[1] >> 4]
    mcc, mnc = nib[:3], nib[3:] if nib[5] != 0xF else nib[3:5]
    if any(n > 9 for n in mcc + mnc):
        raise RecordError(f"servingNodePLMNIdentifier: {data.hex()} is not MCC/MNC digits")
    return "".join(map(str, mcc + mnc))


def timestamp(data: bytes, name: str) -> datetime:
    """TS 32.298 TimeStamp: local time YYMMDDhhmmss (BCD) and its offset to UTC."""
    if len(data) != 9 or chr(data[6]) not in "+-":
        raise RecordError(f"{name}: {data.hex()} is not a 9-octet TimeStamp")
    digits = []
    for octet in data[:6] + data[7:]:
        if octet >> 4 > 9 or octet & 0xF > 9:
            raise RecordError(f"{name}: {data.hex()} is not BCD")
        digits.append((octet >> 4) * 10 + (octet & 0xF))
    yy, mo, dd, hh, mi, ss, oh, om = digits
    sign = 1 if chr(data[6]) == "+" else -1
    try:
        zone = timezone(sign * timedelta(hours=oh, minutes=om))
        return datetime(2000 + yy, mo, dd, hh, mi, ss, tzinfo=zone)
    except ValueError as exc:
        raise RecordError(f"{name}: {data.hex()}: {exc}") from None


def unsigned(el: Element, name: str, limit: int = MAX_BIGINT) -> int:
    """A non-negative INTEGER up to ``limit`` (default: what a bigint column holds)."""
    value = el.integer()
    if value < 0:
        raise RecordError(f"{name}: {value} is negative")
    if value > limit:
        raise RecordError(f"{name}: {value} is above {limit}")
    return value


def ia5(el: Element, name: str) -> str:
    """A printable IA5String (APN, DNN): no control characters."""
    text = el.content.decode("latin-1")
    if not text or not all(" " <= ch <= "~" for ch in text):
        raise RecordError(f"{name}: {el.content!r} is not printable IA5")
    return text


def rat_name(el: Element) -> str:
    rat = RatType.from_3gpp_rat_type(unsigned(el, "rATType"))
    return "" if rat is RatType.UNKNOWN else str(rat)


def fields(el: Element) -> dict[int, Element]:
    return {c.tag: c for c in el.children() if c.cls == CONTEXT}


def items(el: Element, name: str) -> list[dict[int, Element]]:
    out = []
    for item in el.children():
        if item.cls != UNIVERSAL or item.tag != SEQUENCE:
            raise RecordError(f"{name}: item at byte {item.offset} is not a SEQUENCE")
        out.append(fields(item))
    return out
