"""The HTTP server of the service-based interfaces: granian (hyper's HTTP/1.1 and HTTP/2 in
Rust) in its embedded mode, inside this process's event loop, so the application shares the
worker's loop, charging core and Redis connections. One port speaks HTTP/2 with prior
knowledge (h2c), HTTP/1.1, and with TLS HTTP/2 (ALPN h2) or HTTP/1.1. Measured against
hypercorn and a server of our own on the ``h2`` library: docs/benchmarks-nchf.md.

Granian reads the request head (with its own limits: header size, the time to read it) and
hands the rest to the ASGI callable here, which reads the body up to ``Limits.max_body``
(413 beyond) within ``Limits.request_timeout`` (408 beyond), calls the application and
writes its response; whatever the application raises is a 500 problem document, never a
traceback to the client. Granian binds the port itself with SO_REUSEPORT, which is what the
workers of ``ocs serve --workers N`` need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ocs.http2.messages import Handler, Limits, Request, Response, problem

log = logging.getLogger(__name__)

START_TIMEOUT: Final = 10.0  # seconds for the server to listen
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS of the server: certificate and key files; ``ca``: consumers must present a
    certificate it signed (mutual TLS)."""

    cert: Path
    key: Path
    ca: Path | None = None


class _TooLarge(Exception):
    pass


class HttpServer:
    """Serves ``handler`` on ``host:port`` (``start``) until ``stop``."""

    def __init__(self, handler: Handler, limits: Limits | None = None, tls: Tls | None = None):
        self.handler = handler
        self.limits = limits or Limits()
        self.tls = tls
        self.port = 0
        self.in_flight = 0
        self.idle = asyncio.Event()  # set while no request is in flight
        self.idle.set()
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    # -- the ASGI callable granian calls, one per request ------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            return
        self.in_flight += 1
        self.idle.clear()
        try:
            try:
                async with asyncio.timeout(self.limits.request_timeout):
                    body = await self._body(receive)
            except TimeoutError:
                response = problem(408, "Request Timeout")
            except _TooLarge:
                response = problem(
                    413, "Content Too Large", detail=f"at most {self.limits.max_body} bytes"
                )
            else:
                response = await self._run(_request(scope, body))
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [(k.encode(), v.encode()) for k, v in response.headers],
                }
            )
            await send({"type": "http.response.body", "body": response.body})
        except OSError:  # the client went away
            pass
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()

    async def _body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                raise OSError("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

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
            interface=Interfaces.ASGINL,
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


def _request(scope: dict[str, Any], body: bytes) -> Request:
    headers: list[tuple[str, str]] = []
    authority = ""
    for key, value in scope.get("headers", ()):
        name = key.decode("latin-1").lower()
        text = value.decode("latin-1")
        if name in (":authority", "host"):
            authority = text
        else:
            headers.append((name, text))
    if not authority and (server := scope.get("server")):
        authority = f"{server[0]}:{server[1]}"
    return Request(
        method=scope.get("method", "GET"),
        path=scope.get("path", "/"),
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=tuple(headers),
        body=body,
        http_version=scope.get("http_version", "1.1"),
        authority=authority,
        scheme=scope.get("scheme", "http"),
    )
