"""Top-up -> RAR -> CCR-U gets quota; suspend -> ASR; all over real HTTP and Diameter."""

from __future__ import annotations

import asyncio

from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Message
from ocs.diameter.constants import CcRequestType, Command, ResultCode
from tests.api.conftest import Api, Gateway
from tests.charging.ccr import build_ccr

IMSI = "262019999990001"
MSISDN = "491709990001"


async def _subscriber(api: Api, balance: int) -> None:
    r = await api.request(
        "POST",
        "/v1/wallets",
        json={"id": "w-net", "account": "bob", "currency": "EUR", "balance": balance},
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
            "payer": {"kind": "wallet", "id": "w-net"},
        },
    )
    assert r.status_code == 201, r.text


def _granted(answer: Message) -> tuple[int, bool]:
    """Octets granted in the first MSCC, and whether it carries a Final-Unit-Indication."""
    mscc = answer.find(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
    assert mscc is not None, answer
    octets = 0
    fui = False
    for child in mscc.children or []:
        if child.key == A.AVP_GRANTED_SERVICE_UNIT:
            for unit in child.children or []:
                if unit.key == A.AVP_CC_TOTAL_OCTETS:
                    octets = int(unit.value)
        if child.key == A.AVP_FINAL_UNIT_INDICATION:
            fui = True
    return octets, fui


async def _next_request(gw: Gateway, command: int) -> Message:
    while True:
        msg = await asyncio.wait_for(gw.received.get(), 10)
        if msg.command == command:
            return msg


async def test_top_up_during_exhausted_session_sends_rar_and_ccr_u_gets_quota(
    gateway: Gateway, demo: Api
) -> None:
    await _subscriber(demo, balance=5)
    sid = "pgw.test;net;1"
    cca = await gateway.send(
        build_ccr(
            sid,
            request_type=CcRequestType.INITIAL_REQUEST,
            number=0,
            imsi=IMSI,
            msisdn=MSISDN,
            msccs=[(1, 100_000_000, 0)],
        )
    )
    assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    first, fui = _granted(cca)
    assert 0 < first < 100_000_000 and fui  # the wallet ran dry: final units
    # the session is known to the API
    r = await demo.request("GET", f"/v1/subscriptions/{IMSI}/sessions", who="read")
    for _ in range(50):
        if r.json():
            break
        await asyncio.sleep(0.05)
        r = await demo.request("GET", f"/v1/subscriptions/{IMSI}/sessions", who="read")
    assert [s["session_id"] for s in r.json()] == [sid]

    r = await demo.request(
        "POST",
        "/v1/wallets/w-net/top-ups",
        who="topup",
        json={"amount": 1000, "currency": "EUR"},
        headers={"Idempotency-Key": "net-1"},
    )
    assert r.status_code == 201, r.text
    rar = await _next_request(gateway, Command.RE_AUTH)
    assert rar.get(A.AVP_SESSION_ID) == sid
    assert rar.get(A.AVP_DESTINATION_HOST) == "pgw.test"

    cca = await gateway.send(
        build_ccr(
            sid,
            request_type=CcRequestType.UPDATE_REQUEST,
            number=1,
            imsi=IMSI,
            msisdn=MSISDN,
            msccs=[(1, 100_000_000, first)],
        )
    )
    assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    more, _ = _granted(cca)
    assert more > first

    cca = await gateway.send(
        build_ccr(
            sid,
            request_type=CcRequestType.TERMINATION_REQUEST,
            number=2,
            imsi=IMSI,
            msisdn=MSISDN,
            msccs=[(1, -1, 1000)],
        )
    )
    assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    for _ in range(50):
        r = await demo.request("GET", f"/v1/subscriptions/{IMSI}/sessions")
        if not r.json():
            break
        await asyncio.sleep(0.05)
    assert r.json() == []


async def test_suspend_sends_asr_and_the_next_ccr_is_refused(gateway: Gateway, demo: Api) -> None:
    await _subscriber(demo, balance=10_000)
    sid = "pgw.test;net;2"
    cca = await gateway.send(
        build_ccr(
            sid,
            request_type=CcRequestType.INITIAL_REQUEST,
            number=0,
            imsi=IMSI,
            msisdn=MSISDN,
            msccs=[(1, 1_000_000, 0)],
        )
    )
    assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    await asyncio.sleep(0.2)  # the session record is written after the answer

    r = await demo.request("POST", f"/v1/subscriptions/{IMSI}/suspend")
    assert r.status_code == 200, r.text
    assert r.json()["subscriptions"][0]["status"] == "suspended"
    asr = await _next_request(gateway, Command.ABORT_SESSION)
    assert asr.get(A.AVP_SESSION_ID) == sid

    cca = await gateway.send(
        build_ccr(
            sid,
            request_type=CcRequestType.UPDATE_REQUEST,
            number=1,
            imsi=IMSI,
            msisdn=MSISDN,
            msccs=[(1, 1_000_000, 1000)],
        )
    )
    assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_END_USER_SERVICE_DENIED


async def test_forced_re_auth_reports_the_answer_and_gone_peers(
    gateway: Gateway, demo: Api
) -> None:
    await _subscriber(demo, balance=10_000)
    sid = "pgw.test;net;3"
    await gateway.send(
        build_ccr(
            sid,
            request_type=CcRequestType.INITIAL_REQUEST,
            number=0,
            imsi=IMSI,
            msisdn=MSISDN,
            msccs=[(1, 1_000_000, 0)],
        )
    )
    await asyncio.sleep(0.2)
    r = await demo.request("POST", f"/v1/subscriptions/{IMSI}/sessions/re-auth?wait=5")
    assert r.status_code == 200, r.text
    [outcome] = r.json()
    assert outcome["status"] == "answered" and outcome["result_code"] == 2001

    gateway.proto._close("test: the gateway goes away")
    await asyncio.wait_for(gateway.proto.closed, 5)
    await asyncio.sleep(0.1)
    r = await demo.request("POST", f"/v1/subscriptions/{IMSI}/sessions/abort?wait=5")
    [outcome] = r.json()
    assert outcome["status"] == "peer_gone"
    r = await demo.request("GET", f"/v1/subscriptions/{IMSI}/sessions")
    assert r.json() == []
