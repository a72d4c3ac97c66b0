"""A webhook receiver for `ocs` (docs/webhooks.md): it checks each delivery's
``Ocs-Signature`` the documented way, answers 204 (401 on a bad or old signature), and
prints each event once as a line of JSON (a redelivery of an event id already seen is
answered 204 and not printed again: delivery is at least once).

    python tools/webhook_receiver.py --port 9000 --secret whsec_...

Standard library only, so a receiver can copy it; the tests use it as their receiver."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE = 300  # seconds: an older (or future) signature is refused, so is a replay
MAX_BODY = 1 << 20


def verify(secret: str, header: str, body: bytes, now: float | None = None) -> bool:
    """``Ocs-Signature: t=<unix seconds>,v1=<hex>``: v1 must be HMAC-SHA256(secret,
    "<t>.<raw body>") and t within TOLERANCE of our clock."""
    fields = [part.strip().partition("=") for part in header.split(",")]
    stamps = [value for key, _, value in fields if key == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    t = int(stamps[0])
    if abs((time.time() if now is None else now) - t) > TOLERANCE:
        return False
    signed = stamps[0].encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, value) for key, _, value in fields if key == "v1")


class Receiver(ThreadingHTTPServer):
    """Keeps the verified events (``events``, in arrival order, each id once) and the
    number of requests refused (``refused``)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, secret: str, *, echo: bool = False) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.secret = secret
        self.echo = echo
        self.events: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.redelivered: list[str] = []  # verified ids that came with Ocs-Redelivered
        self.refused = 0
        self.requests = 0
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)

    def take(self, body: bytes, headers: Any) -> int:
        with self.lock:
            self.requests += 1
            if not verify(self.secret, headers.get("Ocs-Signature", ""), body):
                self.refused += 1
                return 401
            event = json.loads(body)
            if headers.get("Ocs-Redelivered") == "1":
                self.redelivered.append(event["id"])
            if event["id"] != headers.get("Ocs-Event-Id") or event["id"] in self.seen:
                return 204  # a redelivery: done already
            self.seen.add(event["id"])
            self.events.append(event)
            self.arrived.notify_all()
        if self.echo:
            print(json.dumps(event), flush=True)
        return 204

    def wait_for(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """The events once there are ``count`` of them (or what came within ``timeout``)."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.events) >= count, timeout)
            return list(self.events)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        if size > MAX_BODY:
            self.send_response(413)
            self.end_headers()
            return
        status = self.server.take(self.rfile.read(size), self.headers)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the events are the output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", required=True, help="the subscription's secret")
    args = parser.parse_args(argv)
    server = Receiver(args.port, args.secret, echo=True)
    print(f"receiving on http://127.0.0.1:{server.server_address[1]}/", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
