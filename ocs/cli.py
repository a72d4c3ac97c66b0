"""The ``ocs`` command line: one parser, one handler per subcommand, one error path.

Each area registers its subcommands in a module of :mod:`ocs.commands` (``serve``: the
real-time side; ``offline``: PostgreSQL and CRM import); a subcommand's parser shows only its
own flags and names its handler with ``set_defaults(handler=...)``. Adding one, say ``ocs
audit``, is a few lines in the area's ``register`` (an action of a group, like ``ocs token
revoke``, is the same with ``command(token, "revoke", ...)``)::

    audit = command(sub, "audit", _audit, help="balances against the usage records")
    audit.add_argument("--tenant")
    store_flags(audit)  # or redis_flags, database_flags, server_flags: what it uses

    def _audit(args: argparse.Namespace, settings: Settings) -> int:
        from ocs.audit.cli import main_audit  # the feature's code, imported when run

        return main_audit(settings, tenant=args.tenant)

(a new area is a new module whose ``register`` is added to :data:`AREAS`). A handler returns
the exit status (0, or 1 after reporting a partial outcome such as rejected rows) and raises
for everything else: :func:`main` turns every exception into one ``ocs: error: ...`` line on
stderr (:func:`describe`): exit 2 when the command line or the settings are wrong
(:class:`~ocs.errors.UsageError`, a bad flag, a bad setting), 1 when the command failed (a
store unreachable, a port taken, a catalogue invalid, ...). Never a traceback: an unexpected
exception is one line too, and its traceback is logged at ``--log-level DEBUG``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

from ocs.commands import Subparsers, offline, serve
from ocs.config import FLAGS, ConfigError, Settings, parse_peer_flag
from ocs.errors import EXIT_FAILURE, EXIT_USAGE, CommandError, UsageError
from ocs.observability.logs import configure_logging

log = logging.getLogger("ocs.cli")

AREAS: Final[tuple[Callable[[Subparsers], None], ...]] = (serve.register, offline.register)
EXIT_INTERRUPTED: Final = 130

# Errors of our packages whose message already names what is wrong (file, field, reason):
# matched by name, and only when their module was imported (else nothing raised them), so
# that this module imports none of them.
_DOMAIN_ERRORS: Final = (
    ("ocs.offline.db", "DatabaseError"),
    ("ocs.offline.terms", "TermsError"),
    ("ocs.offline.billrun", "BillRunError"),
    ("ocs.offline.adjust", "AdjustmentError"),
    ("ocs.offline.render", "RenderError"),
    ("ocs.offline.einvoice.facturx", "FacturXError"),
    ("ocs.offline.einvoice.document", "DocumentError"),
    ("ocs.offline.reports", "ReportError"),
    ("ocs.charging.runtime", "NoCatalogue"),
    ("ocs.provisioning.errors", "Refused"),
    ("ocs.provisioning.identity", "IdentityTaken"),
)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors sent through :func:`main`'s one path."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        where = self.prog.removeprefix("ocs").strip()
        raise UsageError(f"{where}: {message}" if where else message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ocs", description="Online Charging System for IoT connectivity (Diameter Gy/Ro)"
    )
    sub: Subparsers = parser.add_subparsers(metavar="COMMAND")
    for register in AREAS:
        register(sub)
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    """The settings, with the flags this subcommand has (the others are None: not given)."""
    peers = [parse_peer_flag(p) for p in getattr(args, "peer", None) or ()]
    return Settings.load(
        getattr(args, "config", None),
        add_peers=peers,
        **{n: getattr(args, n, None) for n in FLAGS},
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings: Settings | None = None
    try:
        args = build_parser().parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            build_parser().print_help()
            return EXIT_USAGE
        settings = load_settings(args)
        configure_logging(settings.log_level, settings.log_format)
        return int(handler(args, settings))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except Exception as exc:
        code, message = describe(exc, settings)
        log.debug("ocs: %s", message, exc_info=exc)
        print(f"ocs: error: {message}", file=sys.stderr, flush=True)
        return code


def describe(exc: BaseException, settings: Settings | None = None) -> tuple[int, str]:
    """The exit status and the one line that report ``exc`` (the one error mapping)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # a task group's single failure
    if isinstance(exc, CommandError):
        return exc.exit_code, str(exc)
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, str(exc)
    catalogue = _catalogue_error(exc)
    if catalogue is not None:
        return EXIT_FAILURE, catalogue
    if _is(exc, "ocs.api.problems", "Problem"):
        return EXIT_FAILURE, str(getattr(exc, "detail", "") or getattr(exc, "title", exc))
    if any(_is(exc, module, name) for module, name in _DOMAIN_ERRORS):
        text = str(exc).strip()
        return EXIT_FAILURE, text.splitlines()[0] if text else type(exc).__name__
    redis = _redis_error(exc, settings)
    if redis is not None:
        return EXIT_FAILURE, redis
    if _is(exc, "asyncpg", "PostgresError") or _is(exc, "asyncpg", "InterfaceError"):
        return EXIT_FAILURE, f"database: {exc}"
    if isinstance(exc, OSError):
        if exc.filename is not None:
            return EXIT_FAILURE, f"{exc.filename}: {exc.strerror or exc}"
        return EXIT_FAILURE, str(exc) or type(exc).__name__
    return EXIT_FAILURE, (
        f"unexpected {type(exc).__name__}: {exc} (a bug: --log-level DEBUG shows where)"
    )


def _is(exc: BaseException, module: str, name: str) -> bool:
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


def _catalogue_error(exc: BaseException) -> str | None:
    """A catalogue folder's first error (file, path, reason) and how many more there are."""
    if not _is(exc, "ocs.rating.errors", "CatalogueError"):
        return None
    issues: list[Any] = list(getattr(exc, "issues", []))
    if not issues:
        return f"catalogue: {exc}"
    first = issues[0]
    where = f"{first.file}: {first.path}" if first.path else str(first.file)
    more = f" (and {len(issues) - 1} more: `ocs catalog check FOLDER`)" if len(issues) > 1 else ""
    reason = str(first.reason).removeprefix("Value error, ")
    return f"catalogue: {where}: {reason}{more}"


def _redis_error(exc: BaseException, settings: Settings | None) -> str | None:
    if not _is(exc, "redis.exceptions", "RedisError"):
        return None
    where = "Redis"
    if settings is not None:
        where += (
            f" {settings.redis_url}"
            if settings.redis_url
            else f" (embedded, in {settings.data_dir})"
        )
    if _is(exc, "redis.exceptions", "ConnectionError") or _is(
        exc, "redis.exceptions", "TimeoutError"
    ):
        return f"{where}: cannot connect: {exc}"
    return f"{where}: {exc}"


if __name__ == "__main__":
    raise SystemExit(main())
