"""Subscriptions, pools, catalogue and events over HTTP."""

from __future__ import annotations

from ocs.config import Settings
from ocs.provisioning.catalogues import FOLDERS_KEPT
from tests.api.conftest import Api

SUB = {"account": "bob", "plan": "consumer-data", "payer": {"kind": "wallet", "id": "bob-wallet"}}


async def test_subscription_lifecycle_and_listing(demo: Api, settings: Settings) -> None:
    r = await demo.request(
        "POST",
        "/v1/subscriptions/bulk",
        json={
            "subscriptions": [
                {**SUB, "imsi": f"26201777000000{n}", "msisdn": f"49177700000{n}"} for n in range(3)
            ]
        },
    )
    assert r.status_code == 201, r.text
    assert len(r.json()["subscriptions"]) == 3
    imsi = "262017770000001"
    r = await demo.request(
        "PATCH",
        f"/v1/subscriptions/{imsi}",
        json={"plan": "oem-diag", "properties": {"sensors": 2}},
    )
    assert r.status_code == 200, r.text
    twin = r.json()["subscriptions"][0]["twins"][0]
    assert twin["plan"] == "oem-diag" and twin["properties"] == {"sensors": 2}
    assert [p["plan"] for p in twin["plans"]] == ["consumer-data", "oem-diag"]
    r = await demo.request("PATCH", f"/v1/subscriptions/{imsi}", json={"plan": "nope"})
    assert r.status_code == 422 and r.json()["type"].endswith("catalogue-invalid")
    assert (await demo.request("POST", f"/v1/subscriptions/{imsi}/suspend")).status_code == 200
    assert (await demo.request("POST", f"/v1/subscriptions/{imsi}/suspend")).status_code == 409
    page = (await demo.request("GET", "/v1/subscriptions", params={"status": "suspended"})).json()
    assert [s["imsi"] for s in page["items"]] == [imsi]
    assert (await demo.request("POST", f"/v1/subscriptions/{imsi}/resume")).status_code == 200
    assert (await demo.request("POST", f"/v1/subscriptions/{imsi}/terminate")).status_code == 200
    assert (await demo.request("POST", f"/v1/subscriptions/{imsi}/resume")).status_code == 409
    page = (
        await demo.request(
            "GET", "/v1/subscriptions", params={"account": "bob", "limit": 2, "offset": 1}
        )
    ).json()
    assert page["total"] == 4 and len(page["items"]) == 2
    # a SIM of a range moves between states on its own (docs/sim-states.md); its twins
    # are the range's (read-only here)
    r = await demo.request("POST", "/v1/subscriptions/262010000000001/suspend")
    assert r.status_code == 200, r.text
    assert r.json()["subscriptions"][0]["status"] == "suspended"
    r = await demo.request(
        "PUT",
        "/v1/subscriptions/262017770000002/twins",
        json={
            "twins": [
                {
                    "id": "main",
                    "plan": "consumer-data",
                    "payer": {"kind": "wallet", "id": "bob-wallet"},
                },
                {
                    "id": "diag",
                    "priority": 5,
                    "filter": {"apn": ["diag.apn"]},
                    "plan": "oem-diag",
                    "payer": {"kind": "external_contract", "id": "oem-contract"},
                },
            ]
        },
    )
    assert r.status_code == 200, r.text
    assert [t["id"] for t in r.json()["subscriptions"][0]["twins"]] == ["main", "diag"]
    versions = (await demo.request("GET", "/v1/catalogue/versions", who="read")).json()
    assert versions[0]["revision"] > versions[-1]["revision"] + FOLDERS_KEPT
    # the state and its history live in Redis: only the last revisions keep a folder
    [tenant_dir] = [p for p in (settings.data_dir / "catalogues").iterdir() if p.name != "shared"]
    kept = sorted(int(p.name.removeprefix("rev-")) for p in tenant_dir.glob("rev-*"))
    assert kept == [versions[0]["revision"] - i for i in reversed(range(FOLDERS_KEPT))]


async def test_pool_status_top_off_and_renewal(demo: Api) -> None:
    pool = (await demo.request("GET", "/v1/pools/acme-pool", who="read")).json()
    assert pool["size"] == 10_000_000_000 and pool["members"] == 1001
    r = await demo.request(
        "POST",
        "/v1/pools/acme-pool/top-offs",
        who="topup",
        json={"addon": "acme-topoff-1gb"},
        headers={"Idempotency-Key": "t-1"},
    )
    assert r.status_code == 201, r.text
    r = await demo.request(
        "POST",
        "/v1/pools/acme-pool/top-offs",
        who="topup",
        json={"addon": "acme-topoff-1gb"},
        headers={"Idempotency-Key": "t-1"},
    )
    assert r.json()["replayed"] is True
    pool = (await demo.request("GET", "/v1/pools/acme-pool")).json()
    assert pool["size"] == 11_000_000_000
    r = await demo.request(
        "POST",
        "/v1/pools/acme-events/top-offs",
        json={"addon": "acme-topoff-1gb"},
        headers={"Idempotency-Key": "t-2"},
    )
    assert r.status_code == 422
    body = {"enabled": True, "addon": "acme-topoff-1gb", "max_per_period": 3}
    assert (
        await demo.request("PUT", "/v1/pools/acme-pool/auto-renewal", json=body)
    ).status_code == 200
    got = (await demo.request("GET", "/v1/pools/acme-pool/auto-renewal")).json()
    assert got["enabled"] is True and got["max_per_period"] == 3


async def test_events_are_rated_debited_once(demo: Api) -> None:
    events = [{"id": f"ev-{n}", "imsi": "262010000000007", "units": 2} for n in range(5)]
    events.append({"id": "ev-x", "imsi": "262010099999999"})
    r = await demo.request("POST", "/v1/events", who="topup", json={"events": events})
    assert r.status_code == 200, r.text
    statuses = [o["status"] for o in r.json()["results"]]
    assert statuses == ["charged"] * 5 + ["rejected"]
    r = await demo.request("POST", "/v1/events", who="topup", json={"events": events[:2]})
    assert [o["status"] for o in r.json()["results"]] == ["duplicate", "duplicate"]
    pool = (await demo.request("GET", "/v1/pools/acme-events")).json()
    assert pool["used"] == 10
    # one id twice in a batch: charged once, the repeat reported as a duplicate
    twice = [{"id": "ev-2x", "imsi": "262010000000007", "units": 3}] * 2
    r = await demo.request("POST", "/v1/events", who="topup", json={"events": twice})
    assert [o["status"] for o in r.json()["results"]] == ["charged", "duplicate"]
    assert [o["units"] for o in r.json()["results"]] == [3, 3]
    pool = (await demo.request("GET", "/v1/pools/acme-events")).json()
    assert pool["used"] == 13


async def test_catalogue_plans_and_refusal(demo: Api) -> None:
    plans = (await demo.request("GET", "/v1/catalogue/plans", who="read")).json()
    by_id = {p["id"]: p for p in plans}
    assert len(by_id["consumer-data"]["versions"]) == 2
    assert by_id["consumer-data"]["name"] == "Consumer data"
    bad = {"plans.yaml": {"plans": [{"id": "x", "currency": "EUR", "versions": []}]}}
    r = await demo.request("POST", "/v1/catalogue", json={"documents": bad})
    assert r.status_code == 422
    assert r.json()["issues"][0]["file"] == "plans.yaml"
