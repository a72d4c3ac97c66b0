"""The HTTP edge under abuse (issue 14): the token is checked before the body is read, every
JSON decode error is a 400 problem document, bodies are bounded, tokens are listed without
secrets and revoked over the API and the command line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from ocs.api.auth import Scope, digest, issue_token, token_id
from ocs.api.keys import token_key
from ocs.api.problems import MAX_BODY, PROBLEM_JSON
from ocs.config import Settings
from ocs.redis_client import RedisClient
from tests.api.conftest import TENANT, Api

REPO = Path(__file__).resolve().parents[2]
TOP_UP = "/v1/wallets/bob-wallet/top-ups"
DEEP = ("[" * 1000 + "]" * 1000).encode()  # deeper than json's recursion limit
DEEP_OBJECT = ('{"a":' * 1000 + "1" + "}" * 1000).encode()


def problem(response: object, status: int, kind: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == PROBLEM_JSON  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status
    if kind is not None:
        assert body["type"] == f"https://ocs.invalid/problems/{kind}"
    return body


def top_up_headers(api: Api, who: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Idempotency-Key": "edge-1"}
    return headers | (api.auth(who) if who else {})


async def test_deep_json_without_a_token_is_401_before_the_body_is_read(
    demo: Api, caplog: pytest.LogCaptureFixture
) -> None:
    for body in (DEEP, DEEP_OBJECT):
        r = await demo.client.post(TOP_UP, content=body, headers=top_up_headers(demo, None))
        problem(r, 401, "unauthorized")
    r = await demo.client.post(
        TOP_UP, content=DEEP, headers=top_up_headers(demo, None) | {"Authorization": "Bearer x"}
    )
    problem(r, 401, "unauthorized")
    assert [rec for rec in caplog.records if rec.levelno >= logging.ERROR] == []


async def test_a_large_body_without_a_token_is_401_not_read(demo: Api) -> None:
    big = b"[" + b"1," * (MAX_BODY // 2) + b"1]"
    r = await demo.client.post(TOP_UP, content=big, headers=top_up_headers(demo, None))
    problem(r, 401, "unauthorized")
    imports = await demo.client.post(
        "/v1/imports/subscriptions", content=big, headers={"Content-Type": "application/json"}
    )
    problem(imports, 401, "unauthorized")


async def test_deep_json_with_a_token_is_400_on_every_route(
    demo: Api, caplog: pytest.LogCaptureFixture
) -> None:
    for body in (DEEP, DEEP_OBJECT):
        hot = await demo.client.post(TOP_UP, content=body, headers=top_up_headers(demo, "topup"))
        assert problem(hot, 400, "malformed-json")["detail"] == "the body is nested too deeply"
        routed = await demo.request(
            "POST", "/v1/catalogue", content=body, headers={"Content-Type": "application/json"}
        )
        problem(routed, 400, "malformed-json")
    assert [rec for rec in caplog.records if rec.levelno >= logging.ERROR] == []


async def test_malformed_json_with_a_token_is_400(demo: Api) -> None:
    for body in (b"{", b"\xff\xfe", b'{"amount": 1'):
        r = await demo.client.post(TOP_UP, content=body, headers=top_up_headers(demo, "topup"))
        problem(r, 400, "malformed-json")


async def test_a_body_over_the_limit_with_a_token_is_413(demo: Api) -> None:
    big = b"[" + b"1," * (MAX_BODY // 2) + b"1]"
    r = await demo.client.post(TOP_UP, content=big, headers=top_up_headers(demo, "topup"))
    problem(r, 413, "too-large")


async def test_unknown_paths_under_v1_need_a_token_too(demo: Api) -> None:
    problem(await demo.client.get("/v1/nothing-here"), 401, "unauthorized")
    problem(await demo.request("GET", "/v1/nothing-here"), 404, "not-found")


async def test_the_well_formed_top_up_still_works(demo: Api) -> None:
    r = await demo.client.post(
        TOP_UP, json={"amount": 100, "currency": "EUR"}, headers=top_up_headers(demo, "topup")
    )
    assert r.status_code == 201, r.text


# -- tokens ---------------------------------------------------------------------------------
async def test_admin_lists_the_tenants_tokens_without_secrets(demo: Api) -> None:
    r = await demo.request("GET", "/v1/tokens")
    assert r.status_code == 200, r.text
    listed = {t["id"]: t for t in r.json()}
    mine = {token_id(digest(demo.tokens[w])): w for w in ("admin", "topup", "read")}
    assert set(mine) <= set(listed)
    assert token_id(digest(demo.tokens["other"])) not in listed  # another tenant's
    assert listed[next(k for k, w in mine.items() if w == "read")]["scopes"] == ["read"]
    for token in demo.tokens.values():
        assert token not in r.text and digest(token) not in r.text
    problem(await demo.request("GET", "/v1/tokens", who="topup"), 403, "forbidden")


async def test_admin_revokes_a_token_and_it_is_refused_at_once(demo: Api) -> None:
    assert (await demo.request("GET", "/v1/wallets/bob-wallet", who="read")).status_code == 200
    ident = token_id(digest(demo.tokens["read"]))
    r = await demo.request("DELETE", f"/v1/tokens/{ident}")
    assert r.status_code == 204, r.text
    problem(await demo.request("GET", "/v1/wallets/bob-wallet", who="read"), 401, "unauthorized")
    problem(await demo.request("DELETE", f"/v1/tokens/{ident}"), 404, "not-found")
    listed = (await demo.request("GET", "/v1/tokens")).json()
    assert ident not in {t["id"] for t in listed}


async def test_an_admin_cannot_revoke_another_tenants_token(demo: Api) -> None:
    other = token_id(digest(demo.tokens["other"]))
    problem(await demo.request("DELETE", f"/v1/tokens/{other}"), 404, "not-found")
    r = await demo.request("GET", "/v1/tokens", who="other")
    assert r.status_code == 200 and other in {t["id"] for t in r.json()}


async def ocs_cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ocs.cli", *args, "--redis-url", str(settings.redis_url)),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_revocation_by_the_command_line_takes_effect(
    demo: Api, settings: Settings, redis: RedisClient
) -> None:
    """`ocs token revoke` runs in another process: the API refuses the token once its token
    cache entry expires (token_cache_ttl), without a restart."""
    token, ident = await issue_token(redis, TENANT, Scope.READ)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await demo.client.get("/v1/wallets/bob-wallet", headers=headers)).status_code == 200
    code, out, err = await ocs_cli(settings, "token", "list", "--tenant", TENANT, "--json")
    assert code == 0, err
    assert ident in {t["id"] for t in json.loads(out)} and token not in out
    code, out, err = await ocs_cli(settings, "token", "revoke", ident, "--tenant", TENANT)
    assert (code, err) == (0, ""), err
    status = 200
    for _ in range(100):  # the cache entry expires after settings.token_cache_ttl
        status = (await demo.client.get("/v1/wallets/bob-wallet", headers=headers)).status_code
        if status == 401:
            break
        await asyncio.sleep(settings.token_cache_ttl / 20)
    assert status == 401
    code, _, err = await ocs_cli(settings, "token", "revoke", ident, "--tenant", TENANT)
    assert code == 1 and err.startswith("ocs: error: ") and ident in err


async def test_token_list_indexes_tokens_made_before_token_ids(
    settings: Settings, redis: RedisClient
) -> None:
    legacy = "legacy-token-value"
    await redis.hset(
        token_key(digest(legacy)),
        mapping={"tenant": "legacy-t", "scopes": "read", "created_at": "1700000000"},
    )
    code, out, err = await ocs_cli(settings, "token", "list")
    assert code == 0, err
    assert f"{token_id(digest(legacy))}  legacy-t  read  2023-11-14T22:13:20+00:00" in out
    assert legacy not in out


async def test_deep_json_in_an_import_is_a_clear_rejection(demo: Api) -> None:
    deep = "[" * 1000 + "]" * 1000
    lines = await demo.request(
        "POST",
        "/v1/imports/subscriptions",
        content=f'{{"imsi": "262010000000001"}}\n{deep}\n',
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert lines.status_code < 500, lines.text
    assert "nested too deeply" in lines.text
    array = await demo.request(
        "POST",
        "/v1/imports/subscriptions",
        content=f"[{deep}]",
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= array.status_code < 500, array.text
    assert array.headers["content-type"] == PROBLEM_JSON and "nested too deeply" in array.text
    csv = await demo.request(
        "POST",
        "/v1/imports/subscriptions",
        content=f'imsi,properties\n262010000000001,"{deep}"\n',
        headers={"Content-Type": "text/csv"},
    )
    assert csv.status_code < 500, csv.text
