"""Time and service-specific units in a Redis outage (docs/charging.md, "Failure handling"):
a CCR-U reporting CC-Time or CC-Service-Specific-Units while the store is really gone is
answered with a grant of the same unit, bounded by that unit's failover bounds; its usage is
journaled with its unit and service, and once the store is back the replay charges it as the
online path does (the voice or event tariff, the same debit), once. On Nchf a store outage is
a 503 in every unit: nothing is granted, the SMF keeps its report and sends it again.

The Redis is a redis-server of the test's own (append-only file), stopped by its pid and
started again on the same port, as in ``test_outage``."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from ocs.balance import BalanceStore, BucketUnit
from ocs.charging.config import ChargingConfig
from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Avp, Message
from ocs.provisioning.payers import provision_catalogue
from ocs.rating.catalogue import Catalogue
from ocs.redis_client import client_for_url
from tests.balance.helpers import assert_conserved
from tests.charging.ccr import build_ccr
from tests.charging.conftest import make_app, settings_for
from tests.charging.helpers import (
    ACME_EVENTS,
    ACME_IMSI,
    ACME_POOL,
    BOB_IMSI,
    BOB_WALLET,
    bucket,
    msccs,
    wire,
)
from tests.charging.nchf_client import charging_request, h2_client, nchf_served
from tests.charging.test_failover import close, unreachable
from tests.charging.test_nchf_units import VOICE_RG, unit_info, unit_usage
from tests.charging.test_outage import RedisServer, own_redis

__all__ = ["own_redis"]

EVENT_RG = 20  # the fleet SIMs' events twin: the acme-events pool, 0.5 ct an event


def voice(sid: str, rtype: int, n: int, want: int, used: int) -> Message:
    """Bob's CC-Time at home (10 ct a started minute)."""
    return wire(
        build_ccr(
            sid,
            request_type=rtype,
            number=n,
            imsi=BOB_IMSI,
            msccs=[(VOICE_RG, want, used)],
            time=True,
            sgsn_mcc_mnc="26201",
        )
    )


def events(sid: str, rtype: int, n: int, want: int, used: int) -> Message:
    """A fleet SIM's CC-Service-Specific-Units."""
    return wire(
        build_ccr(
            sid,
            request_type=rtype,
            number=n,
            imsi=ACME_IMSI,
            msccs=[(EVENT_RG, want, used)],
            units=True,
        )
    )


def gsu(mscc: Avp) -> dict[str, Any]:
    unit = mscc.find(A.AVP_GRANTED_SERVICE_UNIT)
    assert unit is not None
    return {
        "time": unit.get(A.AVP_CC_TIME),
        "units": unit.get(A.AVP_CC_SERVICE_SPECIFIC_UNITS),
        "octets": unit.get(A.AVP_CC_TOTAL_OCTETS),
    }


async def usage(store: BalanceStore, payer: str) -> list[dict[str, str]]:
    return [r.fields for r in await store.records(payer) if r.fields["kind"] == "usage"]


async def test_time_and_units_in_a_real_outage_are_granted_in_their_unit_and_billed_once(
    own_redis: RedisServer, catalogue: Catalogue, catalogue_dir: Path, config: ChargingConfig
) -> None:
    store = BalanceStore(client_for_url(own_redis.url, timeout=0.5))
    await provision_catalogue(store, catalogue, str(catalogue_dir))
    app = make_app(store, catalogue, replace(config, request_timeout=0.5))
    call, meter = "pgw.test;outage-time;1", "pgw.test;outage-units;1"
    try:
        opened = await app.handle_ccr(voice(call, 1, 0, want=120, used=0))
        assert gsu(msccs(opened)[VOICE_RG])["time"] == 120
        opened = await app.handle_ccr(events(meter, 1, 0, want=10, used=0))
        assert gsu(msccs(opened)[EVENT_RG])["units"] == 10
        wallet0 = await bucket(store, BOB_WALLET, "bob-wallet")
        pool0 = await bucket(store, ACME_EVENTS, "acme-events")

        await own_redis.stop()  # the store is really gone: connections are refused
        down_voice = await app.handle_ccr(voice(call, 2, 1, want=120, used=61))
        down_events = await app.handle_ccr(events(meter, 2, 1, want=10, used=7))
        # answered by failure handling, in the unit asked, at that unit's grant (60 s, 1)
        assert down_voice.get(A.AVP_RESULT_CODE) == 2001
        assert gsu(msccs(down_voice)[VOICE_RG]) == {"time": 60, "units": None, "octets": None}
        assert down_events.get(A.AVP_RESULT_CODE) == 2001
        assert gsu(msccs(down_events)[EVENT_RG]) == {"time": None, "units": 1, "octets": None}
        entries = app.journal.entries()
        assert [(e["used"], e["granted"], e["unit"], e["service"]) for e in entries] == [
            ({"100": 61}, {"100": 60}, {"100": "seconds"}, {"100": "voice"}),
            ({"20": 7}, {"20": 1}, {"20": "events"}, {"20": "event"}),
        ]
        registry = app.metrics.registry
        granted_units = {
            unit: registry.get_sample_value("ocs_failover_granted_units_total", {"unit": unit})
            for unit in ("bytes", "seconds", "events")
        }
        assert granted_units == {"bytes": 0, "seconds": 60, "events": 1}
        saved = app.journal.dir / "journal-copy"
        shutil.copy(app.journal.path, saved)

        await own_redis.start()  # same port, its append-only file: the balances are back
        report = await app.failover.replay()
        assert report is not None and (report.charged, report.units, report.unrated) == (2, 68, 0)
        assert app.journal.files() == []

        wallet1 = await bucket(store, BOB_WALLET, "bob-wallet")
        pool1 = await bucket(store, ACME_EVENTS, "acme-events")
        [rec_voice] = [
            u for u in await usage(store, BOB_WALLET) if u["id"] == f"{call}:1:{VOICE_RG}"
        ]
        [rec_events] = [
            u for u in await usage(store, ACME_EVENTS) if u["id"] == f"{meter}:1:{EVENT_RG}"
        ]
        ctx_voice, ctx_events = json.loads(rec_voice["ctx"]), json.loads(rec_events["ctx"])
        assert (rec_voice["unit"], int(rec_voice["units"]), ctx_voice["service"]) == (
            "seconds",
            61,
            "voice",
        )
        assert (rec_events["unit"], int(rec_events["units"]), ctx_events["service"]) == (
            "events",
            7,
            "event",
        )
        assert ctx_voice["failover"] is True and ctx_events["failover"] is True
        # the voice tariff: 61 s are 2 started minutes at 10 ct; the wallet paid exactly that
        # and the session's live reservation is untouched
        assert ctx_voice["levels"][0]["amount"] == 20
        assert (
            wallet0.available - wallet1.available,
            wallet1.used - wallet0.used,
            wallet1.reserved - wallet0.reserved,
        ) == (20, 20, 0)
        # the events pool counts the 7 events (the record prices them: 0.5 ct each, rounded up)
        assert ctx_events["levels"][0]["amount"] == 4
        assert (pool1.used - pool0.used, pool1.reserved - pool0.reserved) == (7, 0)

        # the same usage charged online (the sessions' CCR-T reporting it again) moves the
        # same: the replay priced it as the online path does
        ended = await app.handle_ccr(voice(call, 3, 2, want=-1, used=61))
        assert ended.get(A.AVP_RESULT_CODE) == 2001
        ended = await app.handle_ccr(events(meter, 3, 2, want=-1, used=7))
        assert ended.get(A.AVP_RESULT_CODE) == 2001
        wallet2 = await bucket(store, BOB_WALLET, "bob-wallet")
        pool2 = await bucket(store, ACME_EVENTS, "acme-events")
        [online_voice] = [
            u for u in await usage(store, BOB_WALLET) if u["id"] == f"{call}:2:{VOICE_RG}"
        ]
        [online_events] = [
            u for u in await usage(store, ACME_EVENTS) if u["id"] == f"{meter}:2:{EVENT_RG}"
        ]
        assert json.loads(online_voice["ctx"])["levels"] == ctx_voice["levels"]
        assert json.loads(online_events["ctx"])["levels"] == ctx_events["levels"]
        assert (wallet2.used - wallet1.used, wallet2.reserved) == (20, 0)
        assert (pool2.used - pool1.used, pool2.reserved) == (7, 0)

        # the journal replayed a second time: nothing moves, no record is added
        records = (await usage(store, BOB_WALLET), await usage(store, ACME_EVENTS))
        shutil.move(saved, app.journal.path)
        again = await app.failover.replay()
        assert again is not None and again.charged == 2
        assert (await usage(store, BOB_WALLET), await usage(store, ACME_EVENTS)) == records
        assert (await bucket(store, BOB_WALLET, "bob-wallet")) == wallet2
        assert (await bucket(store, ACME_EVENTS, "acme-events")) == pool2
        await assert_conserved(store, BOB_WALLET)
        await assert_conserved(store, ACME_EVENTS)
    finally:
        await close(app)


async def test_failover_grants_of_time_and_units_have_bounds_of_their_own(
    catalogue: Catalogue, config: ChargingConfig
) -> None:
    """Seconds and events are bounded per session and per payer by their own settings,
    counted apart from bytes (a session's voice grants do not use up its data bound)."""
    cfg = replace(
        config,
        failure_grant_seconds=60,
        failover_session_seconds=150,
        failover_payer_seconds=1_000,
        failure_grant_events=2,
        failover_session_events=10,
        failover_payer_events=3,
    )
    app = await unreachable(catalogue, cfg)
    try:
        calls = [
            await app.handle_ccr(voice("fo;call", 1 if n == 0 else 2, n, 120, 0)) for n in range(4)
        ]
        a = [await app.handle_ccr(events("fo;meter;a", 1, 0, 10, 0))]
        b = [
            await app.handle_ccr(events("fo;meter;b", 1 if n == 0 else 2, n, 10, 0))
            for n in range(2)
        ]
        data = await app.handle_ccr(
            wire(
                build_ccr(
                    "fo;call", request_type=2, number=4, imsi=BOB_IMSI, msccs=[(10, 500_000, 0)]
                )
            )
        )
    finally:
        await close(app)
    assert [gsu(msccs(x)[VOICE_RG])["time"] for x in calls[:3]] == [60, 60, 30]  # 150 s
    assert msccs(calls[3])[VOICE_RG].get(A.AVP_RESULT_CODE) == 4012
    assert msccs(calls[3])[VOICE_RG].find(A.AVP_GRANTED_SERVICE_UNIT) is None
    # the fleet's events pool: 3 events in all (2 to a, 1 to b, then refused)
    assert gsu(msccs(a[0])[EVENT_RG])["units"] == 2
    assert gsu(msccs(b[0])[EVENT_RG])["units"] == 1
    assert msccs(b[1])[EVENT_RG].get(A.AVP_RESULT_CODE) == 4012
    assert gsu(msccs(data)[10])["octets"] == 500_000  # bytes: their own bounds
    registry = app.metrics.registry
    assert registry.get_sample_value("ocs_failover_refused_total", {"reason": "session"}) == 1
    assert registry.get_sample_value("ocs_failover_refused_total", {"reason": "payer"}) == 1


async def test_nchf_answers_a_store_outage_503_in_every_unit_and_charges_the_retry_once(
    own_redis: RedisServer, catalogue: Catalogue, catalogue_dir: Path, config: ChargingConfig
) -> None:
    """A CHF does not grant without its store (TS 32.290): an update reporting time while
    Redis is gone is a 503 with no grant and nothing journaled; the SMF keeps the report and
    sends it again once the CHF answers, and it is charged then, once."""
    store = BalanceStore(client_for_url(own_redis.url, timeout=0.5))
    await provision_catalogue(store, catalogue, str(catalogue_dir))
    settings = settings_for(own_redis.url, config, charging_timeout=0.5)
    try:
        async with nchf_served(settings) as served, h2_client() as client:
            doc = charging_request(0, imsi=BOB_IMSI, units=[unit_usage(VOICE_RG, "time", want=120)])
            created = await client.post(served.base, json=doc)
            assert created.status_code == 201, created.text
            location = created.headers["location"]
            wallet0 = await bucket(store, BOB_WALLET, "bob-wallet")

            update = charging_request(
                1, imsi=BOB_IMSI, units=[unit_usage(VOICE_RG, "time", want=120, used=61)]
            )
            await own_redis.stop()
            down = await client.post(f"{location}/update", json=update)
            assert down.status_code == 503, down.text
            assert (
                down.json()["cause"] == "SYSTEM_FAILURE"
                and "multipleUnitInformation" not in down.json()
            )
            await own_redis.start()
            again = await client.post(f"{location}/update", json=update)
            assert again.status_code == 200, again.text
            assert unit_info(again.json())["grantedUnit"] == {"time": 120}
            retried = await client.post(f"{location}/update", json=update)  # a retransmission
            assert retried.status_code == 200, retried.text
            done = await client.post(f"{location}/release", json=charging_request(2, imsi=BOB_IMSI))
            assert done.status_code == 204, done.text
        assert not (config.data_dir / "failover-grants.jsonl").exists()  # nothing journaled
        wallet1 = await bucket(store, BOB_WALLET, "bob-wallet")
        assert (wallet1.used - wallet0.used, wallet1.reserved) == (20, 0)  # 2 started minutes
        records = [u for u in await usage(store, BOB_WALLET) if int(u["units"])]
        assert [(u["unit"], int(u["units"])) for u in records] == [("seconds", 61)]
        await assert_conserved(store, BOB_WALLET)
    finally:
        await store.batch.close()
        await store.redis.aclose()


def test_failover_bounds_are_per_unit(config: ChargingConfig) -> None:
    assert config.failover_bounds(BucketUnit.BYTES) == (1_000_000, 10_000_000, 100_000_000)
    assert config.failover_bounds(BucketUnit.SECONDS) == (60, 600, 6_000)
    assert config.failover_bounds(BucketUnit.EVENTS) == (1, 10, 100)


async def test_a_journal_line_of_version_1_is_replayed_as_bytes(
    store: BalanceStore, catalogue: Catalogue, config: ChargingConfig
) -> None:
    """A journal written before the unit was journaled (no ``unit``/``service``) is volume:
    its usage is charged in bytes, as it was granted."""
    down = await unreachable(catalogue, config)
    sid = "pgw.test;failover;v1"
    try:
        await down.handle_ccr(
            wire(
                build_ccr(sid, request_type=2, number=1, imsi=ACME_IMSI, msccs=[(10, -1, 400_000)])
            )
        )
    finally:
        await close(down)
    [entry] = down.journal.entries()
    assert (entry["unit"], entry["service"]) == ({"10": "bytes"}, {"10": "data"})
    old = {k: v for k, v in entry.items() if k not in ("unit", "service")} | {"v": 1}
    down.journal.path.write_text(json.dumps(old) + "\n")
    pool0 = await bucket(store, ACME_POOL, "acme-pool")
    report = await make_app(store, catalogue, config).failover.replay()
    assert report is not None and (report.charged, report.units, report.unrated) == (1, 400_000, 0)
    pool1 = await bucket(store, ACME_POOL, "acme-pool")
    assert pool1.used - pool0.used == 400_000
    [record] = [u for u in await usage(store, ACME_POOL) if u["id"] == f"{sid}:1:10"]
    assert (record["unit"], int(record["units"]) + int(record["overrun"])) == ("bytes", 400_000)
