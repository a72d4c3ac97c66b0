"""Framer: whole messages out of an arbitrarily chunked byte stream, RFC 6733 framing errors."""

from __future__ import annotations

import random
import struct

import pytest

from ocs.diameter import avp_codes as A
from ocs.diameter.codec import build_message, text, u32
from ocs.diameter.constants import ResultCode
from ocs.diameter.errors import DiameterError, FramingError
from ocs.diameter.framer import DEFAULT_MAX_MESSAGE, Framer


def _message(i: int, size: int = 0) -> bytes:
    return build_message(
        272,
        4,
        [text(A.AVP_SESSION_ID, f"s;{i};" + "x" * size), u32(A.AVP_CC_REQUEST_NUMBER, i)],
        hbh_id=i,
        e2e_id=i,
    ).encode()


MESSAGES = [_message(i, size) for i, size in enumerate([0, 1, 2, 3, 100, 5000, 7])]
STREAM = b"".join(MESSAGES)


def _feed_in_chunks(framer: Framer, data: bytes, cuts: list[int]) -> list[bytes]:
    out: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(data)]:
        out.extend(framer.feed(data[prev:cut]))
        prev = cut
    return out


def test_one_message_in_one_chunk() -> None:
    framer = Framer()
    assert framer.feed(MESSAGES[0]) == [MESSAGES[0]]
    assert framer.buffered == 0


def test_several_messages_in_one_chunk() -> None:
    framer = Framer()
    assert framer.feed(STREAM) == MESSAGES
    assert framer.buffered == 0


def test_byte_by_byte() -> None:
    framer = Framer()
    out = _feed_in_chunks(framer, STREAM, list(range(1, len(STREAM))))
    assert out == MESSAGES
    assert framer.buffered == 0


def test_every_split_point_of_two_messages() -> None:
    data = MESSAGES[0] + MESSAGES[1]
    for cut in range(len(data) + 1):
        framer = Framer()
        assert _feed_in_chunks(framer, data, [cut]) == MESSAGES[:2], cut


def test_random_chunk_boundaries() -> None:
    rng = random.Random(6733)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 40)))
        framer = Framer()
        assert _feed_in_chunks(framer, STREAM, cuts) == MESSAGES


def test_partial_message_stays_buffered() -> None:
    framer = Framer()
    assert framer.feed(MESSAGES[4][:3]) == []  # not even a length yet
    assert framer.buffered == 3
    assert framer.feed(MESSAGES[4][3:50]) == []
    assert framer.buffered == 50
    assert framer.feed(MESSAGES[4][50:] + MESSAGES[5][:10]) == [MESSAGES[4]]
    assert framer.buffered == 10
    assert framer.feed(b"") == []
    assert framer.feed(MESSAGES[5][10:]) == [MESSAGES[5]]


def test_output_is_bytes_not_a_view_of_the_buffer() -> None:
    framer = Framer()
    framer.feed(MESSAGES[0][:10])
    (out,) = framer.feed(MESSAGES[0][10:])
    assert type(out) is bytes
    assert out == MESSAGES[0]


@pytest.mark.parametrize("version", [0, 2, 255])
def test_version_other_than_1_is_5011(version: int) -> None:
    bad = bytes([version]) + MESSAGES[0][1:]
    with pytest.raises(FramingError) as err:
        Framer().feed(bad)
    assert err.value.result_code == ResultCode.DIAMETER_UNSUPPORTED_VERSION == 5011
    assert err.value.header == bad[:20]
    assert isinstance(err.value, DiameterError)


def test_bad_version_is_found_after_good_messages_and_as_soon_as_4_bytes_arrive() -> None:
    framer = Framer()
    assert framer.feed(MESSAGES[0]) == [MESSAGES[0]]
    with pytest.raises(FramingError):
        framer.feed(b"\x02\x00\x00\x14")


@pytest.mark.parametrize("length", [0, 4, 16, 19, 21, 22, 23, 101])
def test_length_below_20_or_not_a_multiple_of_4_is_5015(length: int) -> None:
    header = struct.pack(">I", (1 << 24) | length) + bytes(16)
    with pytest.raises(FramingError) as err:
        Framer().feed(header)
    assert err.value.result_code == ResultCode.DIAMETER_INVALID_MESSAGE_LENGTH == 5015


def test_length_over_the_maximum_is_5015_before_buffering_it() -> None:
    framer = Framer(max_length=1024)
    header = struct.pack(">I", (1 << 24) | 1028)
    with pytest.raises(FramingError) as err:
        framer.feed(header)
    assert err.value.result_code == 5015
    assert Framer(max_length=1024).feed(_message(1, 900)[:4]) == []  # 1,024 or less is fine


def test_default_maximum() -> None:
    assert DEFAULT_MAX_MESSAGE == 1 << 20
    with pytest.raises(FramingError):
        Framer().feed(struct.pack(">I", (1 << 24) | 0xFFFFFC))


def test_zero_length_stream_header_cannot_loop_forever() -> None:
    with pytest.raises(FramingError):
        Framer().feed(bytes(64))
