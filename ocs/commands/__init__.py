"""The subcommands of ``ocs``, one module per area, each with a ``register(sub)`` that adds its
parsers (see :mod:`ocs.cli` for the pattern and the one error path).

The helpers here are what every area uses: :func:`command` (a subcommand and its handler),
:func:`group` (a subcommand with actions, ``ocs token create|...``), the shared flag sets
(:func:`redis_flags`, :func:`database_flags`, :func:`store_flags`,
:func:`server_flags`) and :func:`run` (an async handler on uvloop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Coroutine, Iterator
from datetime import date
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ocs.config import Settings
from ocs.errors import UsageError

T = TypeVar("T")
Handler = Callable[[argparse.Namespace, Settings], int]
"""Runs one subcommand: returns its exit status (0, or 1 after reporting a partial outcome
such as rejected rows) and raises for anything else (``ocs.cli.describe`` maps it)."""


class Subparsers(Protocol):
    """What ``ArgumentParser.add_subparsers()`` returns (argparse's type is private)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def command(sub: Subparsers, name: str, handler: Handler, *, help: str) -> argparse.ArgumentParser:
    """Add subcommand ``name`` dispatched to ``handler``; returns its parser for its flags."""
    parser = sub.add_parser(name, help=help, description=help)
    # ``command``: the words naming it ("demo", "catalog apply"), for handlers shared by two
    parser.set_defaults(handler=handler, command=parser.prog.partition(" ")[2])
    return parser


def group(sub: Subparsers, name: str, *, help: str) -> Subparsers:
    """Add ``name`` whose actions are subcommands of their own (``ocs cdr drain``); ``ocs
    name`` alone prints its help and exits 2."""
    parser = sub.add_parser(name, help=help, description=help)

    def missing_action(args: argparse.Namespace, settings: Settings) -> int:
        parser.print_help()
        raise UsageError(f"{name}: give an action")

    parser.set_defaults(handler=missing_action, command=name)
    actions: Subparsers = parser.add_subparsers(metavar="ACTION")
    return actions


def log_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (OCS_LOG_LEVEL)")
    p.add_argument("--log-format", choices=["text", "json"], help="OCS_LOG_FORMAT, default text")


def _config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (also OCS_CONFIG)")
    p.add_argument("--data-dir", help="data directory of the embedded servers (OCS_DATA_DIR)")


def _redis(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", help="Redis URL (OCS_REDIS_URL); embedded Redis if unset")


def _database(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", help="PostgreSQL URL (OCS_DATABASE_URL); embedded if unset")


def redis_flags(p: argparse.ArgumentParser) -> None:
    """A command on the balance store (Redis) only."""
    _config(p)
    _redis(p)
    log_flags(p)


def database_flags(p: argparse.ArgumentParser) -> None:
    """A command on the offline store (PostgreSQL) only."""
    _config(p)
    _database(p)
    log_flags(p)


def store_flags(p: argparse.ArgumentParser) -> None:
    """A command on both stores (``ocs cdr drain``)."""
    _config(p)
    _redis(p)
    _database(p)
    log_flags(p)


def http_flags(p: argparse.ArgumentParser) -> None:
    """The listen address, the HTTP API and metrics ports."""
    p.add_argument("--host", help="listen address (OCS_HOST, default 127.0.0.1)")
    p.add_argument(
        "--http-port", type=int, help="HTTP API port (OCS_HTTP_PORT, default 8080; 0 disables)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics port (OCS_METRICS_PORT, default 9464; 0 disables)",
    )


def server_flags(p: argparse.ArgumentParser) -> None:
    """A command that serves Diameter, the HTTP API and metrics (``ocs serve``, ``ocs demo``)."""
    redis_flags(p)
    http_flags(p)
    p.add_argument("--port", type=int, help="Diameter port (OCS_PORT, default 3868)")
    p.add_argument(
        "--nchf-port",
        type=int,
        help="Nchf_ConvergedCharging port, HTTP/2 h2c and HTTP/1.1 (OCS_NCHF_PORT; 0: off; "
        "default off in ocs serve, 8090 in ocs demo; docs/nchf.md)",
    )
    p.add_argument("--origin-host", help="our Origin-Host (OCS_ORIGIN_HOST, default ocs.local)")
    p.add_argument("--origin-realm", help="our Origin-Realm (OCS_ORIGIN_REALM, default local)")


def iso_date(value: str) -> date:
    """``--date``, ``--from``, ``--to``: YYYY-MM-DD."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def folder(value: str) -> Path:
    """A folder argument (``--catalog``), made absolute here: it means the same folder
    wherever the command runs, and what is recorded (``ocs catalog apply``) stays valid."""
    return Path(value).expanduser().resolve()


@contextlib.contextmanager
def catalogue_at(folder: Path | None) -> Iterator[None]:
    """A catalogue error inside the block names its files with ``folder`` (the loader names
    them relative to the folder it read)."""
    from ocs.rating.errors import CatalogueError  # noqa: PLC0415

    try:
        yield
    except CatalogueError as exc:
        if folder is None:
            raise
        issues = [dataclasses.replace(i, file=str(folder / i.file)) for i in exc.issues]
        raise CatalogueError(issues) from None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run an async handler to completion on uvloop (asyncio's loop without it)."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(coro)
    return uvloop.run(coro)
