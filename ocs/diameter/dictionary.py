"""The AVP dictionary: (code, vendor) -> name, data type, M-bit rule.

Loaded once from ``avps.tsv`` (package data). Keys are ``code | vendor << 32`` so that a lookup
is one int hash. Unknown AVPs are not an error here: the codec keeps them opaque.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from typing import Final

from .constants import AVP_FLAG_MANDATORY, AVP_FLAG_VENDOR, VENDOR_SHIFT


class AvpType(IntEnum):
    OCTET_STRING = 1
    INTEGER32 = 2
    INTEGER64 = 3
    UNSIGNED32 = 4
    UNSIGNED64 = 5
    FLOAT32 = 6
    FLOAT64 = 7
    GROUPED = 8
    ADDRESS = 9
    TIME = 10
    UTF8_STRING = 11
    DIAMETER_IDENTITY = 12
    DIAMETER_URI = 13
    ENUMERATED = 14
    IP_FILTER_RULE = 15
    QOS_FILTER_RULE = 16


_TYPE_CODES: Final = {
    "os": AvpType.OCTET_STRING,
    "i32": AvpType.INTEGER32,
    "i64": AvpType.INTEGER64,
    "u32": AvpType.UNSIGNED32,
    "u64": AvpType.UNSIGNED64,
    "f32": AvpType.FLOAT32,
    "f64": AvpType.FLOAT64,
    "grp": AvpType.GROUPED,
    "addr": AvpType.ADDRESS,
    "time": AvpType.TIME,
    "utf8": AvpType.UTF8_STRING,
    "id": AvpType.DIAMETER_IDENTITY,
    "uri": AvpType.DIAMETER_URI,
    "enum": AvpType.ENUMERATED,
    "ipf": AvpType.IP_FILTER_RULE,
    "qosf": AvpType.QOS_FILTER_RULE,
}


@dataclass(frozen=True, slots=True)
class AvpDef:
    key: int
    name: str
    type: AvpType
    mandatory: bool

    @property
    def code(self) -> int:
        return self.key & 0xFFFFFFFF

    @property
    def vendor(self) -> int:
        return self.key >> VENDOR_SHIFT

    @property
    def flags(self) -> int:
        """Flags we set when we send this AVP."""
        flags = AVP_FLAG_VENDOR if self.vendor else 0
        return flags | (AVP_FLAG_MANDATORY if self.mandatory else 0)


def _load() -> dict[int, AvpDef]:
    text = resources.files(__package__).joinpath("avps.tsv").read_text(encoding="utf-8")
    table: dict[int, AvpDef] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        code, vendor, type_code, m_rule, name = raw.split("\t")
        key = int(code) | (int(vendor) << VENDOR_SHIFT)
        if key in table:
            raise ValueError(f"avps.tsv:{lineno}: duplicate AVP {name} ({code}/{vendor})")
        table[key] = AvpDef(key, name, _TYPE_CODES[type_code], m_rule == "M")
    return table


DICTIONARY: Final[dict[int, AvpDef]] = _load()
BY_NAME: Final[dict[str, AvpDef]] = {d.name: d for d in DICTIONARY.values()}
TYPE_OF: Final[dict[int, AvpType]] = {k: d.type for k, d in DICTIONARY.items()}
GROUPED_KEYS: Final[frozenset[int]] = frozenset(
    k for k, d in DICTIONARY.items() if d.type is AvpType.GROUPED
)
SEND_FLAGS: Final[dict[int, int]] = {k: d.flags for k, d in DICTIONARY.items()}


def avp_name(key: int) -> str:
    d = DICTIONARY.get(key)
    if d is not None:
        return d.name
    vendor = key >> VENDOR_SHIFT
    code = key & 0xFFFFFFFF
    return f"AVP({code}/{vendor})" if vendor else f"AVP({code})"


def make_key(code: int, vendor: int = 0) -> int:
    return code | (vendor << VENDOR_SHIFT)
