"""Result-Codes other than success, events, wallets, failure handling, and the CLI seams."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from ocs.balance import BalanceStore
from ocs.charging import apply_catalog, create_charging, show_balance
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.diameter.constants import CheckBalanceResult, RequestedAction
from ocs.rating.catalogue import Catalogue
from ocs.redis_client import client_for_url
from tests.balance.helpers import assert_conserved
from tests.charging.ccr import build_ccr
from tests.charging.conftest import make_app
from tests.charging.helpers import (
    ACME_EVENTS,
    ACME_IMSI,
    ACME_POOL,
    BOB_IMSI,
    BOB_MSISDN,
    BOB_WALLET,
    SUSPENDED_IMSI,
    bucket,
    granted,
    msccs,
    wire,
)

MB = 1_000_000


def data_ccr(sid: str, imsi: str, *, plmn: str = "26201", rg: int = 10, n: int = 0, rtype: int = 1):
    return wire(
        build_ccr(
            sid, request_type=rtype, number=n, imsi=imsi, msccs=[(rg, MB, 0)], sgsn_mcc_mnc=plmn
        )
    )


def event_ccr(sid: str, imsi: str | None, action: RequestedAction, units: int, **kw: object):
    return wire(
        build_ccr(
            sid,
            request_type=4,
            number=0,
            imsi=imsi,
            msccs=[(1, units, 0)],
            apn=None,
            requested_action=action,
            units=True,
            **kw,  # type: ignore[arg-type]
        )
    )


@pytest.mark.parametrize(
    ("imsi", "plmn", "code"),
    [
        ("262010000999999", "26201", 5030),  # no such SIM
        (SUSPENDED_IMSI, "26201", 4010),  # suspended twin
        (ACME_IMSI, "31026", 5031),  # roaming where the plan has no data tariff
    ],
)
async def test_failure_outcomes(
    app: ChargingApplication, store: BalanceStore, imsi: str, plmn: str, code: int
) -> None:
    answer = await app.handle_ccr(data_ccr(f"f-{code}", imsi, plmn=plmn), None)
    assert answer.get(A.AVP_RESULT_CODE) == code
    assert msccs(answer)[10].get(A.AVP_RESULT_CODE) == code
    assert answer.get(A.AVP_CC_REQUEST_NUMBER) == 0
    assert (await bucket(store, ACME_POOL, "acme-pool")).reserved == 0


async def test_unknown_user_without_mscc_and_free_rating_group(app: ChargingApplication) -> None:
    bare = wire(build_ccr("u1", request_type=1, number=0, imsi="262010000999999"))
    assert (await app.handle_ccr(bare, None)).get(A.AVP_RESULT_CODE) == 5030
    free = await app.handle_ccr(data_ccr("u2", ACME_IMSI, rg=99), None)
    assert free.get(A.AVP_RESULT_CODE) == 4011
    assert granted(msccs(free)[99]) is None


async def test_missing_request_type_is_a_protocol_error_with_the_cca_avps(
    app: ChargingApplication,
) -> None:
    msg = data_ccr("p1", ACME_IMSI)
    msg.avps = [a for a in msg.avps if a.key != A.AVP_CC_REQUEST_TYPE]
    answer = await app.handle_ccr(msg, None)
    assert answer.get(A.AVP_RESULT_CODE) == 5005
    assert answer.get(A.AVP_CC_REQUEST_NUMBER) == 0
    assert answer.get(A.AVP_AUTH_APPLICATION_ID) == 4
    assert answer.find(A.AVP_FAILED_AVP) is not None


async def test_wallet_session_is_priced_in_money(
    app: ChargingApplication, store: BalanceStore
) -> None:
    first = await app.handle_ccr(data_ccr("w1", BOB_IMSI), None)
    assert granted(msccs(first)[10]) == MB
    wallet = await bucket(store, BOB_WALLET, "bob-wallet")
    # 1 MB priced by the time band of now (Berlin time): weekend 1 ct, off-peak 1.5 rounded
    # up to 2, working-day peak 3 ct
    assert 0 < wallet.reserved <= 3
    final = wire(build_ccr("w1", request_type=3, number=1, imsi=BOB_IMSI, msccs=[(10, -1, MB)]))
    assert (await app.handle_ccr(final, None)).get(A.AVP_RESULT_CODE) == 2001
    wallet = await bucket(store, BOB_WALLET, "bob-wallet")
    assert wallet.reserved == 0
    # the MB is home usage inside consumer-data's 50 MB allowance: rated 0, so the wallet is
    # debited 0 (it paid the first tier's rate before, whatever the allowance; issue 12)
    assert (wallet.used, wallet.available) == (0, 1_000)
    usage = [r for r in await store.records(BOB_WALLET) if r.fields["kind"] == "usage"]
    assert [json.loads(r.fields["ctx"])["levels"][0]["amount"] for r in usage] == [0]
    await assert_conserved(store, BOB_WALLET)


async def test_direct_debiting_sms_and_iot_events(
    app: ChargingApplication, store: BalanceStore
) -> None:
    sms = event_ccr(
        "e1", BOB_IMSI, RequestedAction.DIRECT_DEBITING, 1, msisdn=BOB_MSISDN, sms_recipient="4917"
    )
    answer = await app.handle_ccr(sms, None)
    assert answer.get(A.AVP_RESULT_CODE) == 2001
    assert (await bucket(store, BOB_WALLET, "bob-wallet")).used == 9  # 9 ct per SMS
    sensor = event_ccr("e2", ACME_IMSI, RequestedAction.DIRECT_DEBITING, 25)
    answer = await app.handle_ccr(sensor, None)
    assert granted(msccs(answer)[1]) == 25
    events = await bucket(store, ACME_EVENTS, "acme-events")
    assert events.used == 25
    again = await app.handle_ccr(
        event_ccr("e2", ACME_IMSI, RequestedAction.DIRECT_DEBITING, 25), None
    )
    assert again.get(A.AVP_RESULT_CODE) == 2001
    assert (await bucket(store, ACME_EVENTS, "acme-events")).used == 25  # charged once
    await assert_conserved(store, ACME_EVENTS)


async def test_event_debit_refused_when_the_pool_is_short(
    app: ChargingApplication, store: BalanceStore
) -> None:
    await store.adjust(
        ACME_EVENTS, "shrink", [{"op": "resize", "id": "acme-events", "size": 10}], 0
    )
    answer = await app.handle_ccr(
        event_ccr("e3", ACME_IMSI, RequestedAction.DIRECT_DEBITING, 11), None
    )
    assert answer.get(A.AVP_RESULT_CODE) == 4012
    assert (await bucket(store, ACME_EVENTS, "acme-events")).used == 0


async def test_refund_check_balance_and_price_enquiry(
    app: ChargingApplication, store: BalanceStore
) -> None:
    await app.handle_ccr(event_ccr("r1", ACME_IMSI, RequestedAction.DIRECT_DEBITING, 40), None)
    refund = await app.handle_ccr(
        event_ccr("r2", ACME_IMSI, RequestedAction.REFUND_ACCOUNT, 15), None
    )
    assert refund.get(A.AVP_RESULT_CODE) == 2001
    assert (await bucket(store, ACME_EVENTS, "acme-events")).used == 25
    check = await app.handle_ccr(
        event_ccr("r3", ACME_IMSI, RequestedAction.CHECK_BALANCE, 10), None
    )
    assert check.get(A.AVP_CHECK_BALANCE_RESULT) == CheckBalanceResult.ENOUGH_CREDIT
    too_much = await app.handle_ccr(
        event_ccr("r4", ACME_IMSI, RequestedAction.CHECK_BALANCE, 10**9), None
    )
    assert too_much.get(A.AVP_CHECK_BALANCE_RESULT) == CheckBalanceResult.NO_CREDIT
    price = await app.handle_ccr(
        event_ccr("r5", BOB_IMSI, RequestedAction.PRICE_ENQUIRY, 2, sms_recipient="49"), None
    )
    cost = price.find(A.AVP_COST_INFORMATION)
    assert cost is not None
    value = cost.find(A.AVP_UNIT_VALUE)
    assert value is not None and value.get(A.AVP_VALUE_DIGITS) == 18
    assert cost.get(A.AVP_CURRENCY_CODE) == 978
    assert (await bucket(store, BOB_WALLET, "bob-wallet")).used == 0
    await assert_conserved(store, ACME_EVENTS)


async def _unreachable_app(
    catalogue: Catalogue, config: ChargingConfig, mode: str
) -> tuple[ChargingApplication, Redis]:
    client = client_for_url("redis://127.0.0.1:1/0", timeout=0.2)
    cfg = replace(config, failure_handling=mode, request_timeout=0.5)
    return make_app(BalanceStore(client), catalogue, cfg), client


async def test_redis_unreachable_grants_the_failover_quota_and_journals_it(
    catalogue: Catalogue, config: ChargingConfig
) -> None:
    app, client = await _unreachable_app(catalogue, config, "grant")
    try:
        answer = await asyncio.wait_for(app.handle_ccr(data_ccr("x1", ACME_IMSI), None), 5)
    finally:
        await app.store.batch.close()
        await client.aclose()
    assert answer.get(A.AVP_RESULT_CODE) == 2001
    assert granted(msccs(answer)[10]) == config.failure_grant_bytes
    [entry] = app.journal.entries()
    assert (entry["tenant"], entry["n"]) == ("demo", 0)
    assert entry["granted"] == {"10": config.failure_grant_bytes}
    assert answer.get(A.AVP_CREDIT_CONTROL_FAILURE_HANDLING) == 2  # retry_and_terminate
    # no subscriber identity (nor the Session-Id) in clear on disk (issue 14)
    text = app.journal.path.read_text()
    assert ACME_IMSI not in text and "491700000001" not in text


async def test_redis_unreachable_denies_when_configured(
    catalogue: Catalogue, config: ChargingConfig
) -> None:
    app, client = await _unreachable_app(catalogue, config, "deny")
    try:
        answer = await asyncio.wait_for(app.handle_ccr(data_ccr("x2", ACME_IMSI), None), 5)
    finally:
        await app.store.batch.close()
        await client.aclose()
    assert answer.get(A.AVP_RESULT_CODE) == 5012
    assert answer.get(A.AVP_CC_REQUEST_TYPE) == 1


async def test_apply_catalog_show_balance_and_create_charging(
    redis: Redis, redis_url: str, catalogue_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_url, data_dir=tmp_path)
    summary = await apply_catalog(catalogue_dir, settings)
    assert summary["tenant"] == "demo"
    shown = await show_balance(BOB_MSISDN, settings)
    [payer] = shown["payers"]
    assert payer["payer"] == BOB_WALLET
    assert payer["buckets"][0]["available"] == 1_000
    acme = await show_balance("491700000999", settings)
    assert {p["id"] for p in acme["payers"]} == {"acme-events", "acme-pool"}
    pool = next(p for p in acme["payers"] if p["id"] == "acme-pool")
    assert pool["buckets"][0]["available"] == 10_000_000_000
    with pytest.raises(LookupError):
        await show_balance("4900", settings)

    runtime = await create_charging(settings, registry=CollectorRegistry(), start=False)
    try:
        answer = await runtime.application.handle_ccr(data_ccr("rt", ACME_IMSI), None)
        assert answer.get(A.AVP_RESULT_CODE) == 2001
        assert answer.get(A.AVP_ORIGIN_HOST) == settings.origin_host
        metrics = runtime.application.metrics
        assert (
            metrics.registry.get_sample_value(
                "ocs_ccr_total", {"type": "initial", "result": "2001"}
            )
            == 1.0
        )
        assert await runtime.reclaim_once() == 0
        assert await runtime.reload_if_applied() is False
    finally:
        await runtime.close()
    shown = await show_balance("491700000001", settings)
    pool = next(p for p in shown["payers"] if p["id"] == "acme-pool")
    assert pool["reservations"] == 1
