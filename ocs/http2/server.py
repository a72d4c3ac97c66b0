"""The HTTP server of the service-based interfaces: granian (hyper's HTTP/1.1 and HTTP/2 in
Rust) in its embedded mode, inside this process's event loop, so the application shares the
worker's loop, charging core and Redis connections. One port speaks HTTP/2 with prior
knowledge (h2c), HTTP/1.1, and with TLS HTTP/2 (ALPN h2) or HTTP/1.1. Measured against
hypercorn and a server of our own on the ``h2`` library: docs/benchmarks-nchf.md.

Granian reads the request head (with its own limits: header size, the time to read it) and
hands the rest to :meth:`HttpServer.__rsgi__` over RSGI, granian's own interface (the head
as one object read from Rust, the body in one await, the response in one call): a fixed
answer cost 47-48 us of server CPU a request this way, 69-72 us over ASGI with its message
dictionaries and two awaited sends (docs/benchmarks-nchf.md). It reads the body up to
``Limits.max_body`` (413 beyond) within ``Limits.request_timeout`` (408 beyond), calls the
application and writes its response; whatever the application raises is a 500 problem
document, never a traceback to the client. Granian binds the port itself with SO_REUSEPORT,
which is what the workers of ``ocs serve --workers N`` need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ocs.http2.messages import Handler, Limits, Request, Response, problem

log = logging.getLogger(__name__)

START_TIMEOUT: Final = 10.0  # seconds for the server to listen
DEADLINE_TICK: Final = 0.05  # seconds between two looks at the requests' body deadlines


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS of the server: certificate and key files; ``ca``: consumers must present a
    certificate it signed (mutual TLS)."""

    cert: Path
    key: Path
    ca: Path | None = None


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    """The client closed the stream or connection before its request arrived whole."""


class _Deadline:
    """One request's deadline (``async with``): raises TimeoutError when
    :class:`_Deadlines` cancelled the task for it."""

    __slots__ = ("active", "at", "expired", "task")

    def __init__(self, task: asyncio.Task[Any], at: float) -> None:
        self.task = task
        self.at = at
        self.active = True
        self.expired = False

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.active = False
        if self.expired and exc_type is asyncio.CancelledError and self.task.uncancel() == 0:
            raise TimeoutError("the request did not arrive in time")


class _Deadlines:
    """The body deadlines of every request on one timer, instead of an ``asyncio.timeout``
    each (a timer scheduled and cancelled per request, ~12 us under uvloop). Every request
    has the same time limit, so deadlines come in order: a FIFO, and one timer, armed while
    requests are in flight, that wakes every ``tick`` seconds, drops the entries of requests
    done and cancels the tasks past their deadline (cut between ``timeout`` and
    ``timeout + tick``)."""

    def __init__(self, timeout: float, tick: float) -> None:
        self.timeout = timeout
        self.tick = tick
        self._entries: deque[_Deadline] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self) -> _Deadline:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None, "a deadline is entered from a task"
        entry = _Deadline(task, loop.time() + self.timeout)
        self._entries.append(entry)
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._check)
        return entry

    def _check(self) -> None:
        self._timer = None
        entries = self._entries
        loop = asyncio.get_running_loop()
        now = loop.time()
        while entries:
            first = entries[0]
            if first.active:
                if first.at > now:
                    break
                first.expired = True
                first.task.cancel()
            entries.popleft()
        if entries:
            self._timer = loop.call_later(self.tick, self._check)


class HttpServer:
    """Serves ``handler`` on ``host:port`` (``start``) until ``stop``."""

    def __init__(self, handler: Handler, limits: Limits | None = None, tls: Tls | None = None):
        self.handler = handler
        self.limits = limits or Limits()
        self.tls = tls
        self.port = 0
        self.in_flight = 0
        self.deadlines = _Deadlines(
            self.limits.request_timeout, min(DEADLINE_TICK, self.limits.request_timeout / 4)
        )
        self.idle = asyncio.Event()  # set while no request is in flight
        self.idle.set()
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    # -- the RSGI callable granian calls, one per request ----------------------------------
    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        """One request: ``scope`` its head (granian's RSGI scope), ``protocol`` its body
        and the way to answer (one call with the whole response)."""
        if scope.proto != "http":
            return
        self.in_flight += 1
        self.idle.clear()
        try:
            headers = scope.headers.items()  # [(name in lower case, value)], from Rust
            try:
                async with self.deadlines():
                    body = await self._body(protocol, headers)
            except TimeoutError:
                response = problem(408, "Request Timeout")
            except _TooLarge:
                response = problem(
                    413, "Content Too Large", detail=f"at most {self.limits.max_body} bytes"
                )
            else:
                response = await self._run(_request(scope, headers, body))
            protocol.response_bytes(response.status, list(response.headers), response.body)
        except (_Gone, RuntimeError):  # the client went away (granian's RSGIProtocolClosed)
            pass
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()

    async def _body(self, protocol: Any, headers: list[tuple[str, str]]) -> bytes:
        """The whole body, at most ``max_body`` bytes: read at once when ``content-length``
        announces it (HTTP/1.1 reads that many bytes, HTTP/2 refuses a stream that sends
        more than it announced), else chunk by chunk."""
        limit = self.limits.max_body
        try:
            for name, value in headers:
                if name == "content-length" and value.isdigit():
                    if int(value) > limit:
                        raise _TooLarge
                    body: bytes = await protocol()
                    if len(body) > limit:
                        raise _TooLarge
                    return body
            chunks: list[bytes] = []
            size = 0
            async for chunk in protocol:
                size += len(chunk)
                if size > limit:
                    raise _TooLarge
                chunks.append(chunk)
            return b"".join(chunks)
        except RuntimeError as exc:  # granian's RSGIProtocolClosed: the client went away
            raise _Gone from exc

    async def _run(self, request: Request) -> Response:
        """The application's answer (it bounds its own time); never raises."""
        try:
            return await self.handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("HTTP handler failed on %s %s", request.method, request.path)
            return problem(500, "Internal Server Error")

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (SO_REUSEPORT: the workers share it). Raises OSError when
        it does not listen within START_TIMEOUT seconds."""
        from granian.constants import HTTPModes, Interfaces, SSLProtocols  # noqa: PLC0415
        from granian.http import HTTP1Settings, HTTP2Settings  # noqa: PLC0415
        from granian.server.embed import Server  # noqa: PLC0415

        logging.getLogger("_granian").setLevel(logging.ERROR)  # "embedded is experimental"
        logging.getLogger("granian").setLevel(logging.ERROR)
        limits = self.limits
        tls = self.tls
        self._server = Server(
            self,
            address=host,
            port=port,
            interface=Interfaces.RSGI,
            http=HTTPModes.auto,
            http1_settings=HTTP1Settings(
                header_read_timeout=int(limits.request_timeout * 1000),
                max_buffer_size=limits.max_header + limits.max_body,
            ),
            http2_settings=HTTP2Settings(
                max_concurrent_streams=limits.max_streams,
                max_headers_size=limits.max_header,
                keep_alive_interval=None,
            ),
            backlog=1024,
            log_enabled=False,
            ssl_cert=tls.cert if tls else None,
            ssl_key=tls.key if tls else None,
            ssl_ca=tls.ca if tls else None,
            ssl_client_verify=bool(tls and tls.ca),
            ssl_protocol_min=SSLProtocols.tls12,
        )
        self._task = asyncio.create_task(self._server.serve(), name="ocs-http2")
        self.port = port
        deadline = time.monotonic() + START_TIMEOUT
        while not await _listening(host, port):
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError(f"the HTTP server on {host}:{port} stopped during start-up")
            if time.monotonic() > deadline:
                await self.stop(1.0)
                raise OSError(f"the HTTP server did not listen on {host}:{port}")
            await asyncio.sleep(0.02)

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let requests in flight finish for up to ``timeout`` seconds."""
        if self._server is None or self._task is None:
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), timeout)
        self._server.stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self._task, max(1.0, end - loop.time()))
        self._server = self._task = None


async def _listening(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _request(scope: Any, headers: list[tuple[str, str]], body: bytes) -> Request:
    authority = scope.authority or ""  # HTTP/2's :authority (not among the headers)
    if not authority:
        for name, value in headers:
            if name == "host":
                authority = value
                break
        else:
            authority = scope.server
    return Request(
        method=scope.method,
        path=scope.path,
        query=scope.query_string,
        headers=tuple(headers),
        body=body,
        http_version=scope.http_version,
        authority=authority,
        scheme=scope.scheme,
    )
