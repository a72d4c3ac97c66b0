"""3GPP-User-Location-Info and 3GPP-SGSN-MCC-MNC decoding (TS 29.061 16.4.7.2, TS 29.274 8.21)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocs.rating.context import RatType
from ocs.rating.uli import (
    LocationType,
    Plmn,
    UliDecodeError,
    decode_plmn,
    decode_sgsn_mcc_mnc,
    decode_user_location_info,
    encode_plmn,
)

# 262-01: MCC digits 2,6,2 -> 0x62, 0xF2 (filler | MCC3), MNC 0,1 -> 0x10
DE_TELEKOM = bytes.fromhex("62f210")
# 310-410: 3-digit MNC -> 0x13, 0x00 (MNC3=0 | MCC3=0), 0x14
US_ATT = bytes.fromhex("130014")


def test_plmn_two_digit_mnc_uses_filler() -> None:
    assert decode_plmn(DE_TELEKOM) == Plmn("262", "01")
    assert encode_plmn("262", "01") == DE_TELEKOM


def test_plmn_three_digit_mnc() -> None:
    assert decode_plmn(US_ATT) == Plmn("310", "410")
    assert encode_plmn("310", "410") == US_ATT
    assert str(decode_plmn(encode_plmn("262", "010"))) == "262010"


def test_cgi_sai_rai() -> None:
    cgi = decode_user_location_info(bytes([0]) + DE_TELEKOM + bytes.fromhex("00641a2b"))
    assert (cgi.location_type, cgi.plmn, cgi.lac, cgi.ci) == (
        LocationType.CGI,
        Plmn("262", "01"),
        100,
        0x1A2B,
    )
    sai = decode_user_location_info(bytes([1]) + US_ATT + bytes.fromhex("00640007"))
    assert (sai.plmn.mnc, sai.lac, sai.sac) == ("410", 100, 7)
    rai = decode_user_location_info(bytes([2]) + DE_TELEKOM + bytes.fromhex("00640aff"))
    assert (rai.lac, rai.rac) == (100, 10)


def test_tai_and_ecgi() -> None:
    value = (
        bytes([0x82]) + DE_TELEKOM + bytes.fromhex("1234") + DE_TELEKOM + bytes.fromhex("f1abcdef")
    )
    loc = decode_user_location_info(value)
    assert loc.location_type is LocationType.TAI_ECGI
    assert loc.plmn == Plmn("262", "01") and loc.cell_plmn == Plmn("262", "01")
    assert loc.tac == 0x1234
    assert loc.eci == 0x1ABCDEF  # spare high nibble masked off
    tai = decode_user_location_info(bytes([128]) + US_ATT + bytes.fromhex("0001"))
    assert (tai.plmn, tai.tac) == (Plmn("310", "410"), 1)
    ecgi = decode_user_location_info(bytes([129]) + DE_TELEKOM + bytes.fromhex("00000101"))
    assert ecgi.eci == 257


def test_5gs_ncgi_and_tai() -> None:
    ncgi = decode_user_location_info(bytes([135]) + DE_TELEKOM + bytes.fromhex("0123456789"))
    assert ncgi.location_type is LocationType.NCGI and ncgi.nci == 0x123456789
    tai5 = decode_user_location_info(bytes([136]) + US_ATT + bytes.fromhex("00abcd"))
    assert (tai5.plmn.mcc, tai5.plmn.mnc, tai5.tac) == ("310", "410", 0xABCD)
    both = decode_user_location_info(
        bytes([137]) + DE_TELEKOM + bytes.fromhex("000001") + US_ATT + bytes.fromhex("f000000042")
    )
    assert both.plmn == Plmn("262", "01") and both.cell_plmn == Plmn("310", "410")
    assert (both.tac, both.nci) == (1, 0x42)


def test_enodeb_types() -> None:
    enb = decode_user_location_info(bytes([131]) + DE_TELEKOM + bytes.fromhex("f12345"))
    assert enb.enb_id == 0x12345
    tai_enb = decode_user_location_info(
        bytes([132]) + DE_TELEKOM + bytes.fromhex("0007") + DE_TELEKOM + bytes.fromhex("012345")
    )
    assert (tai_enb.tac, tai_enb.enb_id) == (7, 0x12345)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        bytes([0x82]) + DE_TELEKOM + b"\x12",  # truncated TAI+ECGI
        bytes([0x05]) + DE_TELEKOM + b"\x00" * 4,  # unknown type
        bytes([128]) + bytes.fromhex("a2f210") + b"\x00\x01",  # MCC digit 0xA is not BCD
        bytes([128]) + b"\x62",
    ],
)
def test_bad_values_raise(value: bytes) -> None:
    with pytest.raises(UliDecodeError):
        decode_user_location_info(value)


def test_sgsn_mcc_mnc() -> None:
    assert decode_sgsn_mcc_mnc(b"26201") == Plmn("262", "01")
    assert decode_sgsn_mcc_mnc("262010") == Plmn("262", "010")
    for bad in (b"2620", b"2620100", b"26a01", "\u0662\u0666\u0662\u0660\u0661"):
        with pytest.raises(UliDecodeError):
            decode_sgsn_mcc_mnc(bad)


@given(
    st.text("0123456789", min_size=3, max_size=3),
    st.text("0123456789", min_size=2, max_size=3),
)
def test_plmn_round_trip(mcc: str, mnc: str) -> None:
    assert decode_plmn(encode_plmn(mcc, mnc)) == Plmn(mcc, mnc)


def test_rat_type_mappings() -> None:
    assert RatType.from_3gpp_rat_type(6) is RatType.EUTRAN
    assert RatType.from_3gpp_rat_type(8) is RatType.NB_IOT
    assert RatType.from_3gpp_rat_type(9) is RatType.LTE_M
    assert RatType.from_3gpp_rat_type(10) is RatType.NR
    assert RatType.from_3gpp_rat_type(200) is RatType.UNKNOWN
    assert RatType.from_rat_type_avp(1004) is RatType.EUTRAN
    assert RatType.from_rat_type_avp(1005) is RatType.NB_IOT
    assert RatType.from_rat_type_avp(1006) is RatType.NR
    assert RatType.from_rat_type_avp(1007) is RatType.LTE_M
    assert RatType.from_rat_type_avp(0) is RatType.WLAN
