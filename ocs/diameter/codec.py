"""Sans-I/O Diameter codec: bytes <-> :class:`Message` / :class:`Avp` (RFC 6733 3, 4).

Design, chosen for the hot path of an OCS:

* ``decode`` walks the whole AVP tree once, eagerly splitting grouped AVPs the dictionary knows
  and keeping every other AVP opaque (its payload bytes). Leaf *values* are decoded lazily, on
  first access to :attr:`Avp.value`, because a charging server reads a dozen of the ~80 AVPs of a
  CCR. Structural errors (bad AVP length, reserved bits) are found at decode time; a bad value
  (e.g. invalid UTF-8, an Unsigned32 of 3 bytes) when the value is read, as ``InvalidAvpValue``
  or ``InvalidAvpLength`` carrying the AVP for Failed-AVP.
* An AVP is identified by one int key, ``code | vendor << 32`` (see ``avp_codes``).
* Encoding builds AVPs whose payload is final at construction, so encoding a message is one
  header pack per AVP and a join. Padding is always written as zeros; decoded AVPs with non-zero
  padding re-encode canonically.

This module imports no asyncio and no charging code.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from .constants import (
    AVP_FLAG_MANDATORY,
    AVP_FLAG_VENDOR,
    AVP_FLAGS_RESERVED,
    DIAMETER_VERSION,
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    FLAG_RETRANSMIT,
    FLAGS_RESERVED,
    HEADER_LENGTH,
    VENDOR_SHIFT,
)
from .dictionary import DICTIONARY, GROUPED_KEYS, SEND_FLAGS, TYPE_OF, AvpType, avp_name
from .errors import (
    FramingError,
    InvalidAvpBits,
    InvalidAvpLength,
    InvalidAvpValue,
    InvalidHeaderBits,
)

_U32: Final = struct.Struct(">I")
_I32: Final = struct.Struct(">i")
_U64: Final = struct.Struct(">Q")
_I64: Final = struct.Struct(">q")
_F32: Final = struct.Struct(">f")
_F64: Final = struct.Struct(">d")
_AVP_HDR: Final = struct.Struct(">II")
_AVP_HDR_V: Final = struct.Struct(">III")
_MSG_HDR: Final = struct.Struct(">IIIII")
_PAD: Final = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by length & 3
_ZERO_PAD: Final = (b"", b"\0", b"\0\0", b"\0\0\0")  # indexed by pad length
_MASK32: Final = 0xFFFFFFFF
_MASK24: Final = 0xFFFFFF

# Time AVPs count seconds since 1900-01-01 (NTP); values with the top bit clear belong to the
# era starting 2036-02-07T06:28:16Z (RFC 6733 4.3.1, RFC 5905).
_NTP_EPOCH: Final = datetime(1900, 1, 1, tzinfo=UTC)
_NTP_ERA1: Final = datetime(2036, 2, 7, 6, 28, 16, tzinfo=UTC)

# Deepest nesting of grouped AVPs we decode. Real Gy messages nest 5 levels at most
# (Service-Information > PS-Information > QoS-Information > Allocation-Retention-Priority).
MAX_GROUPED_DEPTH: Final = 32

_ADDRESS_FAMILY_IPV4: Final = 1
_ADDRESS_FAMILY_IPV6: Final = 2

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AvpValue = Any  # int | float | str | bytes | datetime | IPAddress | list[Avp] | tuple[int, bytes]

_MISSING: Final = object()


class Avp:
    """One AVP. ``data`` is the payload without header and padding.

    For a grouped AVP, ``children`` holds the decoded members; ``data`` is None on decoded
    grouped AVPs (they re-encode from their children) and the canonical encoding on built ones.
    """

    __slots__ = ("_value", "children", "data", "flags", "key")

    def __init__(
        self, key: int, flags: int, data: bytes | None, children: list[Avp] | None = None
    ) -> None:
        self.key = key
        self.flags = flags
        self.data = data
        self.children = children
        self._value: object = _MISSING

    # -- identity -------------------------------------------------------------------------
    @property
    def code(self) -> int:
        return self.key & _MASK32

    @property
    def vendor(self) -> int:
        return self.key >> VENDOR_SHIFT

    @property
    def name(self) -> str:
        return avp_name(self.key)

    @property
    def mandatory(self) -> bool:
        return bool(self.flags & AVP_FLAG_MANDATORY)

    @property
    def known(self) -> bool:
        return self.key in TYPE_OF

    def __repr__(self) -> str:
        if self.children is not None:
            return f"<{self.name} {self.children!r}>"
        try:
            value = self.value
        except (InvalidAvpValue, InvalidAvpLength):
            value = self.data
        return f"<{self.name}={value!r}>"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Avp)
            and self.key == other.key
            and self.flags == other.flags
            and self.encode() == other.encode()
        )

    def __hash__(self) -> int:
        return hash((self.key, self.flags, self.encode()))

    # -- values ---------------------------------------------------------------------------
    @property
    def payload(self) -> bytes:
        """The payload bytes (for grouped AVPs: the canonical encoding of the children)."""
        if self.data is None:
            assert self.children is not None
            return b"".join([c.encode() for c in self.children])
        return self.data

    @property
    def value(self) -> AvpValue:
        """The decoded value, by dictionary type; unknown AVPs give their bytes."""
        v = self._value
        if v is _MISSING:
            if self.children is not None:
                v = self.children
            else:
                t = _TYPE_CODE.get(self.key, 0)
                assert self.data is not None
                v = self.data if t == 0 else _decode_value(self, t, self.data)
            self._value = v
        return v

    # -- grouped access -------------------------------------------------------------------
    def find(self, key: int) -> Avp | None:
        """First child with this key (None for leaf AVPs or when absent)."""
        children = self.children
        if children:
            for child in children:
                if child.key == key:
                    return child
        return None

    def find_all(self, key: int) -> list[Avp]:
        children = self.children
        if not children:
            return []
        return [c for c in children if c.key == key]

    def get(self, key: int, default: Any = None) -> AvpValue:
        """The value of the first child with this key, else ``default``."""
        children = self.children
        if children:
            for child in children:
                if child.key == key:
                    return child.value
        return default

    def walk(self) -> Iterator[Avp]:
        """This AVP and every AVP nested in it, depth first."""
        out: list[Avp] = []
        self._collect(out)
        return iter(out)

    def _collect(self, out: list[Avp]) -> None:
        # a list filled by plain recursion: far cheaper than nested generators once compiled
        out.append(self)
        children = self.children
        if children:
            for child in children:
                child._collect(out)

    # -- encoding -------------------------------------------------------------------------
    def encode(self) -> bytes:
        data = self.data
        if data is None:
            assert self.children is not None
            data = b"".join([c.encode() for c in self.children])
        n = len(data)
        key = self.key
        flags = self.flags
        if key > _MASK32 or flags & AVP_FLAG_VENDOR:
            # the V bit decides the header layout; it also covers a V bit with Vendor-Id 0
            hdr = _AVP_HDR_V.pack(
                key & _MASK32, ((flags | AVP_FLAG_VENDOR) << 24) | (n + 12), key >> 32
            )
        else:
            hdr = _AVP_HDR.pack(key, (flags << 24) | (n + 8))
        return hdr + data + _PAD[n & 3]


# Type codes as plain ints: comparing against these Final constants compiles (mypyc) to native
# int compares, where ``t is AvpType.X`` would look the enum member up on every call.
_T_OCTET_STRING: Final = 1
_T_INTEGER32: Final = 2
_T_INTEGER64: Final = 3
_T_UNSIGNED32: Final = 4
_T_UNSIGNED64: Final = 5
_T_FLOAT32: Final = 6
_T_FLOAT64: Final = 7
_T_ADDRESS: Final = 9
_T_TIME: Final = 10
_T_DIAMETER_IDENTITY: Final = 12
_T_DIAMETER_URI: Final = 13
_T_ENUMERATED: Final = 14
_TYPE_CODE: Final[dict[int, int]] = {key: int(t) for key, t in TYPE_OF.items()}


def _be32(data: bytes) -> int:
    return (data[0] << 24) | (data[1] << 16) | (data[2] << 8) | data[3]


def _be64(data: bytes) -> int:
    hi = (data[0] << 24) | (data[1] << 16) | (data[2] << 8) | data[3]
    lo = (data[4] << 24) | (data[5] << 16) | (data[6] << 8) | data[7]
    return (hi << 32) | lo


def _decode_value(avp: Avp, t: int, data: bytes) -> AvpValue:
    n = len(data)
    try:
        if t == _T_UNSIGNED32:
            if n != 4:
                raise InvalidAvpLength(f"{avp.name}: Unsigned32 of {n} bytes", avp)
            return _be32(data)
        if t in (_T_ENUMERATED, _T_INTEGER32):
            if n != 4:
                raise InvalidAvpLength(f"{avp.name}: Integer32 of {n} bytes", avp)
            v = _be32(data)
            return v - 0x100000000 if v & 0x80000000 else v
        if t == _T_UNSIGNED64:
            if n != 8:
                raise InvalidAvpLength(f"{avp.name}: Unsigned64 of {n} bytes", avp)
            return _be64(data)
        if t == _T_INTEGER64:
            if n != 8:
                raise InvalidAvpLength(f"{avp.name}: Integer64 of {n} bytes", avp)
            v = _be64(data)
            return v - 0x10000000000000000 if v & 0x8000000000000000 else v
        if t == _T_OCTET_STRING:
            return data
        if t == _T_TIME:
            if n != 4:
                raise InvalidAvpLength(f"{avp.name}: Time of {n} bytes", avp)
            return ntp_to_datetime(_be32(data))
        if t == _T_ADDRESS:
            return decode_address(data)
        if t == _T_FLOAT32:
            if n != 4:
                raise InvalidAvpLength(f"{avp.name}: Float32 of {n} bytes", avp)
            return _F32.unpack(data)[0]
        if t == _T_FLOAT64:
            if n != 8:
                raise InvalidAvpLength(f"{avp.name}: Float64 of {n} bytes", avp)
            return _F64.unpack(data)[0]
        if t in (_T_DIAMETER_IDENTITY, _T_DIAMETER_URI):
            return data.decode("ascii")
        # UTF8String, IPFilterRule, QoSFilterRule
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidAvpValue(f"{avp.name}: invalid text ({exc.reason})", avp) from None
    except ValueError as exc:
        raise InvalidAvpValue(f"{avp.name}: {exc}", avp) from None


def ntp_to_datetime(seconds: int) -> datetime:
    if seconds & 0x80000000:
        return _NTP_EPOCH + timedelta(seconds=seconds)
    return _NTP_ERA1 + timedelta(seconds=seconds)


def datetime_to_ntp(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("Time AVP values must be timezone-aware")
    if when >= _NTP_ERA1:
        return int((when - _NTP_ERA1).total_seconds())
    seconds = int((when - _NTP_EPOCH).total_seconds())
    if seconds < 0x80000000:
        raise ValueError(f"{when.isoformat()} is before 1968-01-20, not representable")
    return seconds


def decode_address(data: bytes) -> IPAddress | tuple[int, bytes]:
    """Address payload: 2-byte family (IANA address family numbers) then the address."""
    if len(data) < 2:
        raise ValueError("Address shorter than its family field")
    family = (data[0] << 8) | data[1]
    raw = data[2:]
    if family == _ADDRESS_FAMILY_IPV4:
        if len(raw) != 4:
            raise ValueError(f"IPv4 Address of {len(raw)} bytes")
        return ipaddress.IPv4Address(raw)
    if family == _ADDRESS_FAMILY_IPV6:
        if len(raw) != 16:
            raise ValueError(f"IPv6 Address of {len(raw)} bytes")
        return ipaddress.IPv6Address(raw)
    return (family, raw)


def encode_address(value: IPAddress | str | tuple[int, bytes]) -> bytes:
    if isinstance(value, tuple):
        family, raw = value
        return struct.pack(">H", family) + raw
    ip = ipaddress.ip_address(value) if isinstance(value, str) else value
    family = _ADDRESS_FAMILY_IPV4 if ip.version == 4 else _ADDRESS_FAMILY_IPV6
    return struct.pack(">H", family) + ip.packed


def decode_avps(buf: bytes, start: int, end: int, depth: int = 0) -> list[Avp]:
    """Split ``buf[start:end]`` into AVPs, recursing into grouped AVPs the dictionary knows.

    Written with plain int and bytes-index operations so that mypyc compiles it to native code.
    Grouped AVPs nested deeper than :data:`MAX_GROUPED_DEPTH` are refused (5004): without a
    bound, a 400 kB message of nested headers would exhaust the C stack of the compiled code.
    """
    avps: list[Avp] = []
    grouped = GROUPED_KEYS
    off = start
    while off < end:
        if end - off < 8:
            raise InvalidAvpLength(f"{end - off} trailing bytes after the last AVP at {off}")
        code = (buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]
        flags = buf[off + 4]
        length = (buf[off + 5] << 16) | (buf[off + 6] << 8) | buf[off + 7]
        if flags & AVP_FLAGS_RESERVED:
            raise InvalidAvpBits(
                f"reserved AVP flag bits set on AVP code {code}", _bad_avp(buf, off, end, code)
            )
        if flags & AVP_FLAG_VENDOR:
            if length < 12 or off + 12 > end:
                raise InvalidAvpLength(
                    f"vendor AVP code {code} with length {length}", _bad_avp(buf, off, end, code)
                )
            vendor = (
                (buf[off + 8] << 24) | (buf[off + 9] << 16) | (buf[off + 10] << 8) | buf[off + 11]
            )
            key = code | (vendor << 32)
            dstart = off + 12
        else:
            if length < 8:
                raise InvalidAvpLength(
                    f"AVP code {code} with length {length}", _bad_avp(buf, off, end, code)
                )
            key = code
            dstart = off + 8
        dend = off + length
        if dend > end:
            raise InvalidAvpLength(
                f"AVP code {code} length {length} overruns its container at {off}",
                _bad_avp(buf, off, end, code),
            )
        if key in grouped:
            if depth >= MAX_GROUPED_DEPTH:
                raise InvalidAvpValue(
                    f"grouped AVP code {code} nested deeper than {MAX_GROUPED_DEPTH} levels",
                    _bad_avp(buf, off, end, code),
                )
            avps.append(Avp(key, flags, None, decode_avps(buf, dstart, dend, depth + 1)))
        else:
            avps.append(Avp(key, flags, buf[dstart:dend]))
        off = dend + ((4 - (length & 3)) & 3)
    return avps


def _bad_avp(buf: bytes, off: int, end: int, code: int) -> Avp:
    """The offending AVP for Failed-AVP: its code and flags, and the first bytes of its data.

    Vendor and reserved bits are cleared so that the copy we send back is itself well formed.
    """
    flags = buf[off + 4] & AVP_FLAG_MANDATORY if off + 4 < end else 0
    return Avp(code, flags, bytes(buf[off + 8 : min(end, off + 8 + 64)]))


class Message:
    """A Diameter message: header fields plus the top-level AVP list."""

    __slots__ = ("app_id", "avps", "command", "e2e_id", "flags", "hbh_id")

    def __init__(
        self,
        command: int,
        app_id: int,
        flags: int,
        hbh_id: int,
        e2e_id: int,
        avps: list[Avp] | None = None,
    ) -> None:
        self.command = command
        self.app_id = app_id
        self.flags = flags
        self.hbh_id = hbh_id
        self.e2e_id = e2e_id
        self.avps: list[Avp] = avps if avps is not None else []

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_REQUEST)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)

    @property
    def is_retransmit(self) -> bool:
        return bool(self.flags & FLAG_RETRANSMIT)

    @property
    def is_proxiable(self) -> bool:
        return bool(self.flags & FLAG_PROXIABLE)

    def __repr__(self) -> str:
        kind = "request" if self.is_request else "answer"
        return (
            f"<Message {kind} cmd={self.command} app={self.app_id} flags={self.flags:#04x} "
            f"hbh={self.hbh_id:#x} e2e={self.e2e_id:#x} avps={self.avps!r}>"
        )

    def find(self, key: int) -> Avp | None:
        for avp in self.avps:
            if avp.key == key:
                return avp
        return None

    def find_all(self, key: int) -> list[Avp]:
        return [a for a in self.avps if a.key == key]

    def get(self, key: int, default: Any = None) -> AvpValue:
        for avp in self.avps:
            if avp.key == key:
                return avp.value
        return default

    def walk(self) -> Iterator[Avp]:
        """Every AVP of the message, nested ones included, depth first."""
        out: list[Avp] = []
        for avp in self.avps:
            avp._collect(out)
        return iter(out)

    def append(self, avp: Avp) -> None:
        self.avps.append(avp)

    def encode(self) -> bytes:
        body = b"".join([a.encode() for a in self.avps])
        return (
            _MSG_HDR.pack(
                (DIAMETER_VERSION << 24) | (HEADER_LENGTH + len(body)),
                (self.flags << 24) | self.command,
                self.app_id,
                self.hbh_id,
                self.e2e_id,
            )
            + body
        )

    def answer_header(self, flags: int = 0) -> Message:
        """An empty answer to this request: same command, application and ids, P bit kept."""
        return Message(
            self.command,
            self.app_id,
            (self.flags & FLAG_PROXIABLE) | flags,
            self.hbh_id,
            self.e2e_id,
        )


def decode_header(buf: bytes) -> tuple[int, int, int, int, int, int]:
    """(length, flags, command, app_id, hbh_id, e2e_id) of a message; checks version and length."""
    if len(buf) < HEADER_LENGTH:
        raise FramingError(f"message of {len(buf)} bytes is shorter than a header", 5015, buf)
    version = buf[0]
    length = (buf[1] << 16) | (buf[2] << 8) | buf[3]
    if version != DIAMETER_VERSION:
        raise FramingError(f"unsupported Diameter version {version}", 5011, buf[:HEADER_LENGTH])
    if length < HEADER_LENGTH or length & 3:
        raise FramingError(f"invalid message length {length}", 5015, buf[:HEADER_LENGTH])
    flags = buf[4]
    command = (buf[5] << 16) | (buf[6] << 8) | buf[7]
    app_id = (buf[8] << 24) | (buf[9] << 16) | (buf[10] << 8) | buf[11]
    hbh_id = (buf[12] << 24) | (buf[13] << 16) | (buf[14] << 8) | buf[15]
    e2e_id = (buf[16] << 24) | (buf[17] << 16) | (buf[18] << 8) | buf[19]
    return length, flags, command, app_id, hbh_id, e2e_id


def decode(buf: bytes) -> Message:
    """Decode one whole message (as produced by the :class:`~ocs.diameter.framer.Framer`).

    Raises :class:`FramingError` for header problems that make the stream unusable and the
    other :class:`~ocs.diameter.errors.DiameterError` subclasses for errors answerable with a
    Result-Code. Errors carry no partial message; use :func:`decode_header` for the ids.
    """
    length, flags, command, app_id, hbh_id, e2e_id = decode_header(buf)
    if length != len(buf):
        raise FramingError(f"header says {length} bytes, got {len(buf)}", 5015, buf[:HEADER_LENGTH])
    if flags & FLAGS_RESERVED:
        raise InvalidHeaderBits(f"reserved header flag bits set ({flags:#04x})")
    if flags & FLAG_REQUEST and flags & FLAG_ERROR:
        raise InvalidHeaderBits("E bit set on a request")
    return Message(command, app_id, flags, hbh_id, e2e_id, decode_avps(buf, HEADER_LENGTH, length))


def find_unknown_mandatory(avps: Iterable[Avp]) -> Avp | None:
    """The first AVP (at any depth of known grouped AVPs) with the M bit that we do not know."""
    for avp in avps:
        if avp.key not in TYPE_OF:
            if avp.flags & AVP_FLAG_MANDATORY:
                return avp
        elif avp.children and (found := find_unknown_mandatory(avp.children)) is not None:
            return found
    return None


# -- building AVPs ---------------------------------------------------------------------------


def _flags_for(key: int) -> int:
    flags = SEND_FLAGS.get(key)
    if flags is None:
        return AVP_FLAG_VENDOR if key > _MASK32 else 0
    return flags


def encode_value(key: int, value: AvpValue) -> bytes:
    """Encode ``value`` as the payload of AVP ``key``, by its dictionary type."""
    t = TYPE_OF.get(key)
    if t is None:
        if not isinstance(value, bytes):
            raise TypeError(f"{avp_name(key)} is not in the dictionary: pass bytes")
        return value
    return _encode_typed(t, value)


def _encode_typed(t: AvpType, value: AvpValue) -> bytes:
    if t is AvpType.UNSIGNED32:
        return _U32.pack(value)
    if t is AvpType.ENUMERATED or t is AvpType.INTEGER32:
        return _I32.pack(value)
    if t is AvpType.UNSIGNED64:
        return _U64.pack(value)
    if t is AvpType.INTEGER64:
        return _I64.pack(value)
    if t is AvpType.FLOAT32:
        return _F32.pack(value)
    if t is AvpType.FLOAT64:
        return _F64.pack(value)
    if t is AvpType.TIME:
        return _U32.pack(datetime_to_ntp(value) if isinstance(value, datetime) else value)
    if t is AvpType.ADDRESS:
        return encode_address(value)
    if t is AvpType.GROUPED:
        return b"".join([c.encode() for c in value])
    if isinstance(value, bytes):
        return value
    if t is AvpType.OCTET_STRING:
        raise TypeError("OctetString values are bytes")
    return str(value).encode("utf-8")


def avp(key: int, value: AvpValue, flags: int | None = None) -> Avp:
    """Build an AVP from a Python value; flags default to the dictionary's V/M rule."""
    if flags is None:
        flags = _flags_for(key)
    if key in GROUPED_KEYS or isinstance(value, list):
        children = list(value)
        return Avp(key, flags, b"".join([c.encode() for c in children]), children)
    return Avp(key, flags, encode_value(key, value))


def grouped(key: int, children: Sequence[Avp], flags: int | None = None) -> Avp:
    kids = list(children)
    return Avp(
        key,
        _flags_for(key) if flags is None else flags,
        b"".join([c.encode() for c in kids]),
        kids,
    )


def u32(key: int, value: int) -> Avp:
    return Avp(key, _flags_for(key), _U32.pack(value))


def u64(key: int, value: int) -> Avp:
    return Avp(key, _flags_for(key), _U64.pack(value))


def i32(key: int, value: int) -> Avp:
    """Integer32 and Enumerated."""
    return Avp(key, _flags_for(key), _I32.pack(value))


def text(key: int, value: str) -> Avp:
    """UTF8String, DiameterIdentity, DiameterURI."""
    return Avp(key, _flags_for(key), value.encode("utf-8"))


def octets(key: int, value: bytes) -> Avp:
    return Avp(key, _flags_for(key), value)


def build_message(
    command: int,
    app_id: int,
    avps: Iterable[Avp],
    *,
    request: bool = True,
    proxiable: bool = True,
    hbh_id: int = 0,
    e2e_id: int = 0,
) -> Message:
    flags = (FLAG_REQUEST if request else 0) | (FLAG_PROXIABLE if proxiable else 0)
    return Message(command, app_id, flags, hbh_id, e2e_id, list(avps))


__all__ = [
    "DICTIONARY",
    "MAX_GROUPED_DEPTH",
    "Avp",
    "AvpValue",
    "Message",
    "avp",
    "build_message",
    "decode",
    "decode_avps",
    "decode_header",
    "find_unknown_mandatory",
    "grouped",
    "i32",
    "octets",
    "text",
    "u32",
    "u64",
]
