"""What the server hands an application and what it gets back: one request with its whole
body (the service-based interfaces send small JSON documents), one response."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

PROBLEM_JSON: Final = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection and one request may cost."""

    max_body: int = 64 * 1024  # bytes of one request body (413 beyond)
    max_header: int = 16 * 1024  # bytes of one request's header block
    max_streams: int = 128  # concurrent HTTP/2 streams per connection
    request_timeout: float = 10.0  # seconds from a request's first byte to its last (408)
    idle_timeout: float = 300.0  # seconds a connection with nothing in flight stays open


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query
    query: str
    headers: tuple[tuple[str, str], ...]  # names in lower case
    body: bytes
    http_version: str  # "2" or "1.1"
    authority: str = ""  # :authority (HTTP/2) or Host (HTTP/1.1)
    scheme: str = "http"  # "https" on TLS

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


Handler = Callable[[Request], Awaitable[Response]]


def problem(
    status: int, title: str, *, detail: str | None = None, cause: str | None = None
) -> Response:
    """An RFC 9457 problem document (TS 29.571 ProblemDetails is one): the server's own
    answers to what never reaches the application (too large, too slow, malformed)."""
    doc: dict[str, object] = {"title": title, "status": status}
    if detail is not None:
        doc["detail"] = detail
    if cause is not None:
        doc["cause"] = cause
    return Response(status, json.dumps(doc).encode(), (("content-type", PROBLEM_JSON),))
