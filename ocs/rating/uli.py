"""Decoders for the location AVPs a rating context needs (pure, bytes in, values out).

- 3GPP-User-Location-Info (TS 29.061 16.4.7.2; Diameter AVP 22, vendor 10415): one octet
  Geographic Location Type, then the location in the encoding of TS 29.274 8.21 (ULI IE).
- 3GPP-SGSN-MCC-MNC (TS 29.061; AVP 18): UTF-8 digits, MCC then a 2- or 3-digit MNC.

Every location type starts with a PLMN identity in three octets of BCD (TS 24.008 10.5.1.3):
octet 1 = MCC digit 2 | MCC digit 1, octet 2 = MNC digit 3 | MCC digit 3,
octet 3 = MNC digit 2 | MNC digit 1; MNC digit 3 is the filler 0xF when the MNC has two digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class UliDecodeError(ValueError):
    """The AVP value is truncated, of an unknown location type, or not valid BCD."""


class LocationType(IntEnum):
    """Geographic Location Type octet values (TS 29.061 16.4.7.2)."""

    CGI = 0
    SAI = 1
    RAI = 2
    TAI = 128
    ECGI = 129
    TAI_ECGI = 130
    ENODEB_ID = 131
    TAI_ENODEB_ID = 132
    EXT_ENODEB_ID = 133
    TAI_EXT_ENODEB_ID = 134
    NCGI = 135
    TAI_5GS = 136
    TAI_5GS_NCGI = 137
    NG_RAN_NODE_ID = 138
    TAI_5GS_NG_RAN_NODE_ID = 139


PLMN_LEN = 3
BCD_FILLER = 0xF
_ECI_MASK = 0x0FFFFFFF  # 28-bit E-UTRAN cell identity
_NCI_MASK = 0x0FFFFFFFFF  # 36-bit NR cell identity
_ENB_MASK = 0x0FFFFF  # 20-bit macro eNodeB id
_EXT_ENB_MASK = 0x1FFFFF  # 21-bit extended eNodeB id


@dataclass(frozen=True, slots=True)
class Plmn:
    """A PLMN identity as digit strings: mcc "262", mnc "01" or "010"."""

    mcc: str
    mnc: str

    def __str__(self) -> str:
        return self.mcc + self.mnc


@dataclass(frozen=True, slots=True)
class UserLocation:
    """A decoded 3GPP-User-Location-Info. `plmn` is the first PLMN in the value (the TAI's
    for combined types); the other fields are filled when the location type carries them."""

    location_type: LocationType
    plmn: Plmn
    lac: int | None = None
    ci: int | None = None
    sac: int | None = None
    rac: int | None = None
    tac: int | None = None
    eci: int | None = None
    enb_id: int | None = None
    nci: int | None = None
    cell_plmn: Plmn | None = None


def decode_plmn(data: bytes) -> Plmn:
    """Decode three octets of BCD PLMN identity."""
    if len(data) < PLMN_LEN:
        raise UliDecodeError(f"PLMN needs {PLMN_LEN} octets, got {len(data)}")
    o1, o2, o3 = data[0], data[1], data[2]
    mcc_digits = (o1 & 0x0F, o1 >> 4, o2 & 0x0F)
    mnc3 = o2 >> 4
    mnc_digits = (o3 & 0x0F, o3 >> 4) if mnc3 == BCD_FILLER else (o3 & 0x0F, o3 >> 4, mnc3)
    for digit in (*mcc_digits, *mnc_digits):
        if digit > 9:
            raise UliDecodeError(f"invalid BCD digit 0x{digit:x} in PLMN {data[:3].hex()}")
    return Plmn("".join(map(str, mcc_digits)), "".join(map(str, mnc_digits)))


def encode_plmn(mcc: str, mnc: str) -> bytes:
    """Encode MCC/MNC digit strings as three BCD octets (the inverse of `decode_plmn`)."""
    if len(mcc) != 3 or len(mnc) not in (2, 3) or not (mcc + mnc).isdigit():
        raise ValueError(f"bad MCC/MNC {mcc!r}/{mnc!r}")
    m = [int(c) for c in mcc]
    n = [int(c) for c in mnc]
    mnc3 = n[2] if len(n) == 3 else BCD_FILLER
    return bytes([(m[1] << 4) | m[0], (mnc3 << 4) | m[2], (n[1] << 4) | n[0]])


def _need(value: bytes, size: int, kind: LocationType) -> None:
    if len(value) < size:
        raise UliDecodeError(f"{kind.name} location needs {size} octets, got {len(value)}")


def _u(value: bytes, start: int, size: int) -> int:
    return int.from_bytes(value[start : start + size], "big")


def decode_user_location_info(value: bytes) -> UserLocation:
    """Decode a 3GPP-User-Location-Info AVP value (type octet included)."""
    if not value:
        raise UliDecodeError("empty User-Location-Info")
    try:
        kind = LocationType(value[0])
    except ValueError:
        raise UliDecodeError(f"unknown geographic location type {value[0]}") from None
    body = value[1:]
    _need(body, PLMN_LEN, kind)
    plmn = decode_plmn(body)
    lt = LocationType
    if kind in (lt.CGI, lt.SAI):
        _need(body, 7, kind)
        second = _u(body, 5, 2)
        if kind is lt.CGI:
            return UserLocation(kind, plmn, lac=_u(body, 3, 2), ci=second)
        return UserLocation(kind, plmn, lac=_u(body, 3, 2), sac=second)
    if kind is lt.RAI:
        _need(body, 6, kind)
        return UserLocation(kind, plmn, lac=_u(body, 3, 2), rac=body[5])
    if kind is lt.TAI:
        _need(body, 5, kind)
        return UserLocation(kind, plmn, tac=_u(body, 3, 2))
    if kind is lt.ECGI:
        _need(body, 7, kind)
        return UserLocation(kind, plmn, eci=_u(body, 3, 4) & _ECI_MASK, cell_plmn=plmn)
    if kind is lt.TAI_ECGI:
        _need(body, 12, kind)
        cell_plmn = decode_plmn(body[5:8])
        eci = _u(body, 8, 4) & _ECI_MASK
        return UserLocation(kind, plmn, tac=_u(body, 3, 2), eci=eci, cell_plmn=cell_plmn)
    if kind in (lt.ENODEB_ID, lt.EXT_ENODEB_ID):
        _need(body, 6, kind)
        mask = _ENB_MASK if kind is lt.ENODEB_ID else _EXT_ENB_MASK
        return UserLocation(kind, plmn, enb_id=_u(body, 3, 3) & mask)
    if kind in (lt.TAI_ENODEB_ID, lt.TAI_EXT_ENODEB_ID):
        _need(body, 11, kind)
        mask = _ENB_MASK if kind is lt.TAI_ENODEB_ID else _EXT_ENB_MASK
        return UserLocation(kind, plmn, tac=_u(body, 3, 2), enb_id=_u(body, 8, 3) & mask)
    if kind is lt.NCGI:
        _need(body, 8, kind)
        return UserLocation(kind, plmn, nci=_u(body, 3, 5) & _NCI_MASK, cell_plmn=plmn)
    if kind is lt.TAI_5GS:
        _need(body, 6, kind)
        return UserLocation(kind, plmn, tac=_u(body, 3, 3))
    if kind is lt.TAI_5GS_NCGI:
        _need(body, 14, kind)
        cell_plmn = decode_plmn(body[6:9])
        nci = _u(body, 9, 5) & _NCI_MASK
        return UserLocation(kind, plmn, tac=_u(body, 3, 3), nci=nci, cell_plmn=cell_plmn)
    if kind is lt.TAI_5GS_NG_RAN_NODE_ID:
        _need(body, 6, kind)
        return UserLocation(kind, plmn, tac=_u(body, 3, 3))
    # NG-RAN Node ID: PLMN then a node id of variable length; the PLMN is all rating needs.
    return UserLocation(kind, plmn)


def decode_sgsn_mcc_mnc(value: bytes | str) -> Plmn:
    """Decode 3GPP-SGSN-MCC-MNC: "26201" (2-digit MNC) or "262010" (3-digit MNC)."""
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    text = text.strip()
    if len(text) not in (5, 6) or not text.isascii() or not text.isdigit():
        raise UliDecodeError(f"3GPP-SGSN-MCC-MNC must be 5 or 6 digits, got {text!r}")
    return Plmn(text[:3], text[3:])
