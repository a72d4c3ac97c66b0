"""The HTTP server of the 5G service-based interfaces: HTTP/2 over cleartext with prior
knowledge (h2c, what SMFs speak), HTTP/2 over TLS (ALPN ``h2``) and HTTP/1.1 on one port,
granian embedded in this process's event loop; the application sees one :class:`Request`
and returns one :class:`Response`. Imports nothing of ours (``./check``). Why granian:
docs/benchmarks-nchf.md."""

from __future__ import annotations

from ocs.http2.messages import Handler, Limits, Request, Response, problem
from ocs.http2.server import HttpServer, Tls

__all__ = [
    "Handler",
    "HttpServer",
    "Limits",
    "Request",
    "Response",
    "Tls",
    "problem",
]
