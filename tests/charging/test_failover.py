"""Failover grants: bounded per session and per payer, Credit-Control-Failure-Handling in
the answers, the journal encrypted, and its replay billing the usage exactly once (twice
replayed, or cut by a failure and replayed again, it still counts once)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from ocs.balance import BalanceStore
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Message
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import load_catalogue
from ocs.redis_client import client_for_url
from tests.balance.helpers import assert_conserved
from tests.charging.ccr import build_ccr
from tests.charging.conftest import make_app
from tests.charging.helpers import (
    ACME_POOL,
    BOB_IMSI,
    BOB_WALLET,
    bucket,
    granted,
    msccs,
    wire,
)

MB = 1_000_000
IMSI_A = "262010000000011"
IMSI_B = "262010000000012"


def ccr(sid: str, imsi: str, rtype: int, n: int, used: int = 0, want: int = MB) -> Message:
    return wire(build_ccr(sid, request_type=rtype, number=n, imsi=imsi, msccs=[(10, want, used)]))


async def unreachable(catalogue: Catalogue, config: ChargingConfig) -> ChargingApplication:
    """The application on a Redis that refuses connections: every CCR is an outage."""
    return make_app(
        BalanceStore(client_for_url("redis://127.0.0.1:1/0", timeout=0.2)), catalogue, config
    )


async def close(app: ChargingApplication) -> None:
    await app.store.batch.close()
    await app.store.redis.aclose()


async def test_failover_grants_are_bounded_per_session_and_per_payer(
    catalogue: Catalogue, config: ChargingConfig
) -> None:
    cfg = replace(
        config,
        failure_grant_bytes=MB,
        failover_session_bytes=2_500_000,
        failover_payer_bytes=4 * MB,
        credit_control_failure_handling="terminate",
    )
    app = await unreachable(catalogue, cfg)
    try:
        a = [await app.handle_ccr(ccr("fo;a", IMSI_A, 1 if n == 0 else 2, n)) for n in range(4)]
        b = [await app.handle_ccr(ccr("fo;b", IMSI_B, 1 if n == 0 else 2, n)) for n in range(3)]
    finally:
        await close(app)
    assert [granted(msccs(x)[10]) for x in a] == [MB, MB, 500_000, None]
    assert msccs(a[3])[10].get(A.AVP_RESULT_CODE) == 4012  # the session's bound
    assert [granted(msccs(x)[10]) for x in b] == [MB, 500_000, None]  # the payer's 4 MB
    assert msccs(b[2])[10].get(A.AVP_RESULT_CODE) == 4012
    for answer in (*a, *b):
        assert answer.get(A.AVP_CREDIT_CONTROL_FAILURE_HANDLING) == 0  # TERMINATE
    registry = app.metrics.registry
    assert registry.get_sample_value("ocs_failover_refused_total", {"reason": "session"}) == 1
    assert registry.get_sample_value("ocs_failover_refused_total", {"reason": "payer"}) == 1
    assert (
        registry.get_sample_value("ocs_failover_granted_units_total", {"unit": "bytes"}) == 4 * MB
    )
    assert registry.get_sample_value("ocs_failover_grants_total", {"mode": "grant"}) == 7


async def test_unknown_subscribers_get_no_failover_grant(
    catalogue: Catalogue, config: ChargingConfig
) -> None:
    app = await unreachable(catalogue, config)
    try:
        answer = await app.handle_ccr(ccr("fo;unknown", "999990000000001", 1, 0))
    finally:
        await close(app)
    assert answer.get(A.AVP_RESULT_CODE) == 5030
    assert granted(msccs(answer)[10]) is None
    assert app.journal.entries() == []


async def _usage(store: BalanceStore) -> list[dict[str, str]]:
    return [r.fields for r in await store.records(ACME_POOL) if r.fields["kind"] == "usage"]


async def test_the_journal_is_replayed_into_usage_records_exactly_once(
    store: BalanceStore, catalogue: Catalogue, config: ChargingConfig, tmp_path: Path
) -> None:
    live = make_app(store, catalogue, config)
    sid = "pgw.test;failover;1"
    opened = await live.handle_ccr(ccr(sid, IMSI_A, 1, 0, want=2 * MB))
    assert granted(msccs(opened)[10]) == 2 * MB
    before = await bucket(store, ACME_POOL, "acme-pool")

    down = await unreachable(catalogue, config)  # same data_dir: the same journal
    try:
        u1 = await down.handle_ccr(ccr(sid, IMSI_A, 2, 1, used=600_000))
        t2 = await down.handle_ccr(ccr(sid, IMSI_A, 3, 2, used=900_000, want=-1))
    finally:
        await close(down)
    assert (u1.get(A.AVP_RESULT_CODE), t2.get(A.AVP_RESULT_CODE)) == (2001, 2001)
    entries = down.journal.entries()
    assert [e["used"] for e in entries] == [{"10": 600_000}, {"10": 900_000}]
    saved = tmp_path / "journal-copy"
    shutil.copy(down.journal.path, saved)

    report = await live.failover.replay()
    assert report is not None and (report.charged, report.units) == (2, 1_500_000)
    assert live.journal.files() == []  # drained
    usage = await _usage(store)
    ids = [u["id"] for u in usage]
    assert ids.count(f"{sid}:1:10") == 1 and ids.count(f"{sid}:2:10") == 1
    replayed = [u for u in usage if u["id"] in (f"{sid}:1:10", f"{sid}:2:10")]
    assert sum(int(u["units"]) + int(u["overrun"]) for u in replayed) == 1_500_000
    assert all('"failover":true' in u["ctx"] for u in replayed)
    after = await bucket(store, ACME_POOL, "acme-pool")
    assert after.used == before.used + 1_500_000
    await assert_conserved(store, ACME_POOL)

    # replayed a second time (the same file back): nothing moves
    shutil.copy(saved, live.journal.path)
    again = await live.failover.replay()
    assert again is not None and again.charged == 2
    assert await _usage(store) == usage
    assert (await bucket(store, ACME_POOL, "acme-pool")) == after


async def test_a_replay_cut_by_an_outage_and_run_again_counts_once(
    store: BalanceStore, catalogue: Catalogue, config: ChargingConfig
) -> None:
    live = make_app(store, catalogue, config)
    down = await unreachable(catalogue, config)
    try:
        for i in range(4):
            sid = f"pgw.test;cut;{i}"
            await down.handle_ccr(ccr(sid, IMSI_B, 2, 5, used=100_000 * (i + 1)))
    finally:
        await close(down)
    before = await bucket(store, ACME_POOL, "acme-pool")

    real_charge = store.charge
    calls = 0

    async def failing_after_two(payer: str, req: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 2:  # the store goes away in the middle of the replay
            raise RedisConnectionError("connection to Redis lost")
        return await real_charge(payer, req, **kw)

    store.charge = failing_after_two  # type: ignore[method-assign]
    with pytest.raises(RedisConnectionError):
        await live.failover.replay()
    assert len(live.journal.entries()) == 4  # nothing dropped: the file is replayed again
    store.charge = real_charge  # type: ignore[method-assign]
    report = await live.failover.replay()
    assert report is not None and report.units == 1_000_000
    after = await bucket(store, ACME_POOL, "acme-pool")
    assert after.used == before.used + 1_000_000  # the two charged before the cut: once
    ids = [u["id"] for u in await _usage(store)]
    assert len(ids) == len(set(ids)) == 4
    await assert_conserved(store, ACME_POOL)


async def test_a_replayed_wallet_usage_is_debited_its_price(
    store: BalanceStore, catalogue: Catalogue, config: ChargingConfig
) -> None:
    """Usage granted in an outage is billed as online: bob's 331,667 bytes at home fall in
    consumer-data's 50 MB allowance, so the record is rated 0 and the wallet debited 0 (the
    replay once debited the wallet at the reservation rate, more than the record said)."""
    live = make_app(store, catalogue, config)
    sid = "pgw.test;failover;wallet"
    opened = await live.handle_ccr(ccr(sid, BOB_IMSI, 1, 0))
    assert opened.get(A.AVP_RESULT_CODE) == 2001
    before = await bucket(store, BOB_WALLET, "bob-wallet")

    down = await unreachable(catalogue, config)
    try:
        t1 = await down.handle_ccr(ccr(sid, BOB_IMSI, 3, 1, used=331_667, want=-1))
    finally:
        await close(down)
    assert t1.get(A.AVP_RESULT_CODE) == 2001

    report = await live.failover.replay()
    assert report is not None and (report.charged, report.units) == (1, 331_667)
    usage = [r.fields for r in await store.records(BOB_WALLET) if r.fields["kind"] == "usage"]
    replayed = [u for u in usage if u["id"] == f"{sid}:1:10"]
    assert len(replayed) == 1 and '"failover":true' in replayed[0]["ctx"]
    amount = json.loads(replayed[0]["ctx"])["levels"][0]["amount"]
    assert amount == 0  # inside the allowance
    after = await bucket(store, BOB_WALLET, "bob-wallet")
    assert after.used == before.used + amount
    await assert_conserved(store, BOB_WALLET)


async def test_a_replayed_usage_without_event_timestamp_is_rated_when_it_arrived(
    store: BalanceStore, catalogue: Catalogue, config: ChargingConfig
) -> None:
    """consumer-data's version 2 (from 2025-03-10 12:00 Berlin) raised the minimum charge of
    EU data from 1 to 2 ct. Usage reported in an outage on 2025-03-01 by a CCR without
    Event-Timestamp is rated, when the journal is replayed today, at version 1's price, as
    online rating would have priced it when it arrived (it was rated at the replay's time)."""
    live = make_app(store, catalogue, config)
    sid = "pgw.test;failover;unstamped"
    eu = {"imsi": BOB_IMSI, "sgsn_mcc_mnc": "20801"}  # Orange France: zone eu
    opened = await live.handle_ccr(
        wire(build_ccr(sid, request_type=1, number=0, msccs=[(10, MB, 0)], **eu))
    )
    assert opened.get(A.AVP_RESULT_CODE) == 2001
    before = await bucket(store, BOB_WALLET, "bob-wallet")

    down = await unreachable(catalogue, config)
    down.clock = lambda: datetime(2025, 3, 1, 12, tzinfo=UTC).timestamp()
    try:
        t1 = await down.handle_ccr(
            wire(
                build_ccr(
                    sid, request_type=3, number=1, msccs=[(10, -1, 1_000)], stamped=False, **eu
                )
            )
        )
    finally:
        await close(down)
    assert t1.get(A.AVP_RESULT_CODE) == 2001

    report = await live.failover.replay()
    assert report is not None and (report.charged, report.units) == (1, 1_000)
    usage = [r.fields for r in await store.records(BOB_WALLET) if r.fields["kind"] == "usage"]
    (replayed,) = [u for u in usage if u["id"] == f"{sid}:1:10"]
    assert json.loads(replayed["ctx"])["levels"][0]["amount"] == 1  # version 1's minimum
    after = await bucket(store, BOB_WALLET, "bob-wallet")
    assert after.used == before.used + 1
    await assert_conserved(store, BOB_WALLET)


async def test_an_outage_grants_nothing_to_a_test_or_inventory_sim(
    catalogue_dir: Path, config: ChargingConfig, tmp_path: Path
) -> None:
    """docs/sim-states.md: in an outage a test SIM's allowance cannot be reserved and a
    replay would bill its payer, so it gets no grant and nothing is journaled; an inventory
    SIM is refused as always. Both are SIMs of the demo range with states of their own."""
    folder = tmp_path / "catalogue"
    shutil.copytree(catalogue_dir, folder)
    subscribers = folder / "subscribers.yaml"
    text = subscribers.read_text()
    anchor = "    count: 1000\n"
    assert text.count(anchor) == 1
    own = '    states: {"262010000000021": test, "262010000000022": inventory}\n'
    subscribers.write_text(text.replace(anchor, anchor + own))
    states = load_catalogue(folder)
    assert states.sims_by_imsi["262010000000021"].state == "test"
    app = await unreachable(states, config)
    try:
        test_sim = await app.handle_ccr(ccr("fo;test", "262010000000021", 1, 0))
        stock = await app.handle_ccr(ccr("fo;inventory", "262010000000022", 1, 0))
        active = await app.handle_ccr(ccr("fo;active", "262010000000023", 1, 0))
    finally:
        await close(app)
    assert test_sim.get(A.AVP_RESULT_CODE) == 4012
    assert granted(msccs(test_sim)[10]) is None
    assert stock.get(A.AVP_RESULT_CODE) == 4010
    assert granted(msccs(active)[10]) is not None  # the failover grant of an active SIM
    assert len(app.journal.entries()) == 1  # the active SIM's grant only
