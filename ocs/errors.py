"""The errors a command reports as one ``ocs: error: ...`` line.

A leaf: imports nothing of ours, so every package (offline, api, crm, observability, ...) may
raise these. :func:`ocs.cli.main` maps every exception to its line and exit status in one
place (``ocs.cli.describe``); these classes carry the status themselves.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator
from typing import ClassVar

EXIT_FAILURE = 1  # the command ran and failed (a store unreachable, a file invalid, ...)
EXIT_USAGE = 2  # the command line or the settings are wrong; nothing was done


class CommandError(Exception):
    """A command cannot do what it was asked; ``str(exc)`` names what is wrong (file, field
    or setting, and the reason), in one line."""

    exit_code: ClassVar[int] = EXIT_FAILURE


class UsageError(CommandError):
    """The command line asks for something that cannot be done as given."""

    exit_code: ClassVar[int] = EXIT_USAGE


class PortInUse(CommandError):
    """A listening port cannot be opened; names which port (Diameter, HTTP, metrics), its
    setting and the reason."""

    def __init__(self, what: str, flag: str, host: str, port: int, reason: str) -> None:
        self.what, self.flag, self.host, self.port = what, flag, host, port
        super().__init__(f"{what} port {port} ({flag}) on {host}: {reason}")


_BIND_ERRORS = {
    errno.EADDRINUSE: "already in use (another process listens there; choose another port)",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "address not available on this machine",
}


@contextlib.contextmanager
def naming_port(what: str, flag: str, host: str, port: int) -> Iterator[None]:
    """Turn a failed bind inside the block into :class:`PortInUse` naming the port."""
    try:
        yield
    except OSError as exc:
        reason = _BIND_ERRORS.get(exc.errno or 0)
        if reason is None:
            raise
        raise PortInUse(what, flag, host, port, reason) from exc


def bind(what: str, flag: str, host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening), or :class:`PortInUse` naming
    the port: ``what`` ("HTTP") and ``flag`` ("--http-port") say which one it is."""
    with naming_port(what, flag, host, port):
        family, kind, proto, _, addr = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
        except BaseException:
            sock.close()
            raise
    return sock
