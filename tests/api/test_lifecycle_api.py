"""The lifecycle over the HTTP API and the network: the pool view shows the period and the
auto top-off in force; ``PUT .../auto-renewal`` sets the auto top-off ``charge.lua`` applies
(with its threshold); a lifecycle pass that renews a pool sends its live sessions an RAR, one
that suspends it an ASR, over a real Diameter connection to a gateway peer. Time of the pass
is injected."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ocs.balance import BalanceStore, ChargeRequest
from ocs.balance.models import BucketUnit
from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Message
from ocs.diameter.constants import CcRequestType, Command, ResultCode
from ocs.lifecycle import Lifecycle, PassReport, PoolRules
from ocs.network import NetworkCommands
from ocs.provisioning.payers import lifecycle_rules
from ocs.rating.loader import check_documents
from tests.api.conftest import Api, Gateway, demo_documents
from tests.charging.ccr import build_ccr

POOL = "demo:prepaid_pool:acme-pool"
RENEWING = "demo:prepaid_pool:renewing"
UNPAID = "demo:prepaid_pool:unpaid"
SIMS = {
    "renewing": ("262010000777001", "491700777001"),
    "unpaid": ("262010000777002", "491700777002"),
}


def documents() -> dict[str, Any]:
    """The demo catalogue plus two pools with a renewal rule, each with one SIM: `renewing`
    (fee on the invoice) and `unpaid` (fee from a wallet that cannot pay it: suspend)."""
    docs = demo_documents()
    subscribers = docs["subscribers.yaml"]
    subscribers["pools"] += [
        {"id": "renewing", "account": "acme-iot", "size": 5_000_000, "renewal": {"fee": 0}},
        {
            "id": "unpaid",
            "account": "acme-iot",
            "size": 5_000_000,
            "renewal": {
                "fee": 900_000,
                "charge_to": "wallet",
                "wallet": "fleet-wallet",
                "on_failure": "suspend",
            },
        },
    ]
    for pool, (imsi, msisdn) in SIMS.items():
        twin = {
            "id": "data",
            "payer": {"kind": "prepaid_pool", "id": pool},
            "plans": [{"plan": "iot-pool", "from": "2024-01-01T00:00:00+01:00"}],
        }
        subscribers["sims"].append(
            {"imsi": imsi, "msisdn": msisdn, "account": "acme-iot", "twins": [twin]}
        )
    return docs


@pytest.fixture
async def demo(api: Api) -> Api:
    """The API with the demo catalogue and the renewal pools above (overrides conftest's)."""
    r = await api.request("POST", "/v1/catalogue", json={"documents": documents()})
    assert r.status_code == 200, r.text
    return api


def rules() -> list[PoolRules]:
    report = check_documents(documents())
    assert report.catalogue is not None, report.errors
    return lifecycle_rules(report.catalogue)


async def _reserve(store: BalanceStore, rid: str, want: int, used: int = 0) -> int:
    result = await store.charge(
        POOL,
        ChargeRequest(rid, "s|1", BucketUnit.BYTES, int(time.time() * 1000), used, want),
    )
    return result.granted


async def test_auto_top_off_set_over_the_api_is_applied_and_shown(demo: Api) -> None:
    pool = (await demo.request("GET", "/v1/pools/acme-pool")).json()
    life = pool["lifecycle"]
    assert life["top_offs"] == 0 and life["auto_top_off"] is None
    assert life["suspended"] is False and life["period_end"] > 0
    body = {"enabled": True, "addon": "acme-topoff-1gb", "max_per_period": 1}
    r = await demo.request("PUT", "/v1/pools/acme-pool/auto-renewal", json=body)
    assert r.status_code == 200, r.text
    pool = (await demo.request("GET", "/v1/pools/acme-pool")).json()
    assert pool["lifecycle"]["auto_top_off"] == {
        "addon": "acme-topoff-1gb",
        "cap": 1,
        "threshold_percent": 0,
        "source": "api",
    }
    # the 10 GB pool used up: one 1 GB add-on is bought inside the next reservation
    store = BalanceStore(demo.redis)
    assert await _reserve(store, "r1", 10_000_000_000) == 10_000_000_000
    assert await _reserve(store, "r2", 500_000_000, used=10_000_000_000) == 500_000_000
    pool = (await demo.request("GET", "/v1/pools/acme-pool")).json()
    assert pool["size"] == 11_000_000_000 and pool["lifecycle"]["top_offs"] == 1
    # disabled: the next shortfall is the normal exhaustion
    body = {"enabled": False}
    r = await demo.request("PUT", "/v1/pools/acme-pool/auto-renewal", json=body)
    assert r.status_code == 200, r.text
    pool = (await demo.request("GET", "/v1/pools/acme-pool")).json()
    assert pool["lifecycle"]["auto_top_off"] is None


# -- RAR / ASR after a lifecycle pass ---------------------------------------------------------
def _ccr(sid: str, rtype: int, n: int, pool: str, want: int, used: int = 0) -> Message:
    imsi, msisdn = SIMS[pool]
    return build_ccr(
        sid,
        request_type=rtype,
        number=n,
        imsi=imsi,
        msisdn=msisdn,
        msccs=[(10, want, used)],
        sgsn_mcc_mnc="26201",
    )


async def _open_session(api: Api, gateway: Gateway, sid: str, pool: str) -> None:
    """CCR-I on the pool's SIM, then wait until the worker's session record is written
    (behind the answer)."""
    cca = await gateway.send(_ccr(sid, CcRequestType.INITIAL_REQUEST, 0, pool, 1_000_000))
    assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    network = NetworkCommands(api.redis)
    for _ in range(100):
        if await network.sessions("demo", [SIMS[pool]]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"session {sid} never recorded")


async def _period_end(api: Api, tag: str) -> int:
    state = await Lifecycle(api.redis).state(tag)
    assert state is not None
    return int(state["period_end"])


async def _next(gateway: Gateway, command: int) -> Message:
    while True:
        msg = await asyncio.wait_for(gateway.received.get(), 10)
        if msg.command == command:
            return msg


def _left(gateway: Gateway) -> list[Message]:
    out = []
    while not gateway.received.empty():
        out.append(gateway.received.get_nowait())
    return out


async def test_a_renewal_pass_sends_one_rar_to_the_pools_session_even_from_two_workers(
    gateway: Gateway, demo: Api
) -> None:
    sid = "pgw.test;life;1"
    await _open_session(demo, gateway, sid, "renewing")
    now = await _period_end(demo, RENEWING) + 1
    # two workers run the pass at once: one of them renews, and only that one signals
    reports: list[PassReport] = await asyncio.gather(
        *(Lifecycle(demo.redis).run_once(rules(), now) for _ in range(2))
    )
    assert sum(r.outcomes["renewed"] for r in reports) == 1
    assert sum(r.signals["rar"] for r in reports) == 1
    assert not any(r.signals["asr"] for r in reports)  # the unpaid pool has no session
    rar = await _next(gateway, Command.RE_AUTH)
    assert rar.get(A.AVP_SESSION_ID) == sid
    assert rar.get(A.AVP_DESTINATION_HOST) == "pgw.test"
    # a forced re-auth goes through the same channel after anything the passes published:
    # once its answer is back, the gateway has received every RAR the passes sent
    imsi = SIMS["renewing"][0]
    r = await demo.request("POST", f"/v1/subscriptions/{imsi}/sessions/re-auth?wait=5")
    assert [o["status"] for o in r.json()] == ["answered"], r.text
    assert [m.command for m in _left(gateway)] == [Command.RE_AUTH]  # the forced one only
    # the gateway asks again and gets quota from the new period's allowance
    cca = await gateway.send(
        _ccr(sid, CcRequestType.UPDATE_REQUEST, 1, "renewing", 1_000_000, 1_000_000)
    )
    assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    # a later pass in the new period changes nothing: no signal
    again = await Lifecycle(demo.redis).run_once(rules(), now + 1)
    assert again.signals == {} and again.outcomes["renewed"] == 0


async def test_an_unpaid_renewal_suspends_with_one_asr_and_the_paid_retry_sends_rar(
    gateway: Gateway, demo: Api
) -> None:
    sid = "pgw.test;life;2"
    await _open_session(demo, gateway, sid, "unpaid")
    now = await _period_end(demo, UNPAID) + 1
    lifecycle = Lifecycle(demo.redis)
    first = await lifecycle.run_once(rules(), now)  # fleet-wallet (20.00) cannot pay 9,000.00
    assert first.outcomes["suspended"] == 1 and first.signals == {"asr": 1}
    asr = await _next(gateway, Command.ABORT_SESSION)
    assert asr.get(A.AVP_SESSION_ID) == sid
    # the retry of the next pass keeps it suspended: no second ASR
    second = await lifecycle.run_once(rules(), now + 1)
    assert second.outcomes["suspended"] == 1 and second.signals == {}
    cca = await gateway.send(_ccr(sid, CcRequestType.UPDATE_REQUEST, 1, "unpaid", 1_000_000))
    assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_CREDIT_LIMIT_REACHED
    # the wallet gets the money: the next pass renews, lifts the hold and re-authorises
    r = await demo.request(
        "POST",
        "/v1/wallets/fleet-wallet/top-ups",
        who="topup",
        json={"amount": 900_000, "currency": "EUR"},
        headers={"Idempotency-Key": "life-2"},
    )
    assert r.status_code == 201, r.text
    third = await lifecycle.run_once(rules(), now + 2)
    assert third.outcomes["renewed"] == 1 and third.signals == {"rar": 1}
    rar = await _next(gateway, Command.RE_AUTH)
    assert rar.get(A.AVP_SESSION_ID) == sid
    cca = await gateway.send(_ccr(sid, CcRequestType.UPDATE_REQUEST, 2, "unpaid", 1_000_000))
    assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS


async def test_threshold_percent_over_the_api_buys_before_the_pool_runs_out(demo: Api) -> None:
    body = {
        "enabled": True,
        "addon": "acme-topoff-1gb",
        "max_per_period": 2,
        "threshold_percent": 20,
    }
    r = await demo.request("PUT", "/v1/pools/acme-pool/auto-renewal", json=body)
    assert r.status_code == 200, r.text
    assert (await demo.request("GET", "/v1/pools/acme-pool/auto-renewal")).json() == body
    pool = (await demo.request("GET", "/v1/pools/acme-pool")).json()
    assert pool["lifecycle"]["auto_top_off"]["threshold_percent"] == 20
    store = BalanceStore(demo.redis)
    # 10 GB pool, threshold 2 GB: 8 GB reserved leaves 2 GB (not below), 1 byte more does
    assert await _reserve(store, "h1", 8_000_000_000) == 8_000_000_000
    assert (await demo.request("GET", "/v1/pools/acme-pool")).json()["lifecycle"]["top_offs"] == 0
    assert await _reserve(store, "h2", 1, used=8_000_000_000) == 1
    pool = (await demo.request("GET", "/v1/pools/acme-pool")).json()
    assert pool["lifecycle"]["top_offs"] == 1 and pool["size"] == 11_000_000_000
    assert pool["available"] == 3_000_000_000 - 1
