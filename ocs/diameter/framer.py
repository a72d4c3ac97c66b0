"""Stream framer: buffers bytes from a transport and yields whole messages by the 24-bit length.

A framing error (version != 1, length < 20 or not a multiple of 4, length over the configured
maximum) leaves the stream unrecoverable: the caller answers if it can and closes the
connection (RFC 6733 3, 7.1.5).
"""

from __future__ import annotations

import struct
from typing import Final

from .constants import DIAMETER_VERSION, HEADER_LENGTH, ResultCode
from .errors import FramingError

_U32: Final = struct.Struct(">I")
DEFAULT_MAX_MESSAGE: Final = 1 << 20  # 1 MiB: far above any CCR, far below memory trouble
# Before its CER a connection is nobody: a CER is a few hundred bytes (freeDiameter's ~300,
# with every Host-IP-Address and application of a large gateway well under 4 KiB).
DEFAULT_MAX_CER: Final = 4096


class Framer:
    __slots__ = ("_buf", "max_length")

    def __init__(self, max_length: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self.max_length = max_length

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete message now available, in order."""
        buf = self._buf
        view: bytes | bytearray
        if buf:
            buf += data
            view = buf
        else:
            view = data
        out: list[bytes] = []
        off = 0
        end = len(view)
        unpack = _U32.unpack_from
        while end - off >= 4:
            word = unpack(view, off)[0]
            length = word & 0xFFFFFF
            if word >> 24 != DIAMETER_VERSION:
                raise FramingError(
                    f"unsupported Diameter version {word >> 24}",
                    ResultCode.DIAMETER_UNSUPPORTED_VERSION,
                    bytes(view[off : off + HEADER_LENGTH]),
                )
            if length < HEADER_LENGTH or length & 3 or length > self.max_length:
                raise FramingError(
                    f"invalid message length {length}",
                    ResultCode.DIAMETER_INVALID_MESSAGE_LENGTH,
                    bytes(view[off : off + HEADER_LENGTH]),
                )
            if end - off < length:
                break
            out.append(bytes(view[off : off + length]))
            off += length
        if view is buf:
            del buf[:off]
        elif off < end:
            buf += view[off:]
        return out
