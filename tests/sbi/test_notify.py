"""ChargingNotifyRequest delivery to a consumer's notifyUri (a real HTTP/2 server), each body
checked against the Release 17 schema."""

from __future__ import annotations

import asyncio
import socket

from prometheus_client import CollectorRegistry

from ocs.network.notify import (
    ABORT_CHARGING,
    DELIVERED,
    GONE,
    REAUTHORIZATION,
    REFUSED,
    UNREACHABLE,
    ChargingNotifier,
)
from ocs.observability.metrics import SbiMetrics
from tests.sbi.h2server import H2Server, Reply, Request
from tests.sbi.oracle import specs_or_skip

NCHF = "TS32291_Nchf_ConvergedCharging.yaml"
NOTIFY = "/components/schemas/ChargingNotifyRequest"


def counted(registry: CollectorRegistry, kind: str, outcome: str) -> float:
    labels = {"type": kind, "outcome": outcome}
    return registry.get_sample_value("ocs_nchf_notifications_total", labels) or 0.0


async def test_a_notification_reaches_the_notify_uri_and_conforms() -> None:
    specs = specs_or_skip()

    async def smf(request: Request) -> Reply:
        return Reply(204)

    server = await H2Server(smf).start()
    registry = CollectorRegistry()
    uri = f"{server.url}/nsmf-callback/notify_7"
    try:
        async with ChargingNotifier(metrics=SbiMetrics(registry)) as notifier:
            first = await notifier.notify(uri, REAUTHORIZATION)
            second = await notifier.notify(uri, ABORT_CHARGING)
            third = await notifier.notify(uri, REAUTHORIZATION, (100, 200))
    finally:
        await server.stop()
    assert (first.status, first.http_status, first.attempts) == (DELIVERED, 204, 1)
    assert second.status == third.status == DELIVERED
    bodies = [r.json() for r in server.requests]
    assert [r.path for r in server.requests] == ["/nsmf-callback/notify_7"] * 3
    assert all(r.method == "POST" for r in server.requests)
    assert all(r.headers["content-type"] == "application/json" for r in server.requests)
    assert bodies == [
        {"notificationType": "REAUTHORIZATION"},
        {"notificationType": "ABORT_CHARGING"},
        {
            "notificationType": "REAUTHORIZATION",
            "reauthorizationDetails": [{"ratingGroup": 100}, {"ratingGroup": 200}],
        },
    ]
    for body in bodies:
        specs.check(body, NCHF, NOTIFY, what="a ChargingNotifyRequest")
    assert counted(registry, REAUTHORIZATION, DELIVERED) == 2
    assert counted(registry, ABORT_CHARGING, DELIVERED) == 1


async def test_busy_consumers_are_asked_again_and_gone_ones_are_reported() -> None:
    answers = {"/busy": [503, 500, 200], "/gone": [404], "/bad": [400], "/always": [503] * 9}

    async def smf(request: Request) -> Reply:
        return Reply(answers[request.path].pop(0))

    server = await H2Server(smf).start()
    registry = CollectorRegistry()
    try:
        async with ChargingNotifier(metrics=SbiMetrics(registry), backoff_first=0.01) as n:
            busy = await n.notify(f"{server.url}/busy", REAUTHORIZATION)
            gone = await n.notify(f"{server.url}/gone", REAUTHORIZATION)
            bad = await n.notify(f"{server.url}/bad", ABORT_CHARGING)
            always = await n.notify(f"{server.url}/always", REAUTHORIZATION)
    finally:
        await server.stop()
    assert (busy.status, busy.http_status, busy.attempts) == (DELIVERED, 200, 3)
    assert (gone.status, gone.http_status, gone.attempts) == (GONE, 404, 1)
    assert (bad.status, bad.http_status, bad.attempts) == (REFUSED, 400, 1)
    assert (always.status, always.http_status, always.attempts) == (UNREACHABLE, 503, 3)
    assert answers["/always"] == [503] * 6  # three attempts, no more
    assert counted(registry, REAUTHORIZATION, UNREACHABLE) == 1
    assert counted(registry, ABORT_CHARGING, REFUSED) == 1


async def test_an_unreachable_or_silent_consumer_costs_a_bounded_wait() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]

    async def hang(request: Request) -> Reply:
        await asyncio.sleep(3600)
        return Reply(204)

    server = await H2Server(hang).start()
    try:
        async with ChargingNotifier(timeout=0.2, attempts=2, backoff_first=0.01) as n:
            down = await n.notify(f"http://127.0.0.1:{closed}/n", REAUTHORIZATION)
            silent = await n.notify(f"{server.url}/n", REAUTHORIZATION)
    finally:
        await server.stop()
    assert (down.status, down.http_status, down.attempts) == (UNREACHABLE, 0, 2)
    assert (silent.status, silent.http_status, silent.attempts) == (UNREACHABLE, 0, 2)


async def test_a_notify_uri_we_will_not_post_to_is_refused_without_a_request() -> None:
    async with ChargingNotifier() as n:
        for uri in ("", "ftp://smf/n", "http:///n", "file:///etc/passwd", "x" * 3000):
            assert (await n.notify(uri, REAUTHORIZATION)).status == REFUSED
