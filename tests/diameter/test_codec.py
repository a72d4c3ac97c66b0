"""Unit tests of the codec: every RFC 6733 data type, flags, vendor ids, padding, unknown AVPs
and the protocol errors (with their Result-Codes). Bytes are written out by hand here so the
tests do not just check the codec against itself."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv6Address

import pytest

from ocs.diameter import avp_codes as A
from ocs.diameter import codec
from ocs.diameter.codec import Avp, avp, build_message, grouped, i32, octets, text, u32, u64
from ocs.diameter.constants import (
    AVP_FLAG_MANDATORY,
    AVP_FLAG_PROTECTED,
    AVP_FLAG_VENDOR,
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    FLAG_RETRANSMIT,
    VENDOR_3GPP,
    ResultCode,
)
from ocs.diameter.dictionary import DICTIONARY, TYPE_OF, AvpType, make_key
from ocs.diameter.errors import (
    DiameterError,
    InvalidAvpBits,
    InvalidAvpLength,
    InvalidAvpValue,
    InvalidHeaderBits,
)

M = AVP_FLAG_MANDATORY
V = AVP_FLAG_VENDOR
P = AVP_FLAG_PROTECTED


def raw_avp(
    code: int, flags: int, data: bytes, vendor: int | None = None, pad: bytes = b""
) -> bytes:
    """An AVP written by hand; ``pad`` defaults to zero padding."""
    if vendor is None:
        head = struct.pack(">II", code, (flags << 24) | (8 + len(data)))
    else:
        head = struct.pack(">III", code, (flags << 24) | (12 + len(data)), vendor)
    return head + data + (pad or bytes(-len(data) & 3))


def raw_message(
    avps: bytes, flags: int = FLAG_REQUEST | FLAG_PROXIABLE, command: int = 272
) -> bytes:
    header = struct.pack(">IIIII", (1 << 24) | (20 + len(avps)), (flags << 24) | command, 4, 7, 9)
    return header + avps


def one_avp(raw: bytes) -> Avp:
    (decoded,) = codec.decode(raw_message(raw)).avps
    return decoded


# -- keys and the dictionary ------------------------------------------------------------------


def test_avp_keys_combine_code_and_vendor() -> None:
    assert A.AVP_SESSION_ID == 263
    assert make_key(21, VENDOR_3GPP) == A.AVP_3GPP_RAT_TYPE
    assert DICTIONARY[A.AVP_3GPP_RAT_TYPE].vendor == VENDOR_3GPP
    assert DICTIONARY[A.AVP_3GPP_RAT_TYPE].code == 21


def test_type_codes_used_by_the_compiled_codec_match_the_dictionary_enum() -> None:
    # codec.py compares plain ints for speed; they must stay equal to AvpType
    for name in ("OCTET_STRING", "INTEGER32", "INTEGER64", "UNSIGNED32", "UNSIGNED64", "FLOAT32"):
        assert getattr(codec, f"_T_{name}") == AvpType[name]
    for name in ("FLOAT64", "ADDRESS", "TIME", "DIAMETER_IDENTITY", "DIAMETER_URI", "ENUMERATED"):
        assert getattr(codec, f"_T_{name}") == AvpType[name]


def test_avp_codes_module_is_generated_from_the_tsv() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    check = subprocess.run(
        [sys.executable, str(root / "tools" / "gen_avp_codes.py"), "--check"], check=False
    )
    assert check.returncode == 0, "run tools/gen_avp_codes.py after editing avps.tsv"


# -- data types ---------------------------------------------------------------------------------


def test_octet_string() -> None:
    a = one_avp(raw_avp(25, M, b"\x00\xff\x10"))  # Class
    assert a.value == b"\x00\xff\x10"
    assert octets(A.AVP_CLASS, b"\x00\xff\x10").encode() == raw_avp(25, M, b"\x00\xff\x10")


def test_empty_octet_string_has_no_padding() -> None:
    raw = raw_avp(25, M, b"")
    assert len(raw) == 8
    assert one_avp(raw).value == b""
    assert octets(A.AVP_CLASS, b"").encode() == raw


@pytest.mark.parametrize("value", [0, 1, -1, 2**31 - 1, -(2**31)])
def test_integer32(value: int) -> None:
    data = struct.pack(">i", value)
    key = make_key(2001, VENDOR_3GPP)  # Data-Coding-Scheme
    assert TYPE_OF[key] is AvpType.INTEGER32
    assert one_avp(raw_avp(2001, V | M, data, VENDOR_3GPP)).value == value
    assert i32(key, value).encode() == raw_avp(2001, V | M, data, VENDOR_3GPP)


@pytest.mark.parametrize("value", [0, 1, -1, 2**63 - 1, -(2**63)])
def test_integer64(value: int) -> None:
    data = struct.pack(">q", value)
    assert one_avp(raw_avp(447, M, data)).value == value  # Value-Digits
    assert avp(A.AVP_VALUE_DIGITS, value).encode() == raw_avp(447, M, data)


@pytest.mark.parametrize("value", [0, 1, 2001, 2**31, 2**32 - 1])
def test_unsigned32(value: int) -> None:
    data = struct.pack(">I", value)
    assert one_avp(raw_avp(268, M, data)).value == value  # Result-Code
    assert u32(A.AVP_RESULT_CODE, value).encode() == raw_avp(268, M, data)


@pytest.mark.parametrize("value", [0, 1, 2**32, 2**63, 2**64 - 1])
def test_unsigned64(value: int) -> None:
    data = struct.pack(">Q", value)
    assert one_avp(raw_avp(421, M, data)).value == value  # CC-Total-Octets
    assert u64(A.AVP_CC_TOTAL_OCTETS, value).encode() == raw_avp(421, M, data)


def test_float32_and_float64() -> None:
    # no Float AVP in the Gy dictionary: exercise the type through the value codec directly
    f32 = Avp(A.AVP_CLASS, 0, struct.pack(">f", 1.5))
    assert codec._decode_value(f32, AvpType.FLOAT32, struct.pack(">f", 1.5)) == 1.5
    assert codec._decode_value(f32, AvpType.FLOAT64, struct.pack(">d", -2.25)) == -2.25
    inf = codec._decode_value(f32, AvpType.FLOAT64, struct.pack(">d", math.inf))
    assert inf == math.inf
    assert codec._encode_typed(AvpType.FLOAT32, 1.5) == struct.pack(">f", 1.5)
    assert codec._encode_typed(AvpType.FLOAT64, -2.25) == struct.pack(">d", -2.25)
    with pytest.raises(InvalidAvpLength):
        codec._decode_value(f32, AvpType.FLOAT32, b"\0\0\0\0\0\0\0\0")
    with pytest.raises(InvalidAvpLength):
        codec._decode_value(f32, AvpType.FLOAT64, b"\0\0\0\0")


def test_grouped() -> None:
    inner = raw_avp(450, M, struct.pack(">i", 1)) + raw_avp(444, M, b"001011234567890")
    raw = raw_avp(443, M, inner)  # Subscription-Id
    a = one_avp(raw)
    assert a.children is not None
    assert [c.name for c in a.value] == ["Subscription-Id-Type", "Subscription-Id-Data"]
    assert a.get(A.AVP_SUBSCRIPTION_ID_DATA) == "001011234567890"
    assert a.find(A.AVP_SUBSCRIPTION_ID_TYPE) is a.children[0]
    assert a.find(A.AVP_RATING_GROUP) is None
    assert a.get(A.AVP_RATING_GROUP, 42) == 42
    assert a.find_all(A.AVP_SUBSCRIPTION_ID_TYPE) == [a.children[0]]
    built = grouped(
        A.AVP_SUBSCRIPTION_ID,
        [i32(A.AVP_SUBSCRIPTION_ID_TYPE, 1), text(A.AVP_SUBSCRIPTION_ID_DATA, "001011234567890")],
    )
    assert built.encode() == raw
    assert a.encode() == raw
    assert a == built


def test_nested_grouped_and_walk() -> None:
    gsu = grouped(A.AVP_GRANTED_SERVICE_UNIT, [u64(A.AVP_CC_TOTAL_OCTETS, 1000)])
    mscc = grouped(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, [gsu, u32(A.AVP_RATING_GROUP, 10)])
    decoded = one_avp(mscc.encode())
    names = [a.name for a in decoded.walk()]
    assert names == [
        "Multiple-Services-Credit-Control",
        "Granted-Service-Unit",
        "CC-Total-Octets",
        "Rating-Group",
    ]
    found = decoded.find(A.AVP_GRANTED_SERVICE_UNIT)
    assert found is not None
    assert found.get(A.AVP_CC_TOTAL_OCTETS) == 1000


def test_empty_grouped() -> None:
    raw = raw_avp(437, M, b"")  # Requested-Service-Unit with no children
    a = one_avp(raw)
    assert a.value == []
    assert a.encode() == raw
    assert grouped(A.AVP_REQUESTED_SERVICE_UNIT, []).encode() == raw


def test_address_ipv4_and_ipv6() -> None:
    v4 = b"\x00\x01" + bytes([10, 0, 0, 1])
    v6 = b"\x00\x02" + IPv6Address("2001:db8::1").packed
    assert one_avp(raw_avp(257, M, v4)).value == IPv4Address("10.0.0.1")  # Host-IP-Address
    assert one_avp(raw_avp(257, M, v6)).value == IPv6Address("2001:db8::1")
    assert avp(A.AVP_HOST_IP_ADDRESS, IPv4Address("10.0.0.1")).encode() == raw_avp(257, M, v4)
    assert avp(A.AVP_HOST_IP_ADDRESS, "2001:db8::1").encode() == raw_avp(257, M, v6)
    assert len(raw_avp(257, M, v4)) == 16  # 8 + 6 + 2 bytes padding


def test_address_other_families_are_kept_as_family_and_bytes() -> None:
    e164 = b"\x00\x08" + b"491701234567"  # IANA address family 8: E.164
    a = one_avp(raw_avp(257, M, e164))
    assert a.value == (8, b"491701234567")
    assert avp(A.AVP_HOST_IP_ADDRESS, (8, b"491701234567")).encode() == raw_avp(257, M, e164)


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\x00\x01\x0a\x00\x00", b"\x00\x02" + bytes(4), b"\x00\x01" + bytes(16)]
)
def test_malformed_address_is_invalid_value_on_access(data: bytes) -> None:
    a = one_avp(raw_avp(257, M, data))
    with pytest.raises(InvalidAvpValue) as err:
        _ = a.value
    assert err.value.result_code == ResultCode.DIAMETER_INVALID_AVP_VALUE == 5004
    assert err.value.failed_avp is a


def test_time_in_era_0() -> None:
    when = datetime(2021, 5, 5, 20, 31, 36, tzinfo=UTC)
    seconds = int((when - datetime(1900, 1, 1, tzinfo=UTC)).total_seconds())
    assert seconds == 3829235496
    raw = raw_avp(55, M, struct.pack(">I", seconds))  # Event-Timestamp
    assert one_avp(raw).value == when
    assert avp(A.AVP_EVENT_TIMESTAMP, when).encode() == raw
    assert avp(A.AVP_EVENT_TIMESTAMP, seconds).encode() == raw


def test_time_rolls_over_into_era_1_in_2036() -> None:
    era1 = datetime(2036, 2, 7, 6, 28, 16, tzinfo=UTC)
    # the last second of era 0 and the first seconds of era 1
    assert codec.ntp_to_datetime(0xFFFFFFFF) == era1 - timedelta(seconds=1)
    assert codec.ntp_to_datetime(0) == era1
    assert codec.ntp_to_datetime(1) == era1 + timedelta(seconds=1)
    # values with the top bit clear are era 1 (RFC 5905 / RFC 2030 rule)
    assert codec.ntp_to_datetime(0x7FFFFFFF) == era1 + timedelta(seconds=0x7FFFFFFF)
    assert codec.ntp_to_datetime(0x80000000) == datetime(1968, 1, 20, 3, 14, 8, tzinfo=UTC)
    later = datetime(2040, 1, 1, tzinfo=UTC)
    assert codec.ntp_to_datetime(codec.datetime_to_ntp(later)) == later
    assert codec.datetime_to_ntp(era1) == 0
    raw = raw_avp(55, M, struct.pack(">I", 10))
    assert one_avp(raw).value == era1 + timedelta(seconds=10)


def test_time_rejects_naive_and_unrepresentable_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone"):
        codec.datetime_to_ntp(datetime(2021, 1, 1))
    with pytest.raises(ValueError, match="not representable"):
        codec.datetime_to_ntp(datetime(1950, 1, 1, tzinfo=UTC))


def test_utf8_string() -> None:
    raw = raw_avp(1, M, "Jürgen 😀".encode())  # User-Name
    assert one_avp(raw).value == "Jürgen 😀"
    assert text(A.AVP_USER_NAME, "Jürgen 😀").encode() == raw


def test_diameter_identity_and_uri() -> None:
    raw = raw_avp(264, M, b"pgw01.example.org")  # Origin-Host
    assert one_avp(raw).value == "pgw01.example.org"
    assert text(A.AVP_ORIGIN_HOST, "pgw01.example.org").encode() == raw
    uri = "aaa://ocs.example.org:3868;transport=tcp"
    raw_uri = raw_avp(292, M, uri.encode())  # Redirect-Host
    assert one_avp(raw_uri).value == uri
    assert avp(A.AVP_REDIRECT_HOST, uri).encode() == raw_uri


def test_diameter_identity_must_be_ascii() -> None:
    a = one_avp(raw_avp(264, M, "höst".encode()))
    with pytest.raises(InvalidAvpValue):
        _ = a.value


def test_enumerated() -> None:
    raw = raw_avp(416, M, struct.pack(">i", 2))  # CC-Request-Type UPDATE
    assert one_avp(raw).value == 2
    assert i32(A.AVP_CC_REQUEST_TYPE, 2).encode() == raw
    assert avp(A.AVP_CC_REQUEST_TYPE, 2).encode() == raw
    assert one_avp(raw_avp(416, M, struct.pack(">i", -5))).value == -5


def test_ip_filter_rule_is_text() -> None:
    rule = "permit out ip from any to 10.0.0.0/8"
    raw = raw_avp(438, M, rule.encode())  # Restriction-Filter-Rule
    assert one_avp(raw).value == rule
    assert avp(A.AVP_RESTRICTION_FILTER_RULE, rule).encode() == raw


def test_octet_string_builder_rejects_text() -> None:
    with pytest.raises(TypeError):
        avp(A.AVP_CLASS, "not bytes")


# -- flags, vendor ids, padding ---------------------------------------------------------------


def test_builders_set_the_dictionary_flags() -> None:
    assert u32(A.AVP_RESULT_CODE, 2001).flags == M
    assert text(A.AVP_PRODUCT_NAME, "ocs").flags == 0  # M bit must not be set
    assert octets(A.AVP_3GPP_RAT_TYPE, b"\x06").flags == V | M
    assert u32(A.AVP_EXTENDED_APN_AMBR_DL, 1).flags == V


def test_explicit_flags_override_the_dictionary() -> None:
    a = avp(A.AVP_RESULT_CODE, 2001, flags=M | P)
    raw = raw_avp(268, M | P, struct.pack(">I", 2001))
    assert a.encode() == raw
    decoded = one_avp(raw)
    assert decoded.flags == M | P
    assert decoded.mandatory
    assert decoded.encode() == raw


def test_vendor_avp_header_carries_the_vendor_id() -> None:
    raw = octets(A.AVP_3GPP_RAT_TYPE, b"\x06").encode()
    assert raw == raw_avp(21, V | M, b"\x06", VENDOR_3GPP)
    assert len(raw) == 16  # 12 header + 1 data + 3 padding
    decoded = one_avp(raw)
    assert (decoded.code, decoded.vendor, decoded.key) == (21, VENDOR_3GPP, A.AVP_3GPP_RAT_TYPE)
    assert decoded.name == "3GPP-RAT-Type"


def test_same_code_different_vendor_are_different_avps() -> None:
    # code 1 is User-Name (IETF) and 3GPP-IMSI (10415)
    ietf = one_avp(raw_avp(1, M, b"alice"))
    tgpp = one_avp(raw_avp(1, V | M, b"001011234567890", VENDOR_3GPP))
    assert ietf.name == "User-Name"
    assert tgpp.name == "3GPP-IMSI"
    assert tgpp.value == "001011234567890"  # UTF8String (TS 29.061 16.4.7.2)


def test_v_bit_with_vendor_id_zero_re_encodes_exactly() -> None:
    raw = raw_avp(263, V | M, b"AAAA", vendor=0)
    message = raw_message(raw)
    decoded = codec.decode(message)
    assert decoded.avps[0].value == "AAAA"
    assert decoded.encode() == message


@pytest.mark.parametrize("size", range(9))
def test_padding_to_four_bytes(size: int) -> None:
    data = bytes(range(1, size + 1))
    raw = octets(A.AVP_CLASS, data).encode()
    assert len(raw) % 4 == 0
    assert len(raw) == 8 + size + (-size & 3)
    assert raw[8 + size :] == bytes(-size & 3)  # zeros
    assert int.from_bytes(raw[5:8], "big") == 8 + size  # length excludes padding
    assert one_avp(raw).value == data


def test_non_zero_padding_is_accepted_and_re_encoded_as_zeros() -> None:
    raw = raw_avp(263, M, b"abcde", pad=b"\xff\xee\xdd")
    decoded = codec.decode(raw_message(raw))
    assert decoded.avps[0].value == "abcde"
    assert decoded.encode() == raw_message(raw_avp(263, M, b"abcde"))


def test_last_child_without_padding_inside_a_group_is_accepted() -> None:
    # the group's length stops right after its last child's data (no inner padding)
    child = raw_avp(444, M, b"xyz")[:-1]
    group = raw_avp(443, M, child)
    assert len(group) == 20
    decoded = one_avp(group)
    assert decoded.get(A.AVP_SUBSCRIPTION_ID_DATA) == "xyz"
    assert decoded.encode() == raw_avp(443, M, raw_avp(444, M, b"xyz"))  # canonical form


# -- unknown AVPs -----------------------------------------------------------------------------


def test_unknown_avps_are_kept_opaque_and_re_encode_exactly() -> None:
    # an unknown vendor AVP whose payload looks like AVPs (must not be split), with odd length,
    # and an unknown IETF AVP with the M and P bits
    fake_inner = raw_avp(263, M, b"x")
    unknown_vendor = raw_avp(9999, V | M, fake_inner + b"\x01", vendor=99999)
    unknown_ietf = raw_avp(4242, M | P, b"\xde\xad\xbe\xef\x01")
    message = raw_message(raw_avp(263, M, b"s;1") + unknown_vendor + unknown_ietf)
    decoded = codec.decode(message)
    _, uv, ui = decoded.avps
    assert not uv.known
    assert uv.children is None
    assert uv.value == fake_inner + b"\x01"
    assert (uv.code, uv.vendor, uv.flags) == (9999, 99999, V | M)
    assert uv.name == "AVP(9999/99999)"
    assert ui.value == b"\xde\xad\xbe\xef\x01"
    assert ui.name == "AVP(4242)"
    assert decoded.encode() == message
    assert codec.find_unknown_mandatory(decoded.avps) is uv


def test_unknown_avp_inside_known_grouped_is_kept() -> None:
    unknown = raw_avp(7777, V, b"opaque!", vendor=12345)
    mscc = raw_avp(456, M, raw_avp(432, M, struct.pack(">I", 10)) + unknown)
    message = raw_message(mscc)
    decoded = codec.decode(message)
    assert decoded.encode() == message
    mscc_avp = decoded.avps[0]
    assert mscc_avp.children is not None
    assert mscc_avp.children[1].value == b"opaque!"
    assert codec.find_unknown_mandatory(decoded.avps) is None  # not mandatory
    with_m = raw_message(raw_avp(456, M, raw_avp(7777, V | M, b"opaque!", vendor=12345)))
    found = codec.find_unknown_mandatory(codec.decode(with_m).avps)
    assert found is not None
    assert found.code == 7777


def test_encoding_an_unknown_avp_needs_bytes() -> None:
    key = make_key(9999, 99999)
    assert avp(key, b"\x01\x02").encode() == raw_avp(9999, V, b"\x01\x02", vendor=99999)
    with pytest.raises(TypeError):
        avp(key, 5)


# -- messages ---------------------------------------------------------------------------------


def test_message_header_round_trip() -> None:
    message = build_message(
        272, 4, [text(A.AVP_SESSION_ID, "a;b")], hbh_id=0xDEADBEEF, e2e_id=0x01020304
    )
    raw = message.encode()
    assert raw[:4] == bytes([1, 0, 0, len(raw)])
    assert raw[4] == FLAG_REQUEST | FLAG_PROXIABLE
    assert raw[5:8] == (272).to_bytes(3, "big")
    assert raw[8:20] == bytes.fromhex("00000004deadbeef01020304")
    decoded = codec.decode(raw)
    assert (decoded.command, decoded.app_id, decoded.hbh_id, decoded.e2e_id) == (
        272,
        4,
        0xDEADBEEF,
        0x01020304,
    )
    assert decoded.is_request
    assert decoded.is_proxiable
    assert not decoded.is_error
    assert not decoded.is_retransmit
    assert decoded.get(A.AVP_SESSION_ID) == "a;b"
    assert codec.decode_header(raw) == (len(raw), 0xC0, 272, 4, 0xDEADBEEF, 0x01020304)


def test_answer_header_keeps_ids_and_proxiable_bit() -> None:
    request = codec.decode(raw_message(b"", flags=FLAG_REQUEST | FLAG_PROXIABLE | FLAG_RETRANSMIT))
    assert request.is_retransmit
    answer = request.answer_header()
    assert (answer.command, answer.app_id, answer.hbh_id, answer.e2e_id) == (272, 4, 7, 9)
    assert answer.flags == FLAG_PROXIABLE
    assert request.answer_header(FLAG_ERROR).is_error


def test_error_bit_on_answer_is_fine() -> None:
    decoded = codec.decode(raw_message(b"", flags=FLAG_ERROR))
    assert decoded.is_error
    assert not decoded.is_request


def test_empty_message_and_repr() -> None:
    decoded = codec.decode(raw_message(b""))
    assert decoded.avps == []
    assert decoded.find(A.AVP_SESSION_ID) is None
    assert decoded.find_all(A.AVP_SESSION_ID) == []
    assert decoded.get(A.AVP_SESSION_ID, "none") == "none"
    assert "request" in repr(decoded)
    assert "Session-Id" in repr(one_avp(raw_avp(263, M, b"s")))


def test_repr_of_an_invalid_value_does_not_raise() -> None:
    a = one_avp(raw_avp(268, M, b"\x01\x02\x03"))
    assert "Result-Code" in repr(a)


def test_append_and_payload() -> None:
    message = build_message(280, 0, [], request=True, proxiable=False)
    message.append(text(A.AVP_ORIGIN_HOST, "a"))
    decoded = codec.decode(message.encode())
    assert decoded.flags == FLAG_REQUEST
    assert decoded.avps[0].payload == b"a"
    mscc = codec.decode(
        build_message(
            272, 4, [grouped(A.AVP_SUBSCRIPTION_ID, [u32(A.AVP_RATING_GROUP, 1)])]
        ).encode()
    ).avps[0]
    assert mscc.payload == u32(A.AVP_RATING_GROUP, 1).encode()


def test_avps_compare_by_key_flags_and_bytes() -> None:
    assert u32(A.AVP_RESULT_CODE, 2001) == u32(A.AVP_RESULT_CODE, 2001)
    assert u32(A.AVP_RESULT_CODE, 2001) != u32(A.AVP_RESULT_CODE, 2002)
    assert u32(A.AVP_RESULT_CODE, 2001) != avp(A.AVP_RESULT_CODE, 2001, flags=0)
    assert len({u32(A.AVP_RESULT_CODE, 2001), u32(A.AVP_RESULT_CODE, 2001)}) == 1


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (struct.pack(">II", 263, (M << 24) | 7), "AVP length below the header size"),
        (struct.pack(">II", 263, (M << 24) | 0), "AVP length zero"),
        (struct.pack(">III", 263, ((V | M) << 24) | 11, 10415), "vendor AVP shorter than 12"),
        (struct.pack(">II", 263, (M << 24) | 64) + b"abcd", "AVP overruns the message"),
        (raw_avp(263, M, b"abcd") + b"\0\0\0\0", "trailing bytes shorter than an AVP header"),
        (raw_avp(443, M, struct.pack(">II", 444, (M << 24) | 40)), "child overruns its group"),
    ],
)
def test_invalid_avp_length(body: bytes, why: str) -> None:
    with pytest.raises(InvalidAvpLength) as err:
        codec.decode(raw_message(body))
    assert err.value.result_code == ResultCode.DIAMETER_INVALID_AVP_LENGTH == 5014, why


def test_invalid_avp_length_names_the_failed_avp() -> None:
    body = raw_avp(263, M, b"ok") + struct.pack(">II", 268, (M << 24) | 5) + b"\0\0\0\0"
    with pytest.raises(InvalidAvpLength) as err:
        codec.decode(raw_message(body))
    failed = err.value.failed_avp
    assert failed is not None
    assert failed.code == 268
    # the copy we send back in Failed-AVP is itself well formed
    assert codec.decode(raw_message(grouped(A.AVP_FAILED_AVP, [failed]).encode())).avps


@pytest.mark.parametrize("bit", [0x01, 0x02, 0x04, 0x08, 0x10])
def test_reserved_avp_bits(bit: int) -> None:
    with pytest.raises(InvalidAvpBits) as err:
        codec.decode(raw_message(raw_avp(263, M | bit, b"abcd")))
    assert err.value.result_code == ResultCode.DIAMETER_INVALID_AVP_BITS == 3009
    failed = err.value.failed_avp
    assert failed is not None
    assert failed.code == 263
    assert failed.flags == M


@pytest.mark.parametrize("bit", [0x01, 0x02, 0x04, 0x08])
def test_reserved_header_bits(bit: int) -> None:
    with pytest.raises(InvalidHeaderBits) as err:
        codec.decode(raw_message(b"", flags=FLAG_REQUEST | bit))
    assert err.value.result_code == ResultCode.DIAMETER_INVALID_HDR_BITS == 3008


def test_error_bit_on_request() -> None:
    with pytest.raises(InvalidHeaderBits) as err:
        codec.decode(raw_message(b"", flags=FLAG_REQUEST | FLAG_ERROR))
    assert err.value.result_code == 3008


def test_invalid_utf8_is_invalid_value_on_access_only() -> None:
    a = one_avp(raw_avp(263, M, b"abc\xff\xfe"))  # decoding the message succeeds
    with pytest.raises(InvalidAvpValue) as err:
        _ = a.value
    assert err.value.result_code == ResultCode.DIAMETER_INVALID_AVP_VALUE == 5004
    assert err.value.failed_avp is a
    assert isinstance(err.value, DiameterError)


@pytest.mark.parametrize(
    ("code", "vendor", "size"),
    [
        (268, None, 3),  # Unsigned32
        (268, None, 5),
        (268, None, 0),
        (416, None, 8),  # Enumerated
        (421, None, 4),  # Unsigned64
        (447, None, 7),  # Integer64
        (55, None, 8),  # Time
        (2001, VENDOR_3GPP, 2),  # Integer32
    ],
)
def test_wrong_size_numbers_are_invalid_length_on_access(
    code: int, vendor: int | None, size: int
) -> None:
    flags = M | (V if vendor else 0)
    a = one_avp(raw_avp(code, flags, bytes(size), vendor))
    with pytest.raises(InvalidAvpLength) as err:
        _ = a.value
    assert err.value.result_code == ResultCode.DIAMETER_INVALID_AVP_LENGTH == 5014
    assert err.value.failed_avp is a


def test_message_length_must_match_the_buffer() -> None:
    raw = raw_message(raw_avp(263, M, b"abcd"))
    for bad in (raw[:-4], raw + b"\0\0\0\0"):
        with pytest.raises(codec.FramingError) as err:
            codec.decode(bad)
        assert err.value.result_code == 5015


def test_decode_header_errors() -> None:
    raw = raw_message(b"")
    with pytest.raises(codec.FramingError) as err:
        codec.decode(raw[:19])
    assert err.value.result_code == 5015
    with pytest.raises(codec.FramingError) as err:
        codec.decode(b"\x02" + raw[1:])
    assert err.value.result_code == 5011
    with pytest.raises(codec.FramingError) as err:
        codec.decode(b"\x01\x00\x00\x15" + raw[4:] + b"\0")
    assert err.value.result_code == 5015


def _nested_groups(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        inner = raw_avp(443, M, inner)  # Subscription-Id in Subscription-Id in ...
    return raw_message(inner)


def test_deeply_nested_groups_are_refused_not_a_stack_overflow() -> None:
    ok = codec.decode(_nested_groups(codec.MAX_GROUPED_DEPTH))
    assert len(list(ok.walk())) == codec.MAX_GROUPED_DEPTH
    assert ok.encode() == _nested_groups(codec.MAX_GROUPED_DEPTH)
    for depth in (codec.MAX_GROUPED_DEPTH + 1, 50_000):  # 400 kB: under the framer's limit
        with pytest.raises(InvalidAvpValue) as err:
            codec.decode(_nested_groups(depth))
        assert err.value.result_code == 5004
        assert err.value.failed_avp is not None
        assert err.value.failed_avp.code == 443
