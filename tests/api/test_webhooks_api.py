"""Webhook subscriptions and balance thresholds over the real API (docs/webhooks.md): the
contract of POST /v1/webhooks, the URL and event checks, tenant isolation, the delivery log
and dead letters; PUT/GET thresholds of pools and wallets, in force for charge.lua."""

from __future__ import annotations

import json

from ocs.balance.keys import PayerKeys
from tests.api.conftest import Api

HOOK = "https://hooks.example.com/ocs"
ACME = "demo:prepaid_pool:acme-pool"


async def test_create_answers_201_with_id_and_secret(demo: Api) -> None:
    r = await demo.request("POST", "/v1/webhooks", json={"url": HOOK, "events": ["*"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("wh_") and body["secret"].startswith("whsec_")
    assert (body["url"], body["events"]) == (HOOK, ["*"])
    given = {"url": HOOK, "events": ["balance.threshold"], "secret": "s" * 32,
             "filter": {"payers": ["acme-pool"], "imsis": ["262010000000001"]}}  # fmt: skip
    r = await demo.request("POST", "/v1/webhooks", json=given)
    assert r.status_code == 201 and r.json()["secret"] == "s" * 32
    assert r.json()["filter"] == given["filter"]
    listed = (await demo.request("GET", "/v1/webhooks", who="read")).json()
    assert [w["id"] for w in listed] == [body["id"], r.json()["id"]]
    assert all("secret" not in w for w in listed)  # shown once, at creation


async def test_bad_subscriptions_are_problems(demo: Api) -> None:
    cases = [
        ({"url": "ftp://hooks.example.com/x", "events": ["*"]}, 422, "http"),
        ({"url": "http://127.0.0.1:9000/x", "events": ["*"]}, 422, "public"),
        ({"url": "http://localhost:9000/x", "events": ["*"]}, 422, "localhost"),
        ({"url": "https://u:p@hooks.example.com/x", "events": ["*"]}, 422, "user info"),
        ({"url": HOOK, "events": ["balance.nope"]}, 422, "unknown event type"),
        ({"url": HOOK, "events": []}, 422, ""),
        ({"url": HOOK, "events": ["*"], "secret": "short"}, 422, ""),
        ({"url": "https://x.example/" + "a" * 3000, "events": ["*"]}, 422, ""),
        ({"url": HOOK, "events": ["*"], "filter": {"payers": ["nope"]}}, 404, "nope"),
    ]
    for body, status, words in cases:
        r = await demo.request("POST", "/v1/webhooks", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert words in r.text, r.text
    r = await demo.request("POST", "/v1/webhooks", who="read", json={"url": HOOK, "events": ["*"]})
    assert r.status_code == 403


async def test_another_tenant_sees_nothing(demo: Api) -> None:
    r = await demo.request("POST", "/v1/webhooks", json={"url": HOOK, "events": ["*"]})
    sub = r.json()["id"]
    for method, path in (
        ("GET", f"/v1/webhooks/{sub}"),
        ("GET", f"/v1/webhooks/{sub}/deliveries"),
        ("GET", f"/v1/webhooks/{sub}/dead-letters"),
        ("DELETE", f"/v1/webhooks/{sub}"),
    ):
        assert (await demo.request(method, path, who="other")).status_code == 404, path
    assert (await demo.request("GET", "/v1/webhooks", who="other")).json() == []
    assert (await demo.request("GET", f"/v1/webhooks/{sub}/deliveries")).json() == []
    assert (await demo.request("DELETE", f"/v1/webhooks/{sub}")).status_code == 204
    assert (await demo.request("GET", f"/v1/webhooks/{sub}")).status_code == 404


async def test_pool_and_wallet_thresholds(demo: Api) -> None:
    r = await demo.request("GET", "/v1/pools/acme-pool/thresholds", who="read")
    assert r.json() == {"percent": [80, 100], "absolute": [], "unit": "bytes",
                        "base": 10_000_000_000, "source": "catalogue"}  # fmt: skip
    raw = await demo.redis.hget(PayerKeys(ACME).lifecycle, "alerts")  # the catalogue's
    assert json.loads(raw) == {"u": "bytes", "b": 10_000_000_000, "p": [80, 100], "a": []}
    r = await demo.request(
        "PUT", "/v1/pools/acme-pool/thresholds", json={"percent": [100, 80], "absolute": [5]}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["percent"], r.json()["source"]) == ([80, 100], "api")
    raw = await demo.redis.hget(PayerKeys(ACME).lifecycle, "alerts_api")
    assert json.loads(raw) == {"u": "bytes", "b": 10_000_000_000, "p": [80, 100], "a": [5]}
    r = await demo.request("PUT", "/v1/wallets/bob-wallet/thresholds", json={"absolute": [200]})
    assert r.json() == {"percent": [], "absolute": [200], "unit": "money", "base": None,
                        "source": "api"}  # fmt: skip
    for path, body, status in (
        ("/v1/pools/acme-pool/thresholds", {"percent": [0]}, 422),
        ("/v1/pools/acme-pool/thresholds", {"percent": [101]}, 422),
        ("/v1/pools/acme-pool/thresholds", {"percent": ["80"]}, 422),
        ("/v1/pools/acme-pool/thresholds", {"absolute": [-1]}, 422),
        ("/v1/pools/acme-pool/thresholds", {"percent": list(range(1, 12))}, 422),
        ("/v1/pools/nope/thresholds", {"percent": [80]}, 404),
        ("/v1/wallets/nope/thresholds", {"percent": [80]}, 404),
    ):
        r = await demo.request("PUT", path, json=body)
        assert r.status_code == status, (path, body, r.text)
    # another tenant: no pool of that name in its catalogue
    r = await demo.request("PUT", "/v1/pools/acme-pool/thresholds", who="other", json={})
    assert r.status_code == 404
    r = await demo.request("PUT", "/v1/pools/acme-pool/thresholds", who="read", json={})
    assert r.status_code == 403
