"""Shared helpers for the Diameter codec tests: the extracted capture vectors and a padding
normaliser that walks the *original* bytes (independently of the codec under test)."""

from __future__ import annotations

from pathlib import Path

from ocs.diameter.constants import AVP_FLAG_VENDOR, HEADER_LENGTH
from ocs.diameter.dictionary import GROUPED_KEYS

VECTORS_DIR = Path(__file__).resolve().parent.parent / "vectors"


def vector_files() -> list[Path]:
    return sorted(VECTORS_DIR.glob("*.hex"))


def load_vector_file(path: Path) -> list[bytes]:
    return [bytes.fromhex(line) for line in path.read_text().split()]


def all_vectors() -> list[tuple[str, int, bytes]]:
    """(capture name, index in capture, message bytes) for every extracted message."""
    return [
        (path.stem, i, raw)
        for path in vector_files()
        for i, raw in enumerate(load_vector_file(path))
    ]


def zero_padding(raw: bytes) -> bytes:
    """``raw`` with every AVP padding byte set to zero.

    Recurses into the grouped AVPs our dictionary knows (those the codec re-encodes from their
    children); unknown AVPs are opaque to the codec, so their payload, padding included, is kept.
    """
    out = bytearray(raw)
    _zero_avps(out, HEADER_LENGTH, len(out))
    return bytes(out)


def _zero_avps(buf: bytearray, start: int, end: int) -> None:
    off = start
    while off < end:
        code = int.from_bytes(buf[off : off + 4], "big")
        flags = buf[off + 4]
        length = int.from_bytes(buf[off + 5 : off + 8], "big")
        if flags & AVP_FLAG_VENDOR:
            vendor = int.from_bytes(buf[off + 8 : off + 12], "big")
            data_start = off + 12
        else:
            vendor = 0
            data_start = off + 8
        data_end = off + length
        if (code | vendor << 32) in GROUPED_KEYS:
            _zero_avps(buf, data_start, data_end)
        padded_end = min(end, data_end + (-length & 3))
        buf[data_end:padded_end] = bytes(padded_end - data_end)
        off = padded_end
