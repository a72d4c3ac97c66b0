"""Wallets over HTTP: top-up idempotency (also under concurrency), debits, history paging."""

from __future__ import annotations

import asyncio

from ocs.api.idempotency import RECORD_TTL_MS
from ocs.api.keys import idempotency_key
from ocs.balance import BalanceStore
from ocs.balance.keys import PayerKeys
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


async def _done_and_record(demo: Api, request_id: str, key: str) -> tuple[str, str]:
    done = PayerKeys("demo:wallet:bob-wallet").done(request_id)
    return done, idempotency_key("demo", "wallet", key)


async def test_a_replay_after_the_script_result_expired_credits_and_debits_nothing(
    demo: Api,
) -> None:
    """Issue 12: the key and the balance change it guards are one record with one lifetime.
    The script's stored result is expired by hand (not waited for): the replay answers the
    first outcome and moves nothing."""
    wallet = "/v1/wallets/bob-wallet"
    store = BalanceStore(demo.redis)
    top_up = {"amount": 700, "currency": "EUR"}
    first = await demo.request(
        "POST", TOP_UP, who="topup", json=top_up, headers={"Idempotency-Key": "life-1"}
    )
    assert first.status_code == 201, first.text
    debit = {"amount": 300, "currency": "EUR", "reason": "fee"}
    first_debit = await demo.request(
        "POST", f"{wallet}/debits", json=debit, headers={"Idempotency-Key": "life-2"}
    )
    assert first_debit.status_code == 201, first_debit.text
    refused = await demo.request(
        "POST", f"{wallet}/debits", json={**debit, "amount": 10**9},
        headers={"Idempotency-Key": "life-3"},
    )  # fmt: skip
    assert refused.status_code == 409
    before = (await demo.request("GET", wallet, who="read")).json()
    records = len(await store.records("demo:wallet:bob-wallet"))

    for request_id, key in (("api:topup:life-1", "life-1"), ("api:debit:life-2", "life-2")):
        done, record = await _done_and_record(demo, request_id, key)
        # one lifetime: the script's result is kept as long as the key's record (7 days)
        ttl_done, ttl_record = await demo.redis.pttl(done), await demo.redis.pttl(record)
        assert ttl_done > RECORD_TTL_MS - 60_000 and ttl_record > RECORD_TTL_MS - 60_000
        assert await demo.redis.delete(done) == 1  # the script's result is gone

    again = await demo.request(
        "POST", TOP_UP, who="topup", json=top_up, headers={"Idempotency-Key": "life-1"}
    )
    again_debit = await demo.request(
        "POST", f"{wallet}/debits", json=debit, headers={"Idempotency-Key": "life-2"}
    )
    again_refused = await demo.request(
        "POST", f"{wallet}/debits", json={**debit, "amount": 10**9},
        headers={"Idempotency-Key": "life-3"},
    )  # fmt: skip
    assert (again.status_code, again_debit.status_code, again_refused.status_code) == (
        201,
        201,
        409,
    )
    assert again.json() == {**first.json(), "replayed": True}  # the first outcome
    assert again_debit.json() == {**first_debit.json(), "replayed": True}
    after = (await demo.request("GET", wallet, who="read")).json()
    assert after == before  # no second credit, no second debit
    assert len(await store.records("demo:wallet:bob-wallet")) == records


async def test_a_replay_after_the_key_record_expired_is_still_applied_once(demo: Api) -> None:
    """The other half: the key's record gone, the script's result alive: the request runs
    the script, which answers its stored result (no second credit)."""
    body = {"amount": 40, "currency": "EUR"}
    first = await demo.request(
        "POST", TOP_UP, who="topup", json=body, headers={"Idempotency-Key": "life-4"}
    )
    assert first.status_code == 201
    before = (await demo.request("GET", "/v1/wallets/bob-wallet", who="read")).json()
    _, record = await _done_and_record(demo, "api:topup:life-4", "life-4")
    assert await demo.redis.delete(record) == 1
    again = await demo.request(
        "POST", TOP_UP, who="topup", json=body, headers={"Idempotency-Key": "life-4"}
    )
    assert again.status_code == 201
    after = (await demo.request("GET", "/v1/wallets/bob-wallet", who="read")).json()
    assert after["available"] == before["available"] and after["credited"] == before["credited"]
    records = await BalanceStore(demo.redis).records("demo:wallet:bob-wallet")
    assert [r.fields["id"] for r in records].count("api:topup:life-4") == 1
