"""Read an import file into numbered rows: CSV with a header row, a JSON array of objects,
or JSON Lines (one object a line).

A row is the mapping of the fields it gives: an empty CSV cell, a JSON ``null`` or a
missing key means "not given" (an update keeps the current value). Cells stay text here;
the kind's module converts them. A file that cannot be read as a whole (not UTF-8, no
header, an unknown column, broken JSON array) raises :class:`FileError`, which names the
line; a single bad CSV record or JSON line becomes a rejected row and the rest goes on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Final, Literal

Format = Literal["csv", "json"]
FORMATS: Final = ("csv", "json")
_EXTENSIONS: Final[dict[str, Format]] = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
_MEDIA_TYPES: Final[dict[str, Format]] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/json": "json",
    "application/jsonl": "json",
    "application/x-ndjson": "json",
    "application/x-jsonlines": "json",
}
_MAX_CELL: Final = 64 * 1024  # characters in one CSV cell (twins may be long JSON)


class FileError(Exception):
    """The file cannot be read at all; ``line`` is 0 when no line is to blame."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}" if line else f"{file}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    fields: dict[str, Any] = field(default_factory=dict)
    text: bool = False  # CSV: every value is a string still to be converted
    problem: str | None = None  # the row could not be read (what the rejection says)


def format_of_name(name: str) -> Format | None:
    dot = name.rfind(".")
    return _EXTENSIONS.get(name[dot:].lower()) if dot >= 0 else None


def format_of_media_type(content_type: str) -> Format | None:
    return _MEDIA_TYPES.get(content_type.split(";", 1)[0].strip().lower())


def decode(file: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FileError(file, line, f"not UTF-8 (byte {exc.start})") from None


def read_rows(file: str, text: str, fmt: Format, columns: Collection[str]) -> list[Row]:
    """Every row of ``text`` with the line it starts on; ``columns`` are the known fields."""
    if fmt == "csv":
        return _read_csv(file, text, columns)
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _read_json_array(file, text, columns)
    return _read_json_lines(file, text, columns)


def _read_csv(file: str, text: str, columns: Collection[str]) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[Row] = []
    header: list[str] | None = None
    start = 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record or all(not cell.strip() for cell in record):
                continue
            if header is None:
                header = _header(file, line, record, columns)
                continue
            if len(record) != len(header):
                problem = f"{len(record)} cells, the header has {len(header)}"
                rows.append(Row(line, problem=problem))
                continue
            cells = {}
            for name, cell in zip(header, record, strict=True):
                value = cell.strip()
                if len(value) > _MAX_CELL:
                    rows.append(Row(line, problem=f"{name}: cell longer than {_MAX_CELL}"))
                    break
                if value:
                    cells[name] = value
            else:
                rows.append(Row(line, cells, text=True))
    except csv.Error as exc:
        raise FileError(file, start, f"malformed CSV: {exc}") from None
    if header is None:
        raise FileError(file, 0, "empty file: a CSV import needs a header row")
    return rows


def _header(file: str, line: int, record: list[str], columns: Collection[str]) -> list[str]:
    names = [cell.strip().lower() for cell in record]
    for name in names:
        if name not in columns:
            known = ", ".join(sorted(columns))
            raise FileError(file, line, f"unknown column {name!r} (known: {known})")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise FileError(file, line, f"column {name!r} given twice")
        seen.add(name)
    return names


def _object_row(line: int, value: object, columns: Collection[str]) -> Row:
    if not isinstance(value, dict):
        return Row(line, problem=f"expected a JSON object, got {_json_type(value)}")
    for key in value:
        if key not in columns:
            known = ", ".join(sorted(columns))
            return Row(line, problem=f"unknown field {key!r} (known: {known})")
    return Row(line, {k: v for k, v in value.items() if v is not None})


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )


def _read_json_lines(file: str, text: str, columns: Collection[str]) -> list[Row]:
    rows: list[Row] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError as exc:
            rows.append(Row(number, problem=f"not JSON: {exc}"))
            continue
        except RecursionError:  # nested deeper than the decoder goes
            rows.append(Row(number, problem="not JSON: nested too deeply"))
            continue
        rows.append(_object_row(number, value, columns))
    if not rows:
        raise FileError(file, 0, "empty file: no JSON rows")
    return rows


def _read_json_array(file: str, text: str, columns: Collection[str]) -> list[Row]:
    """A JSON array read element by element, so that each row knows its line."""
    decoder = json.JSONDecoder()
    rows: list[Row] = []
    pos = text.index("[") + 1
    line, counted = 1, 0

    def line_at(index: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, index)
        counted = index
        return line

    def skip(index: int) -> int:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        return index

    pos = skip(pos)
    if pos < len(text) and text[pos] == "]":
        pos += 1
    else:
        while True:
            start = skip(pos)
            try:
                value, pos = decoder.raw_decode(text, start)
            except ValueError as exc:
                raise FileError(file, line_at(start), f"malformed JSON: {exc}") from None
            except RecursionError:
                raise FileError(file, line_at(start), "malformed JSON: nested too deeply") from None
            rows.append(_object_row(line_at(start), value, columns))
            pos = skip(pos)
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            if pos < len(text) and text[pos] == "]":
                pos += 1
                break
            raise FileError(file, line_at(min(pos, len(text))), "malformed JSON: expected , or ]")
    if text[skip(pos) :].strip():
        raise FileError(file, line_at(skip(pos)), "malformed JSON: text after the array")
    return rows
