"""The metrics port: ``/metrics`` (Prometheus text format), ``/healthz`` and ``/readyz``.

A small threaded HTTP server, like prometheus_client's ``start_http_server`` (a scrape never
waits behind charging work for the encoding of the metrics), with two more paths whose
answers come from the event loop the components run in:

- ``/healthz``: 200 when the event loop runs a no-op within ``LIVENESS_TIMEOUT``; 503
  otherwise (a loop stuck that long serves nobody, and a restart is the cure);
- ``/readyz``: the registered checks (:mod:`ocs.observability.health`), run in the loop;
  200 with every check ``ok``, else 503 naming the failing ones.

``/metrics`` runs the same checks before it encodes the registry and exports them as
``ocs_ready{check}`` (1 ok, 0 failing), so readiness is a series an alert can watch; a
scrape then waits for the checks (2 s at most each, all at once).

Both answer ``application/json``: ``{"status": ..., "checks": {name: "ok" | reason}}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ocs.observability.health import Health, Readiness, default_health
from ocs.observability.metrics import ReadinessCollector, readiness_collector

log = logging.getLogger(__name__)

LIVENESS_TIMEOUT: Final = 10.0  # seconds the event loop may take to run a no-op
LOOP_LAG: Final = 1.0  # seconds /readyz allows the loop beyond the checks' own timeout
JSON: Final = "application/json"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    health: Health
    loop: asyncio.AbstractEventLoop
    readiness: ReadinessCollector


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._readiness()  # ocs_ready{check} as of this scrape
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, content_type, encoder(self.server.registry))
        elif path == "/healthz":
            alive = self._in_loop(asyncio.sleep, LIVENESS_TIMEOUT, 0) is not _FAILED
            body = {"status": "alive" if alive else "event loop not answering"}
            self._json(200 if alive else 503, body)
        elif path == "/readyz":
            got = self._readiness()
            self._json(200 if got.ready else 503, got.as_json())
        else:
            self._json(404, {"status": "not found", "paths": ["/metrics", "/healthz", "/readyz"]})

    def _readiness(self) -> Readiness:
        """Run the checks in the components' loop (a loop that does not answer is the
        failing check ``loop``) and keep the outcome for ``ocs_ready``."""
        health = self.server.health
        got = self._in_loop(health.ready, health.timeout + LOOP_LAG)
        if got is _FAILED:
            got = Readiness(False, {"loop": "not answering"})
        self.server.readiness.latest = got.checks
        return got  # type: ignore[no-any-return]

    def _in_loop(self, func: Callable[..., Awaitable[Any]], timeout: float, *args: Any) -> Any:
        """``func(*args)`` awaited in the components' loop; ``_FAILED`` if that loop is closed
        or does not finish it within ``timeout`` (then it is cancelled)."""
        coro = _call(func, *args)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.server.loop)
        except RuntimeError:  # the loop is closed
            coro.close()
            return _FAILED
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            return _FAILED

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, JSON, json.dumps(body).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log (scrapes and probes every few seconds)."""


_FAILED: Final = object()


async def _call(func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return await func(*args)


class OpsServer:
    """The running metrics-port server; ``port`` is the bound one (0 asks for a free one)."""

    def __init__(self, httpd: _Server, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.port: int = httpd.server_address[1]

    async def close(self, linger: float = 0.0) -> None:
        """Stop serving, after ``linger`` seconds (a one-shot command's last state, e.g.
        a failed bill run, stays scrapeable that long)."""
        if linger > 0:
            await asyncio.sleep(linger)
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def start_ops_server(
    port: int,
    host: str = "127.0.0.1",
    *,
    registry: CollectorRegistry = REGISTRY,
    health: Health | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> OpsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` in a thread. Call it
    from the event loop whose components the checks look at (or pass ``loop``)."""
    httpd = _Server((host, port), _Handler)
    httpd.registry = registry
    httpd.health = health if health is not None else default_health()
    httpd.loop = loop if loop is not None else asyncio.get_running_loop()
    httpd.readiness = readiness_collector(registry)
    thread = threading.Thread(target=httpd.serve_forever, name="ocs-metrics", daemon=True)
    thread.start()
    return OpsServer(httpd, thread)
