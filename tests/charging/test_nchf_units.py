"""Time and service-specific units, on Nchf and on Gy (issue 15 left-out, docs/nchf.md
"Units"): a rating group that asks for or reports ``time`` is rated as voice (the plan's
voice tariff, by the second), one with ``serviceSpecificUnits`` as events; the grant comes
back in the unit asked, the balance moves by the plan's price of what was reported, and the
record says what was used, in which unit, at which price, as the offline rating reads it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ocs.balance import BalanceStore, BucketUnit
from ocs.balance.keys import nchf_key
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.charging.nchf.request import InvalidRequest, parse
from ocs.diameter import avp_codes as A
from ocs.rating.catalogue import Catalogue
from tests.balance.helpers import assert_conserved
from tests.charging.ccr import build_ccr
from tests.charging.conftest import settings_for
from tests.charging.helpers import (
    ACME_EVENTS,
    ACME_IMSI,
    BOB_IMSI,
    BOB_WALLET,
    bucket,
    msccs,
    wire,
)
from tests.charging.nchf_client import charging_request, conforms, h2_client, nchf_served

VOICE_RG = 100  # Bob's plan (consumer-data) prices voice at home: 10 ct a started minute
EVENT_RG = 20  # the fleet SIMs' events twin counts events in the acme-events pool


def unit_usage(
    rg: int,
    kind: str,
    *,
    want: int | None = -1,
    used: int | None = None,
    final: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A multipleUnitUsage in ``kind`` ("time", "serviceSpecificUnits"); ``want`` -1: an
    empty requestedUnit, None: none."""
    item: dict[str, Any] = {"ratingGroup": rg}
    if want is not None:
        item["requestedUnit"] = {} if want < 0 else {kind: want}
    if used is not None:
        container: dict[str, Any] = {"localSequenceNumber": 1, kind: used} | (extra or {})
        if final:
            container["triggers"] = [
                {"triggerType": "FINAL", "triggerCategory": "IMMEDIATE_REPORT"}
            ]
        item["usedUnitContainer"] = [container]
    return item


def unit_info(body: dict[str, Any]) -> dict[str, Any]:
    (info,) = body["multipleUnitInformation"]
    assert isinstance(info, dict)
    return info


async def post(client: httpx.AsyncClient, url: str, doc: dict[str, Any]) -> httpx.Response:
    return await client.post(url, json=doc)


async def usage_records(store: BalanceStore, payer: str) -> list[tuple[dict[str, Any], Any]]:
    return [
        (json.loads(r.fields["ctx"]), r)
        for r in await store.records(payer)
        if r.fields["kind"] == "usage"
    ]


async def test_time_is_granted_in_seconds_and_charged_at_the_voice_price(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    start = await bucket(store, BOB_WALLET, "bob-wallet")
    async with nchf_served(settings_for(redis_url, config)) as served, h2_client() as client:
        doc = charging_request(0, imsi=BOB_IMSI, units=[unit_usage(VOICE_RG, "time", want=300)])
        created = await post(client, served.base, doc)
        assert created.status_code == 201, created.text
        conforms(created.json())
        info = unit_info(created.json())
        assert info["resultCode"] == "SUCCESS"
        assert info["grantedUnit"] == {"time": 300}  # the unit asked, never a volume
        assert info["timeQuotaThreshold"] == 300 * config.threshold_percent // 100
        assert "volumeQuotaThreshold" not in info
        location = created.headers["location"]
        ref = location.rsplit("/", 1)[1]
        assert (await store.redis.hget(nchf_key("demo", ref), f"u:{VOICE_RG}")) == b"seconds"

        # 125 s used (with a volume of 0 beside it in the container: still time, the
        # reservation's unit), the default quota again: 3 started minutes, 30 ct
        update = charging_request(
            1, imsi=BOB_IMSI,
            units=[unit_usage(VOICE_RG, "time", used=125, extra={"totalVolume": 0})],
        )  # fmt: skip
        answer = await post(client, f"{location}/update", update)
        assert answer.status_code == 200, answer.text
        conforms(answer.json())
        assert unit_info(answer.json())["grantedUnit"] == {
            "time": config.default_quota[BucketUnit.SECONDS]
        }
        # after a REAUTHORIZATION an SMF asks with an empty requestedUnit and no report: the
        # rating group keeps its unit
        again = await post(
            client,
            f"{location}/update",
            charging_request(2, imsi=BOB_IMSI, units=[unit_usage(VOICE_RG, "time")]),
        )
        assert unit_info(again.json())["grantedUnit"] == {
            "time": config.default_quota[BucketUnit.SECONDS]
        }
        release = charging_request(
            3, imsi=BOB_IMSI, units=[unit_usage(VOICE_RG, "time", want=None, used=50)]
        )
        done = await post(client, f"{location}/release", release)
        assert done.status_code == 204, done.text
    wallet = await bucket(store, BOB_WALLET, "bob-wallet")
    assert (start.available - wallet.available, wallet.reserved) == (30 + 10, 0)
    await assert_conserved(store, BOB_WALLET)
    records = [(c, r) for c, r in await usage_records(store, BOB_WALLET) if int(r.fields["units"])]
    assert [(c["service"], r.fields["unit"], int(r.fields["units"])) for c, r in records] == [
        ("voice", "seconds", 125),
        ("voice", "seconds", 50),
    ]
    # the record's price is what the wallet paid (docs/rating.md, one price)
    priced = [(c["levels"][0]["amount"], sum(a for _, a in r.alloc)) for c, r in records]
    assert priced == [(30, 30), (10, 10)]
    assert all(c["interface"] == "nchf" and c["rg"] == VOICE_RG for c, _ in records)


async def test_service_specific_units_are_events_of_the_events_pool(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    start = await bucket(store, ACME_EVENTS, "acme-events")
    async with nchf_served(settings_for(redis_url, config)) as served, h2_client() as client:
        doc = charging_request(
            0, imsi=ACME_IMSI, units=[unit_usage(EVENT_RG, "serviceSpecificUnits", want=10)]
        )
        created = await post(client, served.base, doc)
        assert created.status_code == 201, created.text
        conforms(created.json())
        info = unit_info(created.json())
        assert info["grantedUnit"] == {"serviceSpecificUnits": 10}
        assert info["unitQuotaThreshold"] == 10 * config.threshold_percent // 100
        assert (await bucket(store, ACME_EVENTS, "acme-events")).reserved == 10
        location = created.headers["location"]
        update = charging_request(
            1, imsi=ACME_IMSI,
            units=[unit_usage(EVENT_RG, "serviceSpecificUnits", want=10, used=7)],
        )  # fmt: skip
        answer = await post(client, f"{location}/update", update)
        assert unit_info(answer.json())["grantedUnit"] == {"serviceSpecificUnits": 10}
        conforms(answer.json())
        # the last report of the rating group (FINAL) on an update: nothing more reserved
        last = charging_request(
            2, imsi=ACME_IMSI,
            units=[unit_usage(EVENT_RG, "serviceSpecificUnits", want=None, used=3, final=True)],
        )  # fmt: skip
        answer = await post(client, f"{location}/update", last)
        assert answer.status_code == 200, answer.text
        assert "grantedUnit" not in unit_info(answer.json())
        ref = location.rsplit("/", 1)[1]
        state = await store.redis.hgetall(nchf_key("demo", ref))
        assert f"rg:{EVENT_RG}".encode() not in state and f"u:{EVENT_RG}".encode() not in state
        done = await post(client, f"{location}/release", charging_request(3, imsi=ACME_IMSI))
        assert done.status_code == 204
    pool = await bucket(store, ACME_EVENTS, "acme-events")
    assert (pool.used - start.used, pool.reserved) == (10, 0)
    await assert_conserved(store, ACME_EVENTS)
    records = [(c, r) for c, r in await usage_records(store, ACME_EVENTS) if int(r.fields["units"])]
    assert [(c["service"], r.fields["unit"], int(r.fields["units"])) for c, r in records] == [
        ("event", "events", 7),
        ("event", "events", 3),
    ]
    # the record prices them as the plan does: 0.5 ct an event, rounded up per usage
    assert [c["levels"][0]["amount"] for c, _ in records] == [4, 2]


async def test_a_time_request_for_a_plan_without_voice_is_a_rating_failure(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    """The fleet SIMs' plan sells no voice: the rating group is refused (RATING_FAILED), as
    a data request without a tariff is; nothing is reserved."""
    start = await bucket(store, "demo:prepaid_pool:acme-pool", "acme-pool")
    async with nchf_served(settings_for(redis_url, config)) as served, h2_client() as client:
        doc = charging_request(0, imsi=ACME_IMSI, units=[unit_usage(10, "time", want=60)])
        refused = await post(client, served.base, doc)
    assert refused.status_code == 400, refused.text
    conforms(refused.json(), "ProblemDetails")
    assert refused.json()["cause"] == "CHARGING_FAILED"
    assert (await bucket(store, "demo:prepaid_pool:acme-pool", "acme-pool")) == start


async def test_gy_cc_time_is_rated_as_voice_and_granted_in_seconds(
    app: ChargingApplication, store: BalanceStore, catalogue: Catalogue
) -> None:
    start = await bucket(store, BOB_WALLET, "bob-wallet")
    sid = "pgw.test;gy-time;1"
    ccr = build_ccr(
        sid, request_type=1, number=0, imsi=BOB_IMSI, msccs=[(VOICE_RG, 120, 0)], time=True,
        sgsn_mcc_mnc="26201",
    )  # fmt: skip
    answer = await app.handle_ccr(wire(ccr), None)
    assert answer.get(A.AVP_RESULT_CODE) == 2001
    mscc = msccs(answer)[VOICE_RG]
    gsu = mscc.find(A.AVP_GRANTED_SERVICE_UNIT)
    assert gsu is not None and gsu.get(A.AVP_CC_TIME) == 120
    assert gsu.get(A.AVP_CC_TOTAL_OCTETS) is None
    assert mscc.get(A.AVP_TIME_QUOTA_THRESHOLD) == 120 * app.config.threshold_percent // 100
    # the CCR-U reports 61 s with an empty RSU: time (from the USU), 2 started minutes
    ccr = build_ccr(
        sid, request_type=2, number=1, imsi=BOB_IMSI, msccs=[(VOICE_RG, None, 61)], time=True,
        sgsn_mcc_mnc="26201",
    )  # fmt: skip
    answer = await app.handle_ccr(wire(ccr), None)
    gsu = msccs(answer)[VOICE_RG].find(A.AVP_GRANTED_SERVICE_UNIT)
    assert (
        gsu is not None and gsu.get(A.AVP_CC_TIME) == app.config.default_quota[BucketUnit.SECONDS]
    )
    ccr = build_ccr(
        sid, request_type=3, number=2, imsi=BOB_IMSI, msccs=[(VOICE_RG, -1, 59)], time=True,
        sgsn_mcc_mnc="26201",
    )  # fmt: skip
    answer = await app.handle_ccr(wire(ccr), None)
    assert answer.get(A.AVP_RESULT_CODE) == 2001
    wallet = await bucket(store, BOB_WALLET, "bob-wallet")
    assert (start.available - wallet.available, wallet.reserved) == (20 + 10, 0)
    records = [(c, r) for c, r in await usage_records(store, BOB_WALLET) if int(r.fields["units"])]
    assert [(c["service"], c["interface"], int(r.fields["units"])) for c, r in records] == [
        ("voice", "gy", 61),
        ("voice", "gy", 59),
    ]
    assert [c["levels"][0]["amount"] for c, _ in records] == [20, 10]
    await assert_conserved(store, BOB_WALLET)


def _named(item: dict[str, Any]) -> tuple[BucketUnit | None, tuple[int | None, int]]:
    usage = parse(json.dumps(charging_request(1, units=[item])).encode()).units[0]
    return usage.named, usage.amounts(usage.named or BucketUnit.BYTES)


def test_the_unit_a_multiple_unit_usage_names() -> None:
    """The requestedUnit's unit first (volume, time, service-specific units), else the
    containers' in the same order (a data flow's duration beside its volume is volume);
    none named: decided by the resource (the unit its reservation holds, else volume)."""
    containers = [
        {"localSequenceNumber": 1, "totalVolume": 10, "time": 5},
        {"localSequenceNumber": 2, "time": 7, "serviceSpecificUnits": 2},
    ]
    timed = {"ratingGroup": 1, "requestedUnit": {"time": 60}, "usedUnitContainer": containers}
    assert _named(timed) == (BucketUnit.SECONDS, (60, 12))
    assert _named({"ratingGroup": 1, "requestedUnit": {}, "usedUnitContainer": containers}) == (
        BucketUnit.BYTES, (None, 10)
    )  # fmt: skip
    assert _named({"ratingGroup": 1, "usedUnitContainer": containers[1:]}) == (
        BucketUnit.SECONDS, (None, 7)
    )  # fmt: skip
    asked = {"serviceSpecificUnits": 3, "uplinkVolume": 1}
    assert _named({"ratingGroup": 1, "requestedUnit": asked}) == (BucketUnit.BYTES, (1, 0))
    events = {"ratingGroup": 1, "requestedUnit": {"serviceSpecificUnits": 3}}
    assert _named(events | {"usedUnitContainer": containers[1:]}) == (BucketUnit.EVENTS, (3, 2))
    assert _named({"ratingGroup": 1, "requestedUnit": {}})[0] is None


def test_a_unit_out_of_range_is_named_in_the_answer() -> None:
    for item, param in (
        ({"ratingGroup": 1, "requestedUnit": {"time": 2**32}}, "/requestedUnit/time"),
        (
            {"ratingGroup": 1, "usedUnitContainer": [{"localSequenceNumber": 1, "time": -1}]},
            "/usedUnitContainer/0/time",
        ),
        (
            {"ratingGroup": 1, "requestedUnit": {"serviceSpecificUnits": "3"}},
            "/requestedUnit/serviceSpecificUnits",
        ),
    ):
        with pytest.raises(InvalidRequest) as caught:
            parse(json.dumps(charging_request(1, units=[item])).encode())
        assert caught.value.param == f"/multipleUnitUsage/0{param}"
