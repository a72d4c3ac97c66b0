"""Top-ups and wallet reads answered by ocs.api.hot_routes give the answers FastAPI gives:
the same requests go to the API with and without the hot routes (both on the same Redis),
and every status, content type and body is compared."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.exceptions import RedisError

from ocs.api import start_api
from ocs.api.auth import Scope, create_token
from ocs.api.state import ApiState
from ocs.config import Settings
from ocs.redis_client import RedisClient, client_for_url
from tests.api.conftest import Api, demo_documents

TOP_UP = "/v1/wallets/bob-wallet/top-ups"
JSON = {"Content-Type": "application/json"}


@dataclass
class Pair:
    """The API twice on the same Redis: with the hot routes, and all through FastAPI."""

    hot: httpx.AsyncClient
    plain: httpx.AsyncClient
    state: ApiState  # the hot server's app state
    auth: Callable[[str], dict[str, str]]


@pytest.fixture
async def pair(settings: Settings, demo: Api) -> AsyncIterator[Pair]:
    hot = await start_api(settings, port=0)
    plain = await start_api(settings, port=0, hot_routes=False)
    app: Any = hot.server.config.app
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{hot.port}") as h,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{plain.port}") as p,
        ):
            yield Pair(h, p, app.state.api, demo.auth)
    finally:
        await plain.stop()
        await hot.stop()


async def _both(
    pair: Pair, method: str, path: str, who: str | None, **kw: Any
) -> tuple[httpx.Response, httpx.Response]:
    headers = {**(pair.auth(who) if who else {}), **kw.pop("headers", {})}
    hot = await pair.hot.request(method, path, headers=headers, **kw)
    slow = await pair.plain.request(method, path, headers=headers, **kw)
    return hot, slow


async def _available(pair: Pair) -> int:
    r = await pair.plain.get("/v1/wallets/bob-wallet", headers=pair.auth("read"))
    return int(r.json()["available"])


def _same(hot: httpx.Response, slow: httpx.Response) -> None:
    assert hot.status_code == slow.status_code, (hot.text, slow.text)
    assert hot.headers["content-type"] == slow.headers["content-type"]
    assert hot.json() == slow.json()


REFUSED: list[tuple[str, str | None, dict[str, str], bytes]] = [
    # (case, token, extra headers, body): every one is refused, identically both ways
    ("no token", None, {"Idempotency-Key": "r-1"}, b'{"amount": 5, "currency": "EUR"}'),
    ("read scope", "read", {"Idempotency-Key": "r-2"}, b'{"amount": 5, "currency": "EUR"}'),
    ("bad token", "bogus", {"Idempotency-Key": "r-3"}, b'{"amount": 5, "currency": "EUR"}'),
    ("no key", "topup", {}, b'{"amount": 5, "currency": "EUR"}'),
    ("bad key", "topup", {"Idempotency-Key": "-x"}, b'{"amount": 5, "currency": "EUR"}'),
    ("string amount", "topup", {"Idempotency-Key": "r-4"}, b'{"amount": "5", "currency": "EUR"}'),
    ("float amount", "topup", {"Idempotency-Key": "r-5"}, b'{"amount": 5.0, "currency": "EUR"}'),
    ("zero amount", "topup", {"Idempotency-Key": "r-6"}, b'{"amount": 0, "currency": "EUR"}'),
    (
        "extra field",
        "topup",
        {"Idempotency-Key": "r-7"},
        b'{"amount": 5, "currency": "EUR", "x": 1}',
    ),
    ("not JSON", "topup", {"Idempotency-Key": "r-8"}, b'{"amount": 5,'),
    ("JSON list", "topup", {"Idempotency-Key": "r-9"}, b"[1, 2]"),
    ("empty body", "topup", {"Idempotency-Key": "r-10"}, b""),
    ("wrong currency", "topup", {"Idempotency-Key": "r-11"}, b'{"amount": 5, "currency": "USD"}'),
    ("unknown currency", "topup", {"Idempotency-Key": "r-12"}, b'{"amount": 5, "currency": "XQQ"}'),
    ("other tenant", "other", {"Idempotency-Key": "r-13"}, b'{"amount": 5, "currency": "EUR"}'),
]


@pytest.mark.parametrize(("case", "who", "headers", "body"), REFUSED, ids=[c[0] for c in REFUSED])
async def test_refused_top_ups_get_fastapis_answer(
    demo: Api, pair: Pair, case: str, who: str | None, headers: dict[str, str], body: bytes
) -> None:
    before = await _available(pair)
    if who == "bogus":
        demo.tokens["bogus"] = "not-a-token"
    seen = pair.state.hot_answers
    hot, slow = await _both(pair, "POST", TOP_UP, who, headers={**JSON, **headers}, content=body)
    assert 400 <= hot.status_code < 500, case
    _same(hot, slow)
    assert hot.headers["content-type"] == "application/problem+json"
    assert await _available(pair) == before
    if case in ("wrong currency", "unknown currency", "other tenant"):
        assert pair.state.hot_answers == seen + 1  # valid input: the handler refused it
    else:
        assert pair.state.hot_answers == seen  # FastAPI answered


async def test_top_up_answers_match(pair: Pair) -> None:
    body = {"amount": 40, "currency": "EUR", "reason": "shop"}
    before = await _available(pair)
    hot, slow = await _both(
        pair, "POST", TOP_UP, "topup", headers={"Idempotency-Key": "a-1"}, json=body
    )
    assert hot.status_code == slow.status_code == 201
    assert hot.json()["available"] == before + 40 and not hot.json()["replayed"]
    assert slow.json() == {**hot.json(), "replayed": True}  # the same key, replayed
    again, again_slow = await _both(
        pair, "POST", TOP_UP, "topup", headers={"Idempotency-Key": "a-1"}, json=body
    )
    _same(again, again_slow)
    assert again.status_code == 201 and again.json()["replayed"]
    auth = pair.auth("topup")
    fresh_hot = await pair.hot.post(TOP_UP, json=body, headers={**auth, "Idempotency-Key": "a-2"})
    fresh_slow = await pair.plain.post(
        TOP_UP, json=body, headers={**auth, "Idempotency-Key": "a-3"}
    )
    fh, fs = fresh_hot.json(), fresh_slow.json()
    assert fs["available"] == fh["available"] + 40
    assert {**fh, "transaction_id": "", "available": 0} == {
        **fs,
        "transaction_id": "",
        "available": 0,
    }
    assert fh["transaction_id"] == "api:topup:a-2" and not fh["replayed"]
    mismatch = await _both(
        pair,
        "POST",
        TOP_UP,
        "topup",
        headers={"Idempotency-Key": "a-1"},
        json={**body, "amount": 41},
    )
    _same(*mismatch)
    assert mismatch[0].status_code == 422


async def test_wallet_reads_match(pair: Pair) -> None:
    for who, path in (
        ("read", "/v1/wallets/bob-wallet"),
        ("topup", "/v1/wallets/bob-wallet"),
        ("read", "/v1/wallets/nobody"),
        (None, "/v1/wallets/bob-wallet"),
        ("other", "/v1/wallets/bob-wallet"),
    ):
        hot, slow = await _both(pair, "GET", path, who)
        _same(hot, slow)
        assert hot.status_code in (200, 401, 404), (who, path)
        raw = json.loads(hot.content)
        assert isinstance(raw, dict)


async def test_top_up_after_script_flush(pair: Pair, redis: RedisClient) -> None:
    """A restarted or flushed Redis has no scripts: the top-up loads it and credits once."""
    before = await _available(pair)
    seen = pair.state.hot_answers
    await redis.script_flush()
    r = await pair.hot.post(
        TOP_UP,
        json={"amount": 7, "currency": "EUR"},
        headers={**pair.auth("topup"), "Idempotency-Key": "flush-1"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["available"] == before + 7
    assert pair.state.hot_answers == seen + 1
    assert await _available(pair) == before + 7


@pytest.fixture
def own_redis() -> Iterator[str]:
    """A Redis server of this test's own, to be stopped halfway through."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("needs the redis-server binary on PATH")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(10)


async def test_redis_gone_is_503_both_ways(settings: Settings, own_redis: str) -> None:
    """Redis stops after the hot server has cached the token and the catalogue: the hot
    routes' handler errors get the app's 503 problem, as the FastAPI way does."""
    own = settings.model_copy(update={"redis_url": own_redis})
    client = client_for_url(own_redis, timeout=2)
    token = await create_token(client, "demo", Scope.ADMIN)
    await client.aclose()
    hot = await start_api(own, port=0)
    plain = await start_api(own, port=0, hot_routes=False)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{hot.port}", headers=auth) as h,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{plain.port}", headers=auth) as p,
        ):
            r = await h.post("/v1/catalogue", json={"documents": demo_documents()})
            assert r.status_code == 200, r.text
            assert (await h.get("/v1/wallets/bob-wallet")).status_code == 200
            assert (await p.get("/v1/wallets/bob-wallet")).status_code == 200
            app: Any = hot.server.config.app
            state: ApiState = app.state.api
            seen = state.hot_answers
            await _shutdown(own_redis)
            body = {"amount": 5, "currency": "EUR"}
            requests: list[tuple[str, str, dict[str, Any]]] = [
                ("GET", "/v1/wallets/bob-wallet", {}),
                ("POST", TOP_UP, {"json": body, "headers": {"Idempotency-Key": "gone-1"}}),
            ]
            for method, path, kw in requests:
                a = await h.request(method, path, **kw)
                b = await p.request(method, path, **kw)
                assert a.status_code == 503, a.text
                assert a.headers["retry-after"] == b.headers["retry-after"] == "1"
                _same(a, b)
            assert state.hot_answers == seen + 2
    finally:
        await plain.stop()
        await hot.stop()


async def _shutdown(url: str) -> None:
    client = client_for_url(url, timeout=2)
    with contextlib.suppress(RedisError):
        await client.shutdown(nosave=True)
    await client.aclose()
