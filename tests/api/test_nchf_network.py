"""Nchf charging notifications, end to end: a charging data resource created over h2c on one
worker, a top-up (or a suspension) over the HTTP API, and the consumer's notifyUri (a real
HTTP/2 server) gets the ChargingNotifyRequest; the next update, on another worker, sees the
change. What RAR and ASR do on Gy (tests/api/test_network.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ocs.balance.keys import nchf_subscriber_key
from ocs.config import Settings
from ocs.lifecycle.signals import SessionSignals
from ocs.network import NetworkCommands
from tests.api.conftest import Api
from tests.charging.nchf_client import (
    NchfServer,
    charging_request,
    granted_of,
    h2_client,
    nchf_served,
    usage,
)
from tests.sbi.h2server import H2Server, Reply, Request, until
from tests.sbi.oracle import specs_or_skip

IMSI = "262019999990002"
MSISDN = "491709990002"
RG = 1
NCHF = "TS32291_Nchf_ConvergedCharging.yaml"
NOTIFY = "/components/schemas/ChargingNotifyRequest"


async def _subscriber(api: Api, balance: int) -> None:
    r = await api.request(
        "POST",
        "/v1/wallets",
        json={"id": "w-nchf", "account": "bob", "currency": "EUR", "balance": balance},
    )
    assert r.status_code == 201, r.text
    r = await api.request(
        "POST",
        "/v1/subscriptions",
        json={
            "imsi": IMSI,
            "msisdn": MSISDN,
            "account": "bob",
            "plan": "consumer-data",
            "payer": {"kind": "wallet", "id": "w-nchf"},
        },
    )
    assert r.status_code == 201, r.text


class Smf:
    """The consumer's notifyUri: answers 204, or ``status`` when set."""

    def __init__(self) -> None:
        self.status = 204
        self.server = H2Server(self)

    async def __call__(self, request: Request) -> Reply:
        return Reply(self.status)

    def uri(self, ref: str) -> str:
        return f"{self.server.url}/nsmf-callback/notify_{ref}"

    def notifications(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.server.requests]


@pytest.fixture
async def smf() -> AsyncIterator[Smf]:
    consumer = Smf()
    await consumer.server.start()
    try:
        yield consumer
    finally:
        await consumer.server.stop()


@pytest.fixture
async def workers(settings: Settings, demo: Api) -> AsyncIterator[tuple[NchfServer, NchfServer]]:
    """Two serving processes' worth of Nchf on one Redis (as ``--workers 2``)."""
    async with nchf_served(settings) as one, nchf_served(settings) as two:
        yield one, two


async def _create(server: NchfServer, smf: Smf, want: int) -> tuple[str, int]:
    async with h2_client() as client:
        body = charging_request(0, imsi=IMSI, units=[usage(RG, want=want)], notify=smf.uri("1"))
        r = await client.post(server.base, json=body)
    assert r.status_code == 201, r.text
    return r.headers["location"].rsplit("/", 1)[1], granted_of(r.json())[RG]


async def test_a_top_up_over_the_api_notifies_the_consumer_and_its_update_gets_quota(
    workers: tuple[NchfServer, NchfServer], demo: Api, smf: Smf
) -> None:
    specs = specs_or_skip()
    one, two = workers
    await _subscriber(demo, balance=5)
    ref, first = await _create(one, smf, 100_000_000)
    assert 0 < first < 100_000_000  # the wallet runs dry: final units
    r = await demo.request("GET", f"/v1/subscriptions/{IMSI}/sessions", who="read")
    (listed,) = r.json()
    assert listed["session_id"] == ref and listed["interface"] == "nchf"
    assert listed["notify_uri"] == smf.uri("1")

    r = await demo.request(
        "POST",
        "/v1/wallets/w-nchf/top-ups",
        who="topup",
        json={"amount": 1000, "currency": "EUR"},
        headers={"Idempotency-Key": "nchf-1"},
    )
    assert r.status_code == 201, r.text
    await smf.server.wait_for(lambda rs: len(rs) >= 1)
    (notification,) = smf.notifications()
    assert notification == {"notificationType": "REAUTHORIZATION"}
    specs.check(notification, NCHF, NOTIFY, what="the notification")
    (request,) = smf.server.requests
    assert request.method == "POST" and request.path == "/nsmf-callback/notify_1"

    async with h2_client() as client:  # the SMF asks again, on the other worker
        update = charging_request(1, imsi=IMSI, units=[usage(RG, used=first, want=100_000_000)])
        r = await client.post(f"{two.base}/{ref}/update", json=update)
        assert r.status_code == 200, r.text
        assert granted_of(r.json())[RG] > first
        release = charging_request(2, imsi=IMSI, units=[usage(RG, used=1000, want=None)])
        r = await client.post(f"{two.base}/{ref}/release", json=release)
        assert r.status_code == 204, r.text
    r = await demo.request("GET", f"/v1/subscriptions/{IMSI}/sessions", who="read")
    assert r.json() == []  # released: no longer notified


async def test_a_suspension_aborts_charging_and_the_lifecycle_reaches_nchf_too(
    workers: tuple[NchfServer, NchfServer], demo: Api, smf: Smf
) -> None:
    one, two = workers
    await _subscriber(demo, balance=10_000)
    ref, _ = await _create(one, smf, 1_000_000)
    # the lifecycle's signals (a renewal: RAR) go through the same index
    sent = await SessionSignals(demo.redis).send({"rar": [("demo", IMSI, MSISDN)]})
    assert sent == {"rar": 1}
    assert smf.notifications() == [{"notificationType": "REAUTHORIZATION"}]

    r = await demo.request("POST", f"/v1/subscriptions/{IMSI}/suspend")
    assert r.status_code == 200, r.text
    await smf.server.wait_for(lambda rs: len(rs) >= 2)
    assert smf.notifications()[1] == {"notificationType": "ABORT_CHARGING"}
    async with h2_client() as client:
        update = charging_request(1, imsi=IMSI, units=[usage(RG, used=10, want=1_000_000)])
        r = await client.post(f"{two.base}/{ref}/update", json=update)
    assert r.status_code != 200 or not granted_of(r.json()).get(RG)


async def test_forced_re_auth_reports_each_outcome_and_forgets_a_gone_resource(
    workers: tuple[NchfServer, NchfServer], demo: Api, smf: Smf
) -> None:
    one, _ = workers
    await _subscriber(demo, balance=10_000)
    ref, _ = await _create(one, smf, 1_000_000)
    r = await demo.request("POST", f"/v1/subscriptions/{IMSI}/sessions/re-auth")
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"session": ref, "op": "rar", "status": "answered", "http_status": 204,
         "result_code": None, "worker": None}
    ]  # fmt: skip
    smf.status = 404  # the SMF no longer knows the session
    r = await demo.request("POST", f"/v1/subscriptions/{IMSI}/sessions/abort")
    assert [(o["status"], o["http_status"]) for o in r.json()] == [("gone", 404)]
    r = await demo.request("GET", f"/v1/subscriptions/{IMSI}/sessions", who="read")
    assert r.json() == []


async def test_another_tenant_never_reaches_the_resource(
    workers: tuple[NchfServer, NchfServer], demo: Api, smf: Smf
) -> None:
    one, _ = workers
    await _subscriber(demo, balance=10_000)
    ref, _ = await _create(one, smf, 1_000_000)
    network = NetworkCommands(demo.redis)
    assert [s.session_id for s in await network.sessions("demo", [(IMSI, MSISDN)])] == [ref]
    assert await network.sessions("other", [(IMSI, MSISDN)]) == []
    r = await demo.request("POST", f"/v1/subscriptions/{IMSI}/sessions/re-auth", who="other")
    assert r.status_code == 404
    await until(lambda: True)
    assert smf.server.requests == []


async def _create_by_msisdn(server: NchfServer, smf: Smf, *, gpsi_only: bool = False) -> str:
    """A resource created with the GPSI alone (no SUPI): ``subscriberIdentifier``
    msisdn-..., or (``gpsi_only``) only ``userInformation.servedGPSI``."""
    if gpsi_only:
        body = charging_request(0, imsi=None, units=[usage(RG)], notify=smf.uri("gpsi"))
        info = body["pDUSessionChargingInformation"]
        info["userInformation"] = {"servedGPSI": f"msisdn-{MSISDN}"}
    else:
        body = charging_request(
            0, imsi=None, units=[usage(RG)], notify=smf.uri("msisdn"),
            subscriberIdentifier=f"msisdn-{MSISDN}",
        )  # fmt: skip
    async with h2_client() as client:
        r = await client.post(server.base, json=body)
    assert r.status_code == 201, r.text
    assert granted_of(r.json())[RG] > 0
    return r.headers["location"].rsplit("/", 1)[1]


async def test_a_resource_created_with_an_msisdn_only_is_notified_like_one_with_a_supi(
    workers: tuple[NchfServer, NchfServer], demo: Api, smf: Smf
) -> None:
    specs = specs_or_skip()
    one, two = workers
    await _subscriber(demo, balance=10_000)
    ref = await _create_by_msisdn(one, smf)
    r = await demo.request("GET", f"/v1/subscriptions/{IMSI}/sessions", who="read")
    (listed,) = r.json()
    assert (listed["session_id"], listed["interface"], listed["msisdn"]) == (ref, "nchf", MSISDN)

    # a top-up: REAUTHORIZATION at the notifyUri the create gave
    r = await demo.request(
        "POST",
        "/v1/wallets/w-nchf/top-ups",
        who="topup",
        json={"amount": 100, "currency": "EUR"},
        headers={"Idempotency-Key": "nchf-msisdn-1"},
    )
    assert r.status_code == 201, r.text
    await smf.server.wait_for(lambda rs: len(rs) >= 1)
    assert smf.notifications() == [{"notificationType": "REAUTHORIZATION"}]
    specs.check(smf.notifications()[0], NCHF, NOTIFY, what="the notification")
    assert smf.server.requests[0].path == "/nsmf-callback/notify_msisdn"
    # a plan change over the API: REAUTHORIZATION
    r = await demo.request(
        "PATCH", f"/v1/subscriptions/{IMSI}", json={"properties": {"sensors": 2}}
    )
    assert r.status_code == 200, r.text
    await smf.server.wait_for(lambda rs: len(rs) >= 2)
    # the lifecycle's signals (a renewal) go through the same index
    sent = await SessionSignals(demo.redis).send({"rar": [("demo", IMSI, MSISDN)]})
    assert sent == {"rar": 1}
    assert [n["notificationType"] for n in smf.notifications()] == ["REAUTHORIZATION"] * 3

    # the SMF asks again on the other worker, by the MSISDN again: quota
    async with h2_client() as client:
        update = charging_request(
            1, imsi=None, units=[usage(RG, used=1000, want=1_000_000)],
            subscriberIdentifier=f"msisdn-{MSISDN}",
        )  # fmt: skip
        r = await client.post(f"{two.base}/{ref}/update", json=update)
    assert r.status_code == 200, r.text
    assert granted_of(r.json())[RG] == 1_000_000

    # suspended: ABORT_CHARGING
    r = await demo.request("POST", f"/v1/subscriptions/{IMSI}/suspend")
    assert r.status_code == 200, r.text
    await smf.server.wait_for(lambda rs: len(rs) >= 4)
    assert smf.notifications()[3] == {"notificationType": "ABORT_CHARGING"}
    async with h2_client() as client:
        release = charging_request(
            2, imsi=None, units=[usage(RG, used=10, want=None)],
            subscriberIdentifier=f"msisdn-{MSISDN}",
        )  # fmt: skip
        r = await client.post(f"{one.base}/{ref}/release", json=release)
    assert r.status_code == 204, r.text
    r = await demo.request("GET", f"/v1/subscriptions/{IMSI}/sessions", who="read")
    assert r.json() == []  # released: no longer notified
    assert await demo.redis.smembers(nchf_subscriber_key("demo", MSISDN, "msisdn")) == set()


async def test_a_resource_of_a_served_gpsi_only_is_forgotten_when_its_consumer_is_gone(
    workers: tuple[NchfServer, NchfServer], demo: Api, smf: Smf
) -> None:
    one, _ = workers
    await _subscriber(demo, balance=10_000)
    ref = await _create_by_msisdn(one, smf, gpsi_only=True)
    assert await demo.redis.smembers(nchf_subscriber_key("demo", MSISDN, "msisdn")) == {
        ref.encode()
    }
    r = await demo.request("POST", f"/v1/subscriptions/{IMSI}/sessions/re-auth")
    assert [(o["session"], o["status"], o["http_status"]) for o in r.json()] == [
        (ref, "answered", 204)
    ]
    smf.status = 410  # the SMF no longer knows the session
    r = await demo.request("POST", f"/v1/subscriptions/{IMSI}/sessions/abort")
    assert [(o["status"], o["http_status"]) for o in r.json()] == [("gone", 410)]
    assert smf.notifications() == [
        {"notificationType": "REAUTHORIZATION"},
        {"notificationType": "ABORT_CHARGING"},
    ]
    r = await demo.request("GET", f"/v1/subscriptions/{IMSI}/sessions", who="read")
    assert r.json() == []
    assert await demo.redis.smembers(nchf_subscriber_key("demo", MSISDN, "msisdn")) == set()
