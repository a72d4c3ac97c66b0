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


async def _dead_letter(demo: Api, sub: str, n: int) -> str:
    """A dead letter as the dispatcher writes it (the dispatcher has its own tests)."""
    body = json.dumps({"id": f"evt_{n:032x}", "type": "sim.state_changed", "tenant": "demo",
                       "subject": {"payer": "bob-wallet", "payer_kind": "wallet"},
                       "time": "2026-12-06T04:30:12.345Z", "data": {"to": "active"}})  # fmt: skip
    fields = {"event_id": f"evt_{n:032x}", "type": "sim.state_changed", "attempt": "12",
              "outcome": "failed", "status": "503", "error": "HTTP 503", "ms": "3",
              "at_ms": "1", "event_body": body}  # fmt: skip
    entry = await demo.redis.xadd(f"ocs:wh:{{wh:demo}}:dead:{sub}", fields)
    return str(entry.decode())


async def test_dead_letters_listed_in_pages_redelivered_and_dropped(demo: Api) -> None:
    r = await demo.request("POST", "/v1/webhooks", json={"url": HOOK, "events": ["*"]})
    sub = r.json()["id"]
    entries = [await _dead_letter(demo, sub, n) for n in range(5)]
    base = f"/v1/webhooks/{sub}/dead-letters"
    page = (await demo.request("GET", base, who="read", params={"limit": 2})).json()
    assert [d["entry"] for d in page] == entries[:-3:-1]  # newest first
    assert page[0]["event"]["id"] == f"evt_{4:032x}" and page[0]["status"] == 503
    rest = await demo.request("GET", base, who="read", params={"before": page[-1]["entry"]})
    assert [d["entry"] for d in rest.json()] == entries[2::-1]
    r = await demo.request("GET", "/v1/webhooks/dead-letters", who="read")
    assert r.status_code == 200, r.text
    [summary] = r.json()
    assert (summary["webhook"], summary["count"], summary["queue"]) == (sub, 5, 0)
    # one, then several (with one that is not a letter), then drop the rest
    r = await demo.request("POST", f"{base}/redeliver", json={"entries": [entries[0]]})
    assert r.status_code == 202, r.text
    assert r.json() == {"redelivered": 1, "unknown": [], "queue": 1}
    r = await demo.request(
        "POST", f"{base}/redeliver", json={"entries": [entries[0], entries[1], entries[2]]}
    )
    assert r.json() == {"redelivered": 2, "unknown": [entries[0]], "queue": 3}
    assert (await demo.request("DELETE", f"{base}/{entries[3]}")).status_code == 204
    assert (await demo.request("DELETE", f"{base}/{entries[3]}")).status_code == 404
    r = await demo.request("POST", f"{base}/drop", json={"all": True})
    assert r.json() == {"dropped": 1, "unknown": []}
    assert (await demo.request("GET", base)).json() == []
    queued = await demo.redis.xrange(f"ocs:wh:{{wh:demo}}:redeliver:{sub}")
    assert [f[b"id"].decode() for _, f in queued] == [f"evt_{n:032x}" for n in range(3)]


async def test_dead_letter_requests_checked_and_tenant_bound(demo: Api) -> None:
    r = await demo.request("POST", "/v1/webhooks", json={"url": HOOK, "events": ["*"]})
    sub = r.json()["id"]
    entry = await _dead_letter(demo, sub, 1)
    base = f"/v1/webhooks/{sub}/dead-letters"
    for body in ({}, {"all": True, "entries": [entry]}, {"entries": ["nope"]},
                 {"entries": [f"{n}-0" for n in range(1001)]}, {"all": "yes"},
                 {"all": True, "extra": 1}):  # fmt: skip
        for action in ("redeliver", "drop"):
            r = await demo.request("POST", f"{base}/{action}", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.headers["content-type"] == "application/problem+json"
    for params in ({"limit": 0}, {"limit": 1001}, {"before": "x"}):
        assert (await demo.request("GET", base, params=params)).status_code == 422
    # another tenant: every route is 404, and its summary lists nothing of ours
    for method, path, body in (
        ("GET", base, None),
        ("POST", f"{base}/redeliver", {"all": True}),
        ("POST", f"{base}/drop", {"all": True}),
        ("DELETE", f"{base}/{entry}", None),
    ):
        r = await demo.request(method, path, who="other", json=body)
        assert r.status_code == 404, (path, r.text)
    assert (await demo.request("GET", "/v1/webhooks/dead-letters", who="other")).json() == []
    for action in ("redeliver", "drop"):  # a read token may list, not act
        r = await demo.request("POST", f"{base}/{action}", who="read", json={"all": True})
        assert r.status_code == 403
    assert [d["entry"] for d in (await demo.request("GET", base)).json()] == [entry]
