"""Tenant isolation over every route of the OpenAPI document.

Tenant ``demo`` has SIMs (one with an open Gy session on a real gateway), an API-created
wallet, a pool and an account of its own. Tenant ``other`` (the attacker, an admin token)
has the demo catalogue under its own SIMs. Every operation of ``app.openapi()`` is called
by ``other`` with ``demo``'s identifiers (IMSI, MSISDN, ICCID, wallet, pool, account, plan,
payer); each answer is a refusal (problem document) or acts on ``other``'s own namespace,
and afterwards every Redis key of ``demo`` is byte for byte what it was, the gateway got no
RAR or ASR, and no answer carries ``demo``'s data. A route the walk does not know fails the
test, so a new route needs its case here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from ocs.api.asgi import create_app
from ocs.api.auth import digest, token_id
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.diameter.constants import CcRequestType, ResultCode
from ocs.redis_client import RedisClient
from tests.api.conftest import Api, Gateway, tenant_documents
from tests.charging.ccr import build_ccr

DEMO_IMSI = "262018888888888"  # created over the API, with an open Gy session
DEMO_MSISDN = "491708888888"
DEMO_ICCID = "8949000000000000001"
RANGE_IMSI = "262010000000007"  # a SIM of demo's sim_range
RANGE_MSISDN = "491700000007"
SECRET = {
    "account": "demo-secret-acct",
    "pool": "demo-secret-pool",
    "wallet": "demo-vault",
    "plan": "demo-secret-plan",
}
SECRET_BALANCE = 7_777_001  # a number that appears in no answer but demo's
SESSION = "pgw.test;tenancy;1"
OTHER_IMSI = "262029999999901"  # a fresh IMSI of the attacker's own

DEMO_DOCUMENT = {
    "accounts": [{"id": SECRET["account"], "kind": "enterprise", "payment": "prepaid"}],
    "pools": [
        {
            "id": SECRET["pool"],
            "account": SECRET["account"],
            "kind": "static",
            "payment": "prepaid",
            "service": "data",
            "unit": "bytes",
            "size": SECRET_BALANCE,
        }
    ],
    "wallets": [
        {"id": SECRET["wallet"], "account": "bob", "currency": "EUR", "balance": SECRET_BALANCE}
    ],
}


@dataclass
class Case:
    """One request of the attacker: ``own`` when a 2xx is allowed because the request only
    names things of the attacker's own namespace (its own list, its own catalogue)."""

    method: str
    path: str
    json: Any = None
    content: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    own: bool = False
    check: Callable[[httpx.Response], None] | None = None


def _sim(imsi: str, **extra: Any) -> dict[str, Any]:
    return {
        "imsi": imsi,
        "account": "bob",
        "plan": "consumer-data",
        "payer": {"kind": "wallet", "id": "bob-wallet"},
        **extra,
    }


def _no_rows_created(r: httpx.Response) -> None:
    body = r.json()
    assert body["created"] == 0 and body["updated"] == 0, body
    assert len(body["rejected"]) == body["rows"], body


def _all_rejected(r: httpx.Response) -> None:
    assert {o["status"] for o in r.json()["results"]} == {"rejected"}, r.text


def _empty_page(r: httpx.Response) -> None:
    assert r.json()["total"] == 0, r.text


def _all_unknown(r: httpx.Response) -> None:
    body = r.json()
    assert body["revision"] is None and body["counts"]["moved"] == 0, r.text
    assert {o["outcome"] for o in body["results"]} == {"unknown"}, r.text
    assert len(body["results"]) == 5, r.text


def _nothing_moved(r: httpx.Response) -> None:
    body = r.json()
    assert body["revision"] is None and body["results"] == [], r.text


def _header_only(r: httpx.Response) -> None:
    assert r.text.splitlines()[1:] == [], r.text  # the attacker's own export: no usage


def _key(n: str) -> dict[str, str]:
    return {"Idempotency-Key": f"attack-{n}"}


def cases(
    demo_token: str = "0" * 16, demo_hook: str = "wh_" + "0" * 16
) -> dict[tuple[str, str], list[Case]]:
    """Per (METHOD, path template) of the OpenAPI document, the attacker's requests
    (``demo_token``: the id of one of demo's tokens; ``demo_hook``: one of demo's webhook
    subscriptions)."""
    w, p, imsi = SECRET["wallet"], SECRET["pool"], DEMO_IMSI
    move = {"amount": 5, "currency": "EUR"}
    twin = {"id": "main", "payer": {"kind": "wallet", "id": "bob-wallet"}, "plan": "consumer-data"}
    sub_paths = [f"/v1/subscriptions/{i}" for i in (DEMO_IMSI, RANGE_IMSI)]
    csv_rows = (
        "imsi,msisdn,iccid,account,plan,payer\n"
        f"{DEMO_IMSI},,,bob,consumer-data,wallet:bob-wallet\n"
        f"{OTHER_IMSI},{DEMO_MSISDN},,bob,consumer-data,wallet:bob-wallet\n"
        f"262029999999902,,{DEMO_ICCID},bob,consumer-data,wallet:bob-wallet\n"
        f"{RANGE_IMSI},,,bob,consumer-data,wallet:bob-wallet\n"
    )
    foreign_catalogue = {
        "documents": {
            "x.yaml": {"sims": [{"imsi": DEMO_IMSI, "account": "bob", "twins": _twins()}]}
        }
    }
    demo_tenant = {"documents": {"t.yaml": {"tenant": _demo_tenant()}}}
    return {
        ("POST", "/v1/wallets"): [
            Case(
                "POST",
                "/v1/wallets",
                json={"id": "x", "account": SECRET["account"], "currency": "EUR"},
            ),
        ],
        ("GET", "/v1/wallets/{wallet_id}"): [Case("GET", f"/v1/wallets/{w}")],
        ("POST", "/v1/wallets/{wallet_id}/top-ups"): [
            Case("POST", f"/v1/wallets/{w}/top-ups", json=move, headers=_key("t"))
        ],
        ("POST", "/v1/wallets/{wallet_id}/debits"): [
            Case("POST", f"/v1/wallets/{w}/debits", json=move, headers=_key("d"))
        ],
        ("GET", "/v1/wallets/{wallet_id}/transactions"): [
            Case("GET", f"/v1/wallets/{w}/transactions")
        ],
        ("GET", "/v1/pools/{pool_id}"): [Case("GET", f"/v1/pools/{p}")],
        ("GET", "/v1/usage/sims/{sim}"): [
            Case("GET", f"/v1/usage/sims/{i}") for i in (DEMO_IMSI, RANGE_IMSI, DEMO_ICCID)
        ]
        + [Case("GET", f"/v1/usage/sims/{DEMO_MSISDN}", params={"id_type": "msisdn"})],
        ("GET", "/v1/usage/{kind}/{payer_id}"): [
            Case("GET", f"/v1/usage/wallets/{w}"),
            Case("GET", f"/v1/usage/pools/{p}"),
            Case("GET", f"/v1/usage/accounts/{SECRET['account']}"),
        ],
        ("GET", "/v1/usage/export"): [
            Case("GET", "/v1/usage/export", own=True, check=_header_only)
        ],
        ("GET", "/v1/balances/sims/{sim}"): [
            Case("GET", f"/v1/balances/sims/{i}") for i in (DEMO_IMSI, RANGE_IMSI, DEMO_ICCID)
        ],
        ("GET", "/v1/balances/{kind}/{payer_id}"): [
            Case("GET", f"/v1/balances/wallets/{w}"),
            Case("GET", f"/v1/balances/pools/{p}"),
        ],
        ("POST", "/v1/pools/{pool_id}/top-offs"): [
            Case("POST", f"/v1/pools/{p}/top-offs", json={"addon": "x"}, headers=_key("o"))
        ],
        ("GET", "/v1/pools/{pool_id}/auto-renewal"): [Case("GET", f"/v1/pools/{p}/auto-renewal")],
        ("PUT", "/v1/pools/{pool_id}/auto-renewal"): [
            Case("PUT", f"/v1/pools/{p}/auto-renewal", json={"enabled": False})
        ],
        ("POST", "/v1/subscriptions"): [
            Case("POST", "/v1/subscriptions", json=_sim(DEMO_IMSI)),
            Case("POST", "/v1/subscriptions", json=_sim(RANGE_IMSI)),
            Case("POST", "/v1/subscriptions", json=_sim(OTHER_IMSI, msisdn=DEMO_MSISDN)),
            Case("POST", "/v1/subscriptions", json=_sim(OTHER_IMSI, msisdn=RANGE_MSISDN)),
            Case("POST", "/v1/subscriptions", json=_sim(OTHER_IMSI, iccid=DEMO_ICCID)),
        ],
        ("GET", "/v1/subscriptions"): [
            Case(
                "GET",
                "/v1/subscriptions",
                params={"account": SECRET["account"]},
                own=True,
                check=_empty_page,
            ),
            Case("GET", "/v1/subscriptions", params={"payer": w}, own=True, check=_empty_page),
            Case("GET", "/v1/subscriptions", params={"payer": p}, own=True, check=_empty_page),
        ],
        ("POST", "/v1/subscriptions/bulk/state"): [
            Case(  # demo's SIMs by every identity: each one unknown to the attacker
                "POST",
                "/v1/subscriptions/bulk/state",
                json={
                    "state": "suspended",
                    "imsis": [DEMO_IMSI, RANGE_IMSI],
                    "iccids": [DEMO_ICCID],
                    "msisdns": [DEMO_MSISDN, RANGE_MSISDN],
                },
                headers=_key("bulk-state"),
                own=True,
                check=_all_unknown,
            ),
            Case(  # a selector naming demo's account and payers chooses nothing of demo's
                "POST",
                "/v1/subscriptions/bulk/state",
                json={"state": "suspended", "select": {"account": SECRET["account"]}},
                own=True,
                check=_nothing_moved,
            ),
            Case(
                "POST",
                "/v1/subscriptions/bulk/state",
                json={"state": "suspended", "select": {"payer": w}},
                own=True,
                check=_nothing_moved,
            ),
        ],
        ("POST", "/v1/subscriptions/bulk"): [
            Case(
                "POST",
                "/v1/subscriptions/bulk",
                json={"subscriptions": [_sim(OTHER_IMSI), _sim(DEMO_IMSI)]},
            ),
        ],
        ("GET", "/v1/subscriptions/{imsi}"): [Case("GET", s) for s in sub_paths],
        ("PATCH", "/v1/subscriptions/{imsi}"): [
            Case("PATCH", s, json={"properties": {"x": 1}}) for s in sub_paths
        ],
        ("POST", "/v1/subscriptions/{imsi}/suspend"): [
            Case("POST", f"{s}/suspend") for s in sub_paths
        ],
        ("POST", "/v1/subscriptions/{imsi}/resume"): [
            Case("POST", f"{s}/resume") for s in sub_paths
        ],
        ("POST", "/v1/subscriptions/{imsi}/terminate"): [
            Case("POST", f"{s}/terminate") for s in sub_paths
        ],
        ("POST", "/v1/subscriptions/{imsi}/state"): [
            Case("POST", f"{s}/state", json={"state": st})
            for s in sub_paths
            for st in ("inventory", "deactivated")
        ],
        ("GET", "/v1/subscriptions/{imsi}/history"): [
            Case("GET", f"{s}/history") for s in sub_paths
        ],
        ("PUT", "/v1/subscriptions/{imsi}/twins"): [
            Case("PUT", f"{s}/twins", json={"twins": [twin]}) for s in sub_paths
        ],
        ("GET", "/v1/subscriptions/{imsi}/limits"): [Case("GET", f"{s}/limits") for s in sub_paths],
        ("PUT", "/v1/subscriptions/{imsi}/limits"): [
            Case("PUT", f"{s}/limits", json={"data_month_bytes": 1}) for s in sub_paths
        ],
        ("DELETE", "/v1/subscriptions/{imsi}/limits"): [
            Case("DELETE", f"{s}/limits") for s in sub_paths
        ],
        ("GET", "/v1/subscriptions/{imsi}/sessions"): [
            Case("GET", f"/v1/subscriptions/{imsi}/sessions")
        ],
        ("POST", "/v1/subscriptions/{imsi}/sessions/re-auth"): [
            Case("POST", f"/v1/subscriptions/{imsi}/sessions/re-auth", params={"wait": 0})
        ],
        ("POST", "/v1/subscriptions/{imsi}/sessions/abort"): [
            Case("POST", f"/v1/subscriptions/{imsi}/sessions/abort", params={"wait": 0})
        ],
        ("POST", "/v1/catalogue"): [
            Case("POST", "/v1/catalogue", json=foreign_catalogue),
            Case("POST", "/v1/catalogue", json=demo_tenant),
        ],
        ("GET", "/v1/catalogue/plans"): [
            Case(
                "GET", "/v1/catalogue/plans", own=True, check=lambda r: _absent(r, SECRET["plan"])
            ),
        ],
        ("GET", "/v1/catalogue/versions"): [Case("GET", "/v1/catalogue/versions", own=True)],
        ("POST", "/v1/events"): [
            Case(
                "POST",
                "/v1/events",
                own=True,
                check=_all_rejected,
                json={
                    "events": [
                        {"id": "e1", "imsi": DEMO_IMSI},
                        {"id": "e2", "msisdn": DEMO_MSISDN},
                        {"id": "e3", "imsi": RANGE_IMSI},
                    ]
                },
            ),
        ],
        ("POST", "/v1/imports/accounts"): [
            # an account id is per tenant: this creates (or keeps) the attacker's own
            Case(
                "POST",
                "/v1/imports/accounts",
                own=True,
                content=f"id\n{SECRET['account']}\n",
                headers={"Content-Type": "text/csv"},
            ),
        ],
        ("POST", "/v1/imports/subscriptions"): [
            Case(
                "POST",
                "/v1/imports/subscriptions",
                own=True,
                content=csv_rows,
                headers={"Content-Type": "text/csv"},
                check=_no_rows_created,
            ),
            Case(
                "POST",
                "/v1/imports/subscriptions",
                own=True,
                content=f"imsi,status\n{DEMO_IMSI},suspended\n{RANGE_IMSI},terminated\n",
                headers={"Content-Type": "text/csv"},
                check=_no_rows_created,
            ),
        ],
        ("GET", "/v1/tokens"): [
            Case("GET", "/v1/tokens", own=True, check=lambda r: _absent(r, demo_token))
        ],
        ("DELETE", "/v1/tokens/{token_id}"): [Case("DELETE", f"/v1/tokens/{demo_token}")],
        # operator routes: a tenant token (the attacker's admin) is refused outright
        ("POST", "/v1/operator/transfers"): [
            Case(
                "POST", "/v1/operator/transfers", json={"imsi": imsi, "from": "demo", "to": "other"}
            )
        ],
        ("GET", "/v1/operator/transfers"): [Case("GET", "/v1/operator/transfers")],
        ("GET", "/v1/pools/{pool_id}/thresholds"): [Case("GET", f"/v1/pools/{p}/thresholds")],
        ("PUT", "/v1/pools/{pool_id}/thresholds"): [
            Case("PUT", f"/v1/pools/{p}/thresholds", json={"percent": [1]})
        ],
        ("GET", "/v1/wallets/{wallet_id}/thresholds"): [Case("GET", f"/v1/wallets/{w}/thresholds")],
        ("PUT", "/v1/wallets/{wallet_id}/thresholds"): [
            Case("PUT", f"/v1/wallets/{w}/thresholds", json={"absolute": [1]})
        ],
        ("POST", "/v1/webhooks"): [
            Case(  # a filter on demo's payer: unknown in the attacker's catalogue
                "POST",
                "/v1/webhooks",
                json={
                    "url": "https://hooks.example.com/x",
                    "events": ["*"],
                    "filter": {"payers": [p, w]},
                },
            ),
        ],
        ("GET", "/v1/webhooks"): [
            Case("GET", "/v1/webhooks", own=True, check=lambda r: _absent(r, demo_hook))
        ],
        ("GET", "/v1/webhooks/{sub_id}"): [Case("GET", f"/v1/webhooks/{demo_hook}")],
        ("DELETE", "/v1/webhooks/{sub_id}"): [Case("DELETE", f"/v1/webhooks/{demo_hook}")],
        ("GET", "/v1/webhooks/{sub_id}/deliveries"): [
            Case("GET", f"/v1/webhooks/{demo_hook}/deliveries")
        ],
        ("GET", "/v1/webhooks/{sub_id}/dead-letters"): [
            Case("GET", f"/v1/webhooks/{demo_hook}/dead-letters")
        ],
        ("GET", "/v1/webhooks/dead-letters"): [
            Case(
                "GET", "/v1/webhooks/dead-letters", own=True, check=lambda r: _absent(r, demo_hook)
            )
        ],
        ("POST", "/v1/webhooks/{sub_id}/dead-letters/redeliver"): [
            Case("POST", f"/v1/webhooks/{demo_hook}/dead-letters/redeliver", json={"all": True}),
            Case(
                "POST",
                f"/v1/webhooks/{demo_hook}/dead-letters/redeliver",
                json={"entries": ["1-0"]},
            ),
        ],
        ("POST", "/v1/webhooks/{sub_id}/dead-letters/drop"): [
            Case("POST", f"/v1/webhooks/{demo_hook}/dead-letters/drop", json={"all": True})
        ],
        ("DELETE", "/v1/webhooks/{sub_id}/dead-letters/{entry}"): [
            Case("DELETE", f"/v1/webhooks/{demo_hook}/dead-letters/1-0")
        ],
        ("GET", "/v1/invoices/{number}"): [  # documents are read under the token's tenant
            Case("GET", "/v1/invoices/1"),
            Case("GET", "/v1/invoices/CN-1", params={"format": "pdf"}),
        ],
        ("GET", "/healthz"): [Case("GET", "/healthz", own=True)],
        ("GET", "/readyz"): [Case("GET", "/readyz", own=True)],
        ("GET", "/health"): [Case("GET", "/health", own=True)],
    }


def _twins() -> list[dict[str, Any]]:
    return [
        {
            "id": "main",
            "payer": {"kind": "wallet", "id": "bob-wallet"},
            "plans": [{"plan": "consumer-data", "from": "2024-01-01T00:00:00+00:00"}],
        }
    ]


def _demo_tenant() -> dict[str, Any]:
    return {
        "id": "demo",
        "name": "x",
        "home_network": "26201",
        "time_zone": "UTC",
        "currency": "EUR",
    }


def _absent(r: httpx.Response, text: str) -> None:
    assert text not in r.text


def _is_other(key: str) -> bool:
    """Keys the attacker may legitimately write: its own namespace, and transient replies."""
    return any(
        mark in key
        for mark in ("{api:other}", "{other:", ":sub:other:", "ident}:of:other", "ocs:net:reply:")
    )


async def snapshot(redis: RedisClient) -> dict[str, Any]:
    """Every key outside the attacker's namespace, with its value (owner hashes: the
    entries that are not the attacker's)."""
    out: dict[str, Any] = {}
    async for raw in redis.scan_iter(count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if _is_other(key):
            continue
        kind = await redis.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "string":
            out[key] = await redis.get(key)
        elif kind == "hash":
            items = await redis.hgetall(key)
            out[key] = {
                k: v for k, v in items.items() if b"other" not in (k, v) and "other" not in (k, v)
            }
        elif kind == "set":
            out[key] = sorted(await redis.smembers(key))
        elif kind == "zset":
            out[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            out[key] = await redis.lrange(key, 0, -1)
        elif kind == "stream":
            out[key] = await redis.xrange(key)
        else:
            out[key] = kind
    return out


@pytest.fixture
async def two_tenants(gateway: Gateway, demo: Api) -> Api:
    r = await demo.request("POST", "/v1/catalogue", json={"documents": {"s.yaml": DEMO_DOCUMENT}})
    assert r.status_code == 200, r.text
    r = await demo.request(
        "POST",
        "/v1/subscriptions",
        json={
            "imsi": DEMO_IMSI,
            "msisdn": DEMO_MSISDN,
            "iccid": DEMO_ICCID,
            "account": SECRET["account"],
            "plan": "iot-pool",
            "payer": {"kind": "prepaid_pool", "id": SECRET["pool"]},
        },
    )
    assert r.status_code == 201, r.text
    r = await demo.request(
        "POST", "/v1/catalogue", who="other", json={"documents": tenant_documents("other")}
    )
    assert r.status_code == 200, r.text
    cca = await gateway.send(
        build_ccr(
            SESSION,
            request_type=CcRequestType.INITIAL_REQUEST,
            number=0,
            imsi=DEMO_IMSI,
            msisdn=DEMO_MSISDN,
            apn="iot.demo",
            msccs=[(10, 1000, 0)],
        )
    )
    assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    for _ in range(100):  # the session record is written behind the answer
        r = await demo.request("GET", f"/v1/subscriptions/{DEMO_IMSI}/sessions")
        if r.json():
            break
        await asyncio.sleep(0.02)
    assert [s["session_id"] for s in r.json()] == [SESSION]
    return demo


@pytest.mark.timeout(120)
async def test_every_route_refuses_the_other_tenants_identifiers(
    two_tenants: Api, gateway: Gateway, redis: RedisClient, settings: Settings
) -> None:
    api = two_tenants
    hook = await api.request(
        "POST", "/v1/webhooks", json={"url": "https://hooks.example.com/demo", "events": ["*"]}
    )
    assert hook.status_code == 201, hook.text
    table = cases(token_id(digest(api.tokens["admin"])), hook.json()["id"])
    operations = {
        (method.upper(), path)
        for path, ops in create_app(settings).openapi()["paths"].items()
        for method in ops
    }
    assert operations == set(table), "a route without an isolation case (or a gone one)"
    before = await snapshot(redis)
    assert any("{demo:wallet:demo-vault}" in k for k in before)  # the walk has a target
    answers = []
    # refusals first: an own-namespace case (an account import) may create an id of the
    # attacker's own that a later refusal would otherwise find
    walk = sorted((group[i].own, op, i) for op, group in table.items() for i in range(len(group)))
    for _, op, i in walk:
        case = table[op][i]
        r = await api.request(
            case.method,
            case.path,
            who="other",
            json=case.json,
            content=case.content,
            params=case.params,
            headers=case.headers,
        )
        answers.append(r)
        where = f"{case.method} {case.path} {case.json or case.content or ''}"
        if case.own:
            assert r.status_code < 300, (where, r.text)
        else:
            assert r.status_code in (403, 404, 409, 422), (where, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json", where
        if case.check is not None:
            case.check(r)
        # nothing of demo's leaks: no owner name, no secret balance, no session
        for secret in (str(SECRET_BALANCE), SESSION, '"demo"', "tenant 'demo'"):
            assert secret not in r.text, (where, secret, r.text)
    await asyncio.sleep(0.3)  # a signal published by mistake would reach the gateway now
    assert gateway.received.empty(), "a RAR/ASR reached the other tenant's gateway"
    after = await snapshot(redis)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == [], changed
    # the refusals of identities name the identity, never the owner
    taken = [r.json() for r in answers if r.status_code == 409]
    assert {t["identity"]["value"] for t in taken if "identity" in t} >= {
        DEMO_IMSI,
        DEMO_MSISDN,
        DEMO_ICCID,
        RANGE_IMSI,
        RANGE_MSISDN,
    }
    # and demo's session still answers to demo
    r = await api.request("GET", f"/v1/subscriptions/{DEMO_IMSI}/sessions")
    assert [s["session_id"] for s in r.json()] == [SESSION]
    assert json.dumps(r.json()).count(SESSION) == 1
