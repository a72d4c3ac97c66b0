"""A tag-driven BER reader (ITU-T X.690 8.1): type-length-value elements, no schema.

Enough for CDR files: identifier octets of any tag number (8.1.2.4, high tag numbers in
base-128), definite lengths in short and long form (8.1.3.4/5) and the indefinite form of
constructed values (8.1.3.6, ended by two zero octets). Every malformed element raises
``BerError`` naming the byte offset; nothing is read past the buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

UNIVERSAL: Final = 0
APPLICATION: Final = 1
CONTEXT: Final = 2
PRIVATE: Final = 3
MAX_LENGTH_OCTETS: Final = 4  # a CDR element never needs more than 4 GiB
MAX_DEPTH: Final = 32


class BerError(ValueError):
    """Malformed BER at ``offset`` (absolute, in the buffer given to the reader)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Element:
    """One TLV: its tag, where it and its content start in the buffer, its content octets."""

    cls: int
    constructed: bool
    tag: int
    offset: int
    content_offset: int
    content: bytes
    end: int  # offset just past the element

    def children(self) -> list[Element]:
        if not self.constructed:
            raise BerError(self.offset, f"tag [{self.tag}] is primitive, expected constructed")
        return list(read_elements(self.content, self.content_offset))

    def integer(self) -> int:
        """Two's complement INTEGER/ENUMERATED content (8.3)."""
        if not self.content:
            raise BerError(self.offset, f"tag [{self.tag}]: empty integer")
        return int.from_bytes(self.content, "big", signed=True)


def _header(buf: bytes, pos: int, base: int) -> tuple[int, bool, int, int, int | None]:
    """(class, constructed, tag, content start, length or None for indefinite)."""
    start = pos
    if pos >= len(buf):
        raise BerError(base + pos, "identifier missing")
    first = buf[pos]
    pos += 1
    cls, constructed, tag = first >> 6, bool(first & 0x20), first & 0x1F
    if tag == 0x1F:
        tag = 0
        for _ in range(5):
            if pos >= len(buf):
                raise BerError(base + start, "tag number runs past the end")
            octet = buf[pos]
            pos += 1
            tag = (tag << 7) | (octet & 0x7F)
            if not octet & 0x80:
                break
        else:
            raise BerError(base + start, "tag number longer than 5 octets")
    if pos >= len(buf):
        raise BerError(base + start, "length missing")
    first_len = buf[pos]
    pos += 1
    if first_len < 0x80:
        return cls, constructed, tag, pos, first_len
    count = first_len & 0x7F
    if count == 0:
        if not constructed:
            raise BerError(base + start, "indefinite length on a primitive element")
        return cls, constructed, tag, pos, None
    if count > MAX_LENGTH_OCTETS or pos + count > len(buf):
        raise BerError(base + start, f"length of {count} octets cannot be read")
    length = int.from_bytes(buf[pos : pos + count], "big")
    return cls, constructed, tag, pos + count, length


def _indefinite_end(buf: bytes, pos: int, base: int, depth: int) -> int:
    """Offset of the end-of-contents octets closing an indefinite value starting at pos."""
    if depth > MAX_DEPTH:
        raise BerError(base + pos, "nested too deeply")
    while True:
        if pos >= len(buf):
            raise BerError(base + pos, "indefinite value is not closed")
        if pos + 2 <= len(buf) and buf[pos] == 0 and buf[pos + 1] == 0:
            return pos
        _, _, _, start, length = _header(buf, pos, base)
        pos = _indefinite_end(buf, start, base, depth + 1) + 2 if length is None else start + length


def read_element(buf: bytes, pos: int = 0, base: int = 0) -> Element:
    """The element starting at ``buf[pos]`` (``base`` is added to reported offsets)."""
    cls, constructed, tag, start, length = _header(buf, pos, base)
    if length is None:
        stop = _indefinite_end(buf, start, base, 0)
        return Element(
            cls, constructed, tag, base + pos, base + start, buf[start:stop], base + stop + 2
        )
    if start + length > len(buf):
        raise BerError(
            base + pos, f"tag [{tag}] length {length} runs past the end ({len(buf) - start} left)"
        )
    content = buf[start : start + length]
    return Element(cls, constructed, tag, base + pos, base + start, content, base + start + length)


def read_elements(buf: bytes, base: int = 0) -> Iterator[Element]:
    """The consecutive elements filling ``buf``."""
    pos = 0
    while pos < len(buf):
        element = read_element(buf, pos, base)
        yield element
        pos = element.end - base
