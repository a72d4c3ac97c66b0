"""Logging set-up: plain text for a terminal, or one JSON object per line for a collector.

``--log-format json`` (``OCS_LOG_FORMAT=json``) writes, per record::

    {"ts": "2026-11-30T08:15:02.123Z", "level": "WARNING", "logger": "ocs.charging.sessions",
     "msg": "session state not written: ...", "session_id": "gw1;1;42", "result_code": 5012}

``ts`` is UTC with milliseconds; ``exc`` holds the formatted traceback when there is one.
Every field a caller passed with ``extra=`` (``session_id``, ``origin_host``,
``result_code``, ...) is added as it is (values JSON cannot hold are written with ``str``),
except terminal decoration: uvicorn's ``color_message`` is left out and ANSI escape
sequences are removed from every text, so a collector never stores colour codes.
Only warning and error paths pass such fields: the charging hot path does not log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Final, Literal, TextIO

from ocs.config import ConfigError

LogFormat = Literal["text", "json"]
LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DECORATION: Final = frozenset({"color_message"})  # uvicorn's coloured copy of the message
_ANSI: Final = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
# what a LogRecord holds of its own; any other attribute came from ``extra=``
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (no newline inside: tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": plain(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _DECORATION and not key.startswith("_"):
                out[key] = plain(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = plain(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc"] = plain(record.exc_text)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def plain(text: str) -> str:
    """``text`` without ANSI escape sequences (colours, cursor movement)."""
    return _ANSI.sub("", text)


def _utc(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Make the root logger write ``level`` and above to ``stream`` (stderr) in ``fmt``,
    replacing the handlers it had; returns the handler. An unknown ``level`` is a
    :class:`~ocs.config.ConfigError` naming the setting."""
    if not isinstance(logging.getLevelName(level.upper()), int):
        raise ConfigError(f"log_level: {level!r} is not one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_ToDebug())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn narrates its start and stop at INFO ("Started server process", ...; ocs says
    # where the API listens itself), fontTools each font subset of a PDF invoice: their
    # warnings and errors stay as they are.
    debug_only("uvicorn.error", "fontTools", up_to=logging.WARNING)
    return handler


_NARRATORS: dict[str, int] = {}  # logger name (and its children) -> level kept as it is


class _ToDebug(logging.Filter):
    """On our handler: records of a narrating library (:func:`debug_only`) below the level
    kept become DEBUG records, written only when the root logger writes DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        while True:
            up_to = _NARRATORS.get(name)
            if up_to is not None or "." not in name:
                break
            name = name.rpartition(".")[0]
        if up_to is None or record.levelno >= up_to:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def debug_only(*names: str, up_to: int = logging.CRITICAL + 1) -> None:
    """Send what the loggers ``names`` (and their children) write below level ``up_to`` (by
    default: everything, an embedded server's start-up narration) to the log at DEBUG level
    only. Applies to the handler :func:`configure_logging` installs."""
    for name in names:
        _NARRATORS[name] = up_to


def request_fields(view: Any, **more: Any) -> dict[str, Any]:
    """``extra=`` fields of a log line about a Diameter request: its ``session_id`` and
    ``origin_host`` (left out when the AVP is missing or malformed) and ``more``."""
    out: dict[str, Any] = {}
    for key in ("session_id", "origin_host"):
        try:
            out[key] = getattr(view, key)
        except Exception:  # a missing or malformed AVP: the line is still worth writing
            continue
    out.update(more)
    return out
