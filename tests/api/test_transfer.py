"""``POST /v1/operator/transfers``: moving a SIM between tenants is an operator action
(an operator token, never a tenant's), refused while the SIM is in session or a payer of its
own holds a balance, and audited (``GET /v1/operator/transfers``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ocs.api.auth import OPERATOR_TENANT, Scope, create_token, digest, issue_token, token_id
from ocs.api.keys import token_key
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.diameter.constants import CcRequestType, ResultCode
from ocs.provisioning.identity import owner_key
from ocs.provisioning.keys import TRANSFERS, state_key
from ocs.redis_client import RedisClient
from tests.api.conftest import DEMO, Api, Gateway
from tests.api.test_provisioning import API_IMSI, API_MSISDN, GLOBEX, apply_catalog_cli
from tests.api.test_tenancy import DEMO_IMSI, DEMO_MSISDN, SESSION, two_tenants
from tests.charging.ccr import build_ccr

__all__ = ["two_tenants"]  # the fixture, from the isolation walk
ROUTE = "/v1/operator/transfers"
ICCID = "8949000000000077701"


async def _operator(api: Api) -> str:
    token = await create_token(api.redis, OPERATOR_TENANT, Scope.OPERATOR)
    api.tokens["operator"] = token
    return token


def _move(imsi: str, source: str, target: str) -> dict[str, Any]:
    return {"imsi": imsi, "from": source, "to": target}


async def test_only_an_operator_token_reaches_the_operator_routes(api: Api) -> None:
    await _operator(api)
    body = _move(API_IMSI, "demo", "other")
    for who in ("admin", "other", "read"):
        for method, kw in (("POST", {"json": body}), ("GET", {})):
            r = await api.request(method, ROUTE, who=who, **kw)
            assert r.status_code == 403, (who, method, r.text)
            assert r.headers["content-type"] == "application/problem+json"
    assert (await api.client.post(ROUTE, json=body)).status_code == 401
    # and an operator token reaches no tenant's data
    for method, path in (("GET", "/v1/wallets/bob-wallet"), ("GET", "/v1/tokens")):
        r = await api.request(method, path, who="operator")
        assert r.status_code == 403, (path, r.text)
    assert (await api.request("GET", ROUTE, who="operator")).json() == []
    # an operator token is never a tenant's, and a tenant never gets the operator scope
    with pytest.raises(ValueError):
        await issue_token(api.redis, "demo", Scope.OPERATOR)
    with pytest.raises(ValueError):
        await issue_token(api.redis, OPERATOR_TENANT, Scope.ADMIN)


async def test_the_operator_moves_a_sim_and_the_move_is_audited(
    api: Api, settings: Settings, redis: RedisClient
) -> None:
    assert await apply_catalog_cli(settings, str(DEMO)) == 0
    assert await apply_catalog_cli(settings, str(GLOBEX)) == 0
    sim = {
        "imsi": API_IMSI,
        "msisdn": API_MSISDN,
        "iccid": ICCID,
        "account": "bob",
        "plan": "consumer-data",
        "payer": {"kind": "wallet", "id": "bob-wallet"},  # shared with demo's other SIM
    }
    assert (await api.request("POST", "/v1/subscriptions", json=sim)).status_code == 201
    caps = await api.request("PUT", f"/v1/subscriptions/{API_IMSI}/limits", json={"sms_day": 5})
    assert caps.status_code == 200, caps.text
    token = await _operator(api)
    # the source must hold it: naming the wrong tenant moves nothing
    r = await api.request("POST", ROUTE, who="operator", json=_move(API_IMSI, "globex", "demo"))
    assert r.status_code == 404, r.text
    assert await redis.hget(owner_key("imsi"), API_IMSI) == b"demo"

    r = await api.request("POST", ROUTE, who="operator", json=_move(API_IMSI, "demo", "globex"))
    assert r.status_code == 200, r.text
    moved = r.json()
    assert (moved["from"], moved["to"], moved["imsi"]) == ("demo", "globex", API_IMSI)
    assert sorted(moved["identities"]) == [
        f"iccid:{ICCID}",
        f"imsi:{API_IMSI}",
        f"msisdn:{API_MSISDN}",
    ]
    for kind, value in (("imsi", API_IMSI), ("msisdn", API_MSISDN), ("iccid", ICCID)):
        assert await redis.hget(owner_key(kind), value) == b"globex"
    # demo no longer has it (its API catalogues changed through the same object)
    assert (await api.request("GET", f"/v1/subscriptions/{API_IMSI}")).status_code == 404
    demo_state = json.loads(await redis.get(state_key("demo")))
    assert API_IMSI not in demo_state["sims"]
    assert API_IMSI not in demo_state["sim_limits"]  # its caps stay behind, not in the way
    # audited: who, when, what
    entries = (await api.request("GET", ROUTE, who="operator")).json()
    assert len(entries) == 1
    assert entries[0]["actor"] == f"operator token {token_id(digest(token))}"
    assert entries[0]["imsi"] == API_IMSI and entries[0]["to"] == "globex"
    assert entries[0]["at"] > 0
    assert len(await redis.lrange(TRANSFERS, 0, -1)) == 1
    # a second move of the same SIM from demo: demo has it no more
    r = await api.request("POST", ROUTE, who="operator", json=_move(API_IMSI, "demo", "globex"))
    assert r.status_code == 404, r.text


@pytest.mark.timeout(120)
async def test_a_sim_in_session_or_with_a_balance_of_its_own_stays(
    two_tenants: Api, gateway: Gateway, redis: RedisClient
) -> None:
    api = two_tenants  # DEMO_IMSI: in session, on a pool only it uses (7,777,001 bytes)
    await _operator(api)
    state_before = await redis.get(state_key("demo"))
    body = _move(DEMO_IMSI, "demo", "other")
    r = await api.request("POST", ROUTE, who="operator", json=body)
    assert r.status_code == 409, r.text
    assert r.json()["type"].endswith("sim-in-session"), r.text
    cca = await gateway.send(
        build_ccr(
            SESSION,
            request_type=CcRequestType.TERMINATION_REQUEST,
            number=1,
            imsi=DEMO_IMSI,
            msisdn=DEMO_MSISDN,
            apn="iot.demo",
            msccs=[(10, -1, 500)],
        )
    )
    assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    for _ in range(100):  # the session index is updated behind the answer
        if not (await api.request("GET", f"/v1/subscriptions/{DEMO_IMSI}/sessions")).json():
            break
        await asyncio.sleep(0.02)
    r = await api.request("POST", ROUTE, who="operator", json=body)
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["type"].endswith("balance-not-settled"), problem
    assert "demo-secret-pool" in problem["detail"]
    # nothing moved, nothing audited
    assert await redis.get(state_key("demo")) == state_before
    assert await redis.hget(owner_key("imsi"), DEMO_IMSI) == b"demo"
    assert await redis.lrange(TRANSFERS, 0, -1) == []


async def test_ocs_token_create_operator_makes_a_token_of_no_tenant(
    api: Api, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from ocs.api.cli import main_token_create, main_token_revoke
    from ocs.errors import UsageError

    with pytest.raises(UsageError):
        await asyncio.to_thread(main_token_create, settings, "demo", None, operator=True)
    assert await asyncio.to_thread(main_token_create, settings, None, None, operator=True) == 0
    token = capsys.readouterr().out.strip()
    r = await api.client.get(ROUTE, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    ident = token_id(digest(token))
    assert await asyncio.to_thread(main_token_revoke, settings, ident, None, operator=True) == 0
    assert await api.redis.exists(token_key(digest(token))) == 0
