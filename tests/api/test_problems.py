"""Errors are RFC 9457 problem documents with 4xx codes; tenants never see each other."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api, demo_documents, tenant_documents

TOP_UP = "/v1/wallets/bob-wallet/top-ups"
KEY = {"Idempotency-Key": "p-1"}


def _problem(r: object, status: int) -> None:
    import httpx

    assert isinstance(r, httpx.Response)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"]


async def test_malformed_json(demo: Api) -> None:
    r = await demo.request(
        "POST",
        TOP_UP,
        content=b'{"amount": 1,',
        headers={**KEY, "Content-Type": "application/json"},
    )
    _problem(r, 400)


@pytest.mark.parametrize(
    "body",
    [
        {"amount": "100", "currency": "EUR"},
        {"amount": 1.5, "currency": "EUR"},
        {"amount": -5, "currency": "EUR"},
        {"amount": 0, "currency": "EUR"},
        {"amount": 10**30, "currency": "EUR"},
        {"amount": 100, "currency": "eur"},
        {"amount": 100},
        [1, 2],
    ],
)
async def test_bad_amounts_and_types(demo: Api, body: object) -> None:
    _problem(await demo.request("POST", TOP_UP, json=body, headers=KEY), 422)


async def test_unknown_or_wrong_currency(demo: Api) -> None:
    r = await demo.request("POST", TOP_UP, json={"amount": 1, "currency": "XYZ"}, headers=KEY)
    _problem(r, 422)
    assert r.json()["type"].endswith("unknown-currency")
    r = await demo.request("POST", TOP_UP, json={"amount": 1, "currency": "USD"}, headers=KEY)
    _problem(r, 422)


async def test_huge_body(demo: Api) -> None:
    blob = b'{"amount": 1, "currency": "EUR", "reason": "' + b"x" * (2 << 20) + b'"}'
    r = await demo.request(
        "POST", TOP_UP, content=blob, headers={**KEY, "Content-Type": "application/json"}
    )
    _problem(r, 413)


async def test_auth_and_scopes(demo: Api) -> None:
    _problem(await demo.client.get("/v1/wallets/bob-wallet"), 401)
    r = await demo.client.get("/v1/wallets/bob-wallet", headers={"Authorization": "Bearer nope"})
    _problem(r, 401)
    r = await demo.request(
        "POST", TOP_UP, who="read", json={"amount": 1, "currency": "EUR"}, headers=KEY
    )
    _problem(r, 403)
    _problem(
        await demo.request("POST", "/v1/subscriptions/262019999999999/suspend", who="topup"), 403
    )
    _problem(await demo.request("GET", "/v1/nowhere"), 404)


async def test_a_tenant_never_reaches_another_tenants_data(demo: Api) -> None:
    for path in (
        "/v1/wallets/bob-wallet",
        "/v1/pools/acme-pool",
        "/v1/subscriptions/262019999999999",
        "/v1/subscriptions",
        "/v1/catalogue/plans",
        "/v1/subscriptions/262019999999999/sessions",
    ):
        r = await demo.request("GET", path, who="other")
        _problem(r, 404)
    r = await demo.request(
        "POST", TOP_UP, who="other", json={"amount": 5, "currency": "EUR"}, headers=KEY
    )
    _problem(r, 404)
    _problem(
        await demo.request("POST", "/v1/subscriptions/262019999999999/suspend", who="other"), 404
    )
    # the other tenant may not apply a document of tenant demo
    r = await demo.request(
        "POST", "/v1/catalogue", who="other", json={"documents": demo_documents()}
    )
    _problem(r, 403)
    # its own catalogue lives apart, in force on Diameter beside demo's (its own SIMs)
    docs = tenant_documents("other")
    r = await demo.request("POST", "/v1/catalogue", who="other", json={"documents": docs})
    assert r.status_code == 200, r.text
    assert r.json()["in_force"] is True
    r = await demo.request(
        "POST",
        "/v1/wallets/bob-wallet/top-ups",
        who="other",
        json={"amount": 5, "currency": "EUR"},
        headers={"Idempotency-Key": "o"},
    )
    assert r.status_code == 201
    mine = (await demo.request("GET", "/v1/wallets/bob-wallet")).json()
    theirs = (await demo.request("GET", "/v1/wallets/bob-wallet", who="other")).json()
    assert mine["available"] == 1000 and theirs["available"] == 1005
