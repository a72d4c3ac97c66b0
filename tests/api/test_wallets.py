"""Wallets over HTTP: top-up idempotency (also under concurrency), debits, history paging."""

from __future__ import annotations

import asyncio

from ocs.balance import BalanceStore
from tests.api.conftest import Api

TOP_UP = "/v1/wallets/bob-wallet/top-ups"


async def test_top_up_credits_once_per_key(demo: Api) -> None:
    before = (await demo.request("GET", "/v1/wallets/bob-wallet", who="read")).json()
    body = {"amount": 250, "currency": "EUR"}
    first = await demo.request(
        "POST", TOP_UP, who="topup", json=body, headers={"Idempotency-Key": "k-1"}
    )
    again = await demo.request(
        "POST", TOP_UP, who="topup", json=body, headers={"Idempotency-Key": "k-1"}
    )
    assert first.status_code == again.status_code == 201
    assert not first.json()["replayed"] and again.json()["replayed"]
    after = (await demo.request("GET", "/v1/wallets/bob-wallet", who="read")).json()
    assert after["available"] == before["available"] + 250
    other = await demo.request(
        "POST", TOP_UP, who="topup", json={**body, "amount": 9}, headers={"Idempotency-Key": "k-1"}
    )
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"


async def test_hundred_parallel_top_ups_with_one_key_credit_once(demo: Api) -> None:
    before = (await demo.request("GET", "/v1/wallets/bob-wallet")).json()["available"]

    async def one() -> int:
        r = await demo.request(
            "POST",
            TOP_UP,
            who="topup",
            json={"amount": 1000, "currency": "EUR"},
            headers={"Idempotency-Key": "burst"},
        )
        return r.status_code

    codes = await asyncio.gather(*(one() for _ in range(100)))
    assert set(codes) == {201}
    after = (await demo.request("GET", "/v1/wallets/bob-wallet")).json()["available"]
    assert after == before + 1000
    records = await BalanceStore(demo.redis).records("demo:wallet:bob-wallet")
    assert [r.fields["id"] for r in records].count("api:topup:burst") == 1


async def test_debit_and_history_pages(demo: Api) -> None:
    for n in range(3):
        r = await demo.request(
            "POST",
            TOP_UP,
            who="topup",
            json={"amount": 100 + n, "currency": "EUR"},
            headers={"Idempotency-Key": f"h-{n}"},
        )
        assert r.status_code == 201
    r = await demo.request(
        "POST",
        "/v1/wallets/bob-wallet/debits",
        json={"amount": 50, "currency": "EUR", "reason": "fee"},
        headers={"Idempotency-Key": "d-1"},
    )
    assert r.status_code == 201, r.text
    r = await demo.request(
        "POST",
        "/v1/wallets/bob-wallet/debits",
        json={"amount": 10**9, "currency": "EUR"},
        headers={"Idempotency-Key": "d-2"},
    )
    assert r.status_code == 409
    seen: list[dict[str, object]] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await demo.request(
                "GET", "/v1/wallets/bob-wallet/transactions", who="read", params=params
            )
        ).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    amounts = [t["amount"] for t in seen]
    assert amounts[:4] == [-50, 102, 101, 100]  # newest first
    assert len({t["id"] for t in seen}) == len(seen)


async def test_create_wallet_and_read_it(demo: Api) -> None:
    r = await demo.request(
        "POST",
        "/v1/wallets",
        json={"id": "new-w", "account": "bob", "currency": "EUR", "balance": 77},
    )
    assert r.status_code == 201, r.text
    assert r.json()["available"] == 77
    r = await demo.request(
        "POST", "/v1/wallets", json={"id": "new-w", "account": "bob", "currency": "EUR"}
    )
    assert r.status_code == 409
