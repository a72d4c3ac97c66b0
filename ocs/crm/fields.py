"""Shared pieces of the row planners: the planned change of one item, CSV cell converters
and pydantic errors as (field, reason)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

PAYER_KINDS = ("postpaid_pool", "prepaid_pool", "wallet", "external_contract")


class RowError(Exception):
    """A row refused: ``field`` names the column or key path, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def claim_key(
    fields: dict[str, Any], column: str, label: str, lines: dict[str, int], line: int
) -> str:
    """The row's key in ``column`` (required), remembered with its line: a key that comes
    twice in one file is refused on its second line, naming the first."""
    key = fields.get(column)
    if not isinstance(key, str) or not key:
        raise RowError(column, "required")
    if key in lines:
        raise RowError(column, f"{label} is also on line {lines[key]}")
    lines[key] = line
    return key


@dataclass(slots=True)
class Change:
    """The item ``key`` of ``section`` goes from ``before`` (None: created) to ``after``.
    ``signal`` is the network command open sessions get ("rar", "asr" or None);
    ``subscriber`` the (IMSI, MSISDN) it goes to."""

    line: int
    section: str
    key: str
    before: dict[str, Any] | None
    after: dict[str, Any]
    signal: str | None = None
    subscriber: tuple[str, str | None] | None = None


def first_error(exc: ValidationError, prefix: str = "") -> RowError:
    err = exc.errors(include_url=False)[0]
    path = prefix
    for part in err["loc"]:
        if isinstance(part, str) and "[" in part:  # pydantic's union/tagged branch names
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return RowError(path or "row", str(err["msg"]))


def cell_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise RowError(name, f"not an integer: {value!r}") from None


def cell_json(name: str, value: str, kind: type) -> Any:
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise RowError(name, f"not JSON: {exc}") from None
    except RecursionError:
        raise RowError(name, "not JSON: nested too deeply") from None
    if not isinstance(parsed, kind):
        expected = "an array" if kind is list else "an object"
        raise RowError(name, f"must be {expected} in JSON")
    return parsed


def payer_value(name: str, value: object) -> object:
    """``kind:id`` (CSV and JSON) or ``{"kind": ..., "id": ...}`` (JSON) -> the mapping."""
    if not isinstance(value, str):
        return value
    kind, sep, ident = value.partition(":")
    if not sep or kind not in PAYER_KINDS:
        raise RowError(name, f"expected KIND:ID with KIND one of {', '.join(PAYER_KINDS)}")
    return {"kind": kind, "id": ident}


def properties_value(name: str, value: str) -> dict[str, int]:
    """``sensors=4;measurements_per_hour=12`` -> {"sensors": 4, ...} (CSV)."""
    out: dict[str, int] = {}
    for raw in value.split(";"):
        part = raw.strip()
        if not part:
            continue
        key, sep, number = part.partition("=")
        if not sep:
            raise RowError(name, f"expected NAME=COUNT;..., got {part!r}")
        out[key.strip()] = cell_int(f"{name}.{key.strip()}", number.strip())
    return out
