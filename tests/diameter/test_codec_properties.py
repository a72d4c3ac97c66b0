"""Property-based tests: every data type and random grouped trees round-trip; mutated bytes never
make the framer or the codec raise anything but the protocol errors of ocs.diameter.errors."""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv6Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocs.diameter import avp_codes as A
from ocs.diameter import codec
from ocs.diameter.codec import Avp, Message, avp, build_message, grouped
from ocs.diameter.constants import (
    AVP_FLAG_MANDATORY,
    AVP_FLAG_PROTECTED,
    AVP_FLAG_VENDOR,
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    FLAG_RETRANSMIT,
)
from ocs.diameter.dictionary import DICTIONARY, GROUPED_KEYS, AvpType, make_key
from ocs.diameter.errors import DiameterError
from ocs.diameter.framer import Framer

from .conftest import all_vectors

# OCS_FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps the suite quick on 2 shared cores
EXAMPLES = int(os.environ.get("OCS_FUZZ_EXAMPLES", "300"))
PROPS = settings(
    max_examples=EXAMPLES,
    deadline=None,  # shared 2-core machine: no timing assertions
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(PROPS, max_examples=max(1, EXAMPLES // 2))

U32 = st.integers(0, 2**32 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)
U64 = st.integers(0, 2**64 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
NTP_ERA0_START = datetime(1968, 1, 20, 3, 14, 8, tzinfo=UTC)  # NTP 0x80000000
NTP_ERA1_END = datetime(2104, 2, 26, 9, 42, 23, tzinfo=UTC)  # NTP 0x7FFFFFFF in era 1
DATETIMES = st.integers(0, int((NTP_ERA1_END - NTP_ERA0_START).total_seconds())).map(
    lambda s: NTP_ERA0_START + timedelta(seconds=s)
)
IDENTITY = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
ADDRESSES = st.one_of(
    st.integers(0, 2**32 - 1).map(IPv4Address),
    st.integers(0, 2**128 - 1).map(IPv6Address),
    st.tuples(st.integers(3, 0xFFFF), st.binary(max_size=20)),
)


def _keys_of(t: AvpType) -> list[int]:
    return sorted(k for k, d in DICTIONARY.items() if d.type is t)


def _roundtrip(a: Avp) -> Avp:
    message = build_message(272, 4, [a])
    raw = message.encode()
    decoded = codec.decode(raw)
    assert decoded.encode() == raw
    (out,) = decoded.avps
    return out


# -- every data type round-trips --------------------------------------------------------------

TYPE_VALUES = {
    AvpType.UNSIGNED32: U32,
    AvpType.UNSIGNED64: U64,
    AvpType.INTEGER32: I32,
    AvpType.INTEGER64: I64,
    AvpType.ENUMERATED: I32,
    AvpType.OCTET_STRING: st.binary(max_size=64),
    AvpType.UTF8_STRING: st.text(max_size=40),
    AvpType.DIAMETER_IDENTITY: IDENTITY,
    AvpType.DIAMETER_URI: IDENTITY.map(lambda h: f"aaa://{h}:3868;transport=tcp"),
    AvpType.IP_FILTER_RULE: st.text(max_size=40),
    AvpType.TIME: DATETIMES,
    AvpType.ADDRESS: ADDRESSES,
}
LEAF_TYPES = sorted(TYPE_VALUES)


@st.composite
def known_leaf(draw: st.DrawFn) -> tuple[Avp, object]:
    t = draw(st.sampled_from([t for t in LEAF_TYPES if _keys_of(t)]))
    key = draw(st.sampled_from(_keys_of(t)))
    value = draw(TYPE_VALUES[t])
    return avp(key, value), value


@PROPS
@given(known_leaf())
def test_every_dictionary_type_round_trips(leaf: tuple[Avp, object]) -> None:
    built, value = leaf
    assert _roundtrip(built).value == value


@PROPS
@given(st.floats(width=32, allow_nan=False), st.floats(allow_nan=False))
def test_floats_round_trip(f32: float, f64: float) -> None:
    holder = Avp(A.AVP_CLASS, 0, b"")
    data32 = codec._encode_typed(AvpType.FLOAT32, f32)
    data64 = codec._encode_typed(AvpType.FLOAT64, f64)
    assert codec._decode_value(holder, AvpType.FLOAT32, data32) == f32
    assert codec._decode_value(holder, AvpType.FLOAT64, data64) == f64


@PROPS
@given(st.integers(0, 2**32 - 1))
def test_every_ntp_timestamp_round_trips(seconds: int) -> None:
    assert codec.datetime_to_ntp(codec.ntp_to_datetime(seconds)) == seconds


@PROPS
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0, AVP_FLAG_MANDATORY, AVP_FLAG_PROTECTED, 0x60]),
    st.binary(max_size=40),
    st.booleans(),
)
def test_unknown_avps_round_trip_opaque(
    code: int, vendor: int, flags: int, data: bytes, vendor_bit: bool
) -> None:
    key = make_key(code, vendor if vendor_bit else 0)
    if key in DICTIONARY:
        return
    built = Avp(key, flags | (AVP_FLAG_VENDOR if vendor_bit else 0), data)
    out = _roundtrip(built)
    assert (out.key, out.flags, out.value) == (built.key, built.flags, data)


# -- random grouped trees --------------------------------------------------------------------

GROUPED = sorted(GROUPED_KEYS)


def _unknown_key(code: int, vendor: int) -> int:
    key = make_key(code, vendor)
    return key if key not in DICTIONARY else make_key(code, 4_000_000_000)


def _unknown_avp(code: int, vendor: int, data: bytes) -> Avp:
    key = _unknown_key(code, vendor)
    return Avp(key, AVP_FLAG_VENDOR if key >> 32 else 0, data)


unknown_leaf = st.builds(
    _unknown_avp,
    st.integers(1, 2**32 - 1),
    st.sampled_from([0, 5535, 10415, 99999]),
    st.binary(max_size=24),
)
leaves = st.one_of(known_leaf().map(lambda lv: lv[0]), unknown_leaf)
trees = st.recursive(
    leaves,
    lambda children: (
        st.builds(
            grouped,
            st.sampled_from(GROUPED),
            st.lists(children, max_size=5),
        )
        | st.builds(
            # an unknown AVP whose payload is a valid AVP list: must stay opaque
            lambda code, kids: Avp(
                _unknown_key(code, 99999),
                AVP_FLAG_VENDOR,
                b"".join(k.encode() for k in kids),
            ),
            st.integers(1, 2**32 - 1),
            st.lists(children, max_size=3),
        )
    ),
    max_leaves=25,
)


def _shape(a: Avp) -> object:
    if a.children is not None:
        return (a.key, a.flags, [_shape(c) for c in a.children])
    return (a.key, a.flags, a.payload)


@PROPS
@given(st.lists(trees, max_size=6))
def test_random_grouped_trees_round_trip(avps: list[Avp]) -> None:
    message = build_message(272, 4, avps)
    raw = message.encode()
    decoded = codec.decode(raw)
    assert decoded.encode() == raw
    assert [_shape(a) for a in decoded.avps] == [_shape(a) for a in avps]
    for a in decoded.walk():
        _ = a.value  # every value we built is valid


messages = st.builds(
    Message,
    st.integers(0, 2**24 - 1),
    U32,
    st.sampled_from(
        [
            FLAG_REQUEST,
            FLAG_REQUEST | FLAG_PROXIABLE,
            FLAG_REQUEST | FLAG_RETRANSMIT,
            0,
            FLAG_PROXIABLE | FLAG_ERROR,
        ]
    ),
    U32,
    U32,
    st.lists(trees, max_size=6),
)


@PROPS
@given(messages)
def test_random_messages_round_trip(message: Message) -> None:
    raw = message.encode()
    assert len(raw) % 4 == 0
    decoded = codec.decode(raw)
    assert (decoded.command, decoded.app_id, decoded.flags, decoded.hbh_id, decoded.e2e_id) == (
        message.command,
        message.app_id,
        message.flags,
        message.hbh_id,
        message.e2e_id,
    )
    assert decoded.encode() == raw
    assert Framer().feed(raw + raw) == [raw, raw]


# -- mutated bytes: only protocol errors ------------------------------------------------------

# a few real messages (one of each kind per capture) plus generated ones as mutation seeds
_SEEN: set[tuple[str, int, int]] = set()
SEEDS: list[bytes] = []
for _name, _i, _raw in all_vectors():
    _kind = (_name, _raw[4] & 0x80, int.from_bytes(_raw[5:8], "big"))
    if _kind not in _SEEN:
        _SEEN.add(_kind)
        SEEDS.append(_raw)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = draw(st.sampled_from(SEEDS)) if draw(st.booleans()) else draw(messages).encode()
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "byte", "truncate", "insert", "delete", "length"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 12))]
        else:  # rewrite an AVP-length-sized field somewhere with a random 24-bit length
            data[pos : pos + 3] = draw(st.integers(0, 2**24 - 1)).to_bytes(3, "big")
    return bytes(data)


# Result-Codes the codec and framer may raise on bad input (RFC 6733 7.1)
DECODE_CODES = {3008, 3009, 5004, 5011, 5014, 5015}
VALUE_CODES = {5004, 5014}


def _read_everything(message: Message) -> None:
    """Read every value; re-encode, which must be canonical (a fixed point of decode/encode)."""
    for a in message.walk():
        try:
            _ = a.value
        except DiameterError as exc:
            assert exc.result_code in VALUE_CODES
            assert exc.failed_avp is a
        assert repr(a)
    again = message.encode()
    assert codec.decode(again).encode() == again
    codec.find_unknown_mandatory(message.avps)


def _decode(data: bytes) -> Message | None:
    try:
        return codec.decode(data)
    except DiameterError as exc:
        assert exc.result_code in DECODE_CODES
        return None


def _fix_header_length(data: bytes) -> bytes:
    """Make the header length agree with the buffer so the mutation reaches the AVPs."""
    if len(data) < 20:
        return data
    size = len(data) - (len(data) & 3)
    return data[:1] + size.to_bytes(3, "big") + data[4:size]


@PROPS
@given(mutated())
def test_mutated_bytes_raise_only_protocol_errors_from_decode(data: bytes) -> None:
    for candidate in (data, _fix_header_length(data)):
        message = _decode(candidate)
        if message is not None:
            _read_everything(message)


@PROPS
@given(mutated(), st.lists(st.integers(1, 200), max_size=8))
def test_mutated_stream_through_framer_and_decode(data: bytes, chunks: list[int]) -> None:
    framer = Framer(max_length=1 << 16)
    stream = SEEDS[0] + data + SEEDS[-1]
    off = 0
    sizes = [*chunks, len(stream)]
    try:
        for size in sizes:
            for raw in framer.feed(stream[off : off + size]):
                message = _decode(raw)
                if message is not None:
                    _read_everything(message)
            off += size
    except DiameterError as exc:  # from the framer: the connection would be closed
        assert exc.result_code in {5011, 5015}


@FEW
@given(st.binary(max_size=300))
def test_random_garbage_raises_only_protocol_errors(data: bytes) -> None:
    for candidate in (data, b"\x01" + data, _fix_header_length(b"\x01\x00\x00\x00" + data)):
        with contextlib.suppress(DiameterError):
            Framer().feed(candidate)
        message = _decode(candidate)
        if message is not None:
            _read_everything(message)
