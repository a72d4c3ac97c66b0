"""CCR-I/U/T with several MSCCs against real Redis: grants, commits, retransmissions,
restarts, exhaustion and reclaim."""

from __future__ import annotations

from ocs.balance import BalanceStore
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.diameter import avp_codes as A
from ocs.diameter.constants import FinalUnitAction
from ocs.rating.catalogue import Catalogue
from tests.balance.helpers import assert_conserved
from tests.charging.ccr import build_ccr
from tests.charging.conftest import make_app
from tests.charging.helpers import (
    ACME_IMSI,
    ACME_MSISDN,
    ACME_POOL,
    bucket,
    granted,
    msccs,
    wire,
)

MB = 1_000_000


def ccr(sid: str, rtype: int, n: int, specs: list[tuple[int, int | None, int]], **kw: object):  # type: ignore[no-untyped-def]
    return wire(
        build_ccr(
            sid,
            request_type=rtype,
            number=n,
            imsi=kw.pop("imsi", ACME_IMSI),  # type: ignore[arg-type]
            msisdn=kw.pop("msisdn", ACME_MSISDN),  # type: ignore[arg-type]
            msccs=specs,
            sgsn_mcc_mnc=kw.pop("plmn", "26201"),  # type: ignore[arg-type]
            rat_type=1004,
            **kw,  # type: ignore[arg-type]
        )
    )


async def test_session_with_two_rating_groups_grants_commits_and_releases(
    app: ChargingApplication, store: BalanceStore
) -> None:
    start = await bucket(store, ACME_POOL, "acme-pool")
    answer = await app.handle_ccr(ccr("s1", 1, 0, [(10, 2 * MB, 0), (11, None, 0)]), None)
    assert answer.get(A.AVP_RESULT_CODE) == 2001
    assert answer.get(A.AVP_CC_REQUEST_TYPE) == 1
    assert answer.get(A.AVP_AUTH_APPLICATION_ID) == 4
    got = msccs(answer)
    assert set(got) == {10, 11}
    assert granted(got[10]) == 2 * MB
    assert granted(got[11]) == app.config.default_quota[next(iter(app.config.default_quota))]
    assert got[10].get(A.AVP_RESULT_CODE) == 2001
    assert got[10].get(A.AVP_VALIDITY_TIME) == app.config.validity_time
    assert got[10].get(A.AVP_VOLUME_QUOTA_THRESHOLD) == 2 * MB * 20 // 100
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert pool.reserved == 2 * MB + 10 * MB

    answer = await app.handle_ccr(ccr("s1", 2, 1, [(10, 2 * MB, 1_500_000)]), None)
    assert granted(msccs(answer)[10]) == 2 * MB
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert (pool.used, pool.reserved) == (1_500_000, 12 * MB)

    answer = await app.handle_ccr(ccr("s1", 3, 2, [(10, -1, 700_000)]), None)
    assert answer.get(A.AVP_RESULT_CODE) == 2001
    assert granted(msccs(answer)[10]) is None
    pool = await bucket(store, ACME_POOL, "acme-pool")
    # rating group 11 was not reported in the CCR-T: its reservation is released
    assert (pool.used, pool.reserved) == (2_200_000, 0)
    assert pool.available == start.available - 2_200_000
    usage = [r for r in await store.records(ACME_POOL) if r.fields["kind"] == "usage"]
    assert [int(r.fields["units"]) for r in usage] == [1_500_000, 700_000]
    assert '"twin":"data"' in usage[0].fields["ctx"]
    await assert_conserved(store, ACME_POOL)


async def test_retransmitted_ccr_gets_the_same_answer_and_is_charged_once(
    app: ChargingApplication, store: BalanceStore
) -> None:
    await app.handle_ccr(ccr("s2", 1, 0, [(10, MB, 0)]), None)
    first = await app.handle_ccr(ccr("s2", 2, 1, [(10, MB, 600_000)]), None)
    again = ccr("s2", 2, 1, [(10, MB, 600_000)], retransmit=True)
    replay = await app.handle_ccr(again, None)
    assert replay.hbh_id == again.hbh_id
    assert [a.encode() for a in replay.avps] == [a.encode() for a in first.avps]
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert pool.used == 600_000
    await assert_conserved(store, ACME_POOL)


async def test_a_restarted_server_continues_the_session(
    app: ChargingApplication, store: BalanceStore, catalogue: Catalogue, config: ChargingConfig
) -> None:
    await app.handle_ccr(ccr("s3", 1, 0, [(10, MB, 0)]), None)
    restarted = make_app(BalanceStore(store.redis), catalogue, config)
    answer = await restarted.handle_ccr(ccr("s3", 3, 1, [(10, -1, 400_000)]), None)
    assert answer.get(A.AVP_RESULT_CODE) == 2001
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert (pool.used, pool.reserved) == (400_000, 0)
    usage = [r for r in await store.records(ACME_POOL) if r.fields["kind"] == "usage"]
    assert len(usage) == 1
    await restarted.store.batch.close()


async def _shrink_pool(store: BalanceStore, size: int) -> None:
    await store.adjust(ACME_POOL, "shrink", [{"op": "resize", "id": "acme-pool", "size": size}], 0)


async def test_exhaustion_gives_final_units_then_credit_limit_reached(
    app: ChargingApplication, store: BalanceStore
) -> None:
    await _shrink_pool(store, 3 * MB)
    answer = await app.handle_ccr(ccr("s4", 1, 0, [(10, 2 * MB, 0)]), None)
    assert granted(msccs(answer)[10]) == 2 * MB
    assert msccs(answer)[10].find(A.AVP_FINAL_UNIT_INDICATION) is None
    answer = await app.handle_ccr(ccr("s4", 2, 1, [(10, 2 * MB, 2 * MB)]), None)
    last = msccs(answer)[10]
    assert granted(last) == MB
    fui = last.find(A.AVP_FINAL_UNIT_INDICATION)
    assert fui is not None and fui.get(A.AVP_FINAL_UNIT_ACTION) == FinalUnitAction.TERMINATE
    answer = await app.handle_ccr(ccr("s4", 2, 2, [(10, 2 * MB, MB)]), None)
    assert answer.get(A.AVP_RESULT_CODE) == 4012
    assert msccs(answer)[10].get(A.AVP_RESULT_CODE) == 4012
    assert (await bucket(store, ACME_POOL, "acme-pool")).available == 0
    await assert_conserved(store, ACME_POOL)


async def test_exhausted_pool_redirects_when_configured(
    store: BalanceStore, catalogue: Catalogue, config: ChargingConfig
) -> None:
    from dataclasses import replace

    app = make_app(store, catalogue, replace(config, fui_action=FinalUnitAction.REDIRECT))
    await _shrink_pool(store, 0)
    answer = await app.handle_ccr(ccr("s5", 1, 0, [(10, MB, 0)]), None)
    mscc = msccs(answer)[10]
    assert mscc.get(A.AVP_RESULT_CODE) == 4012
    fui = mscc.find(A.AVP_FINAL_UNIT_INDICATION)
    assert fui is not None and fui.get(A.AVP_FINAL_UNIT_ACTION) == FinalUnitAction.REDIRECT
    server = fui.find(A.AVP_REDIRECT_SERVER)
    assert server is not None
    assert server.get(A.AVP_REDIRECT_SERVER_ADDRESS) == config.fui_redirect_url


async def test_concurrent_sessions_share_a_nearly_empty_pool(
    app: ChargingApplication, store: BalanceStore
) -> None:
    import asyncio

    await _shrink_pool(store, 20 * MB)
    answers = await asyncio.gather(
        *(
            app.handle_ccr(
                ccr(f"c{i}", 1, 0, [(10, 5 * MB, 0)], imsi=f"26201000000{i:04d}", msisdn=None), None
            )
            for i in range(40)
        )
    )
    grants = [granted(msccs(a)[10]) or 0 for a in answers]
    assert sum(grants) <= 20 * MB
    assert sum(1 for g in grants if g > 0) > 4  # more than 20 MB / 5 MB sessions served
    await assert_conserved(store, ACME_POOL)


async def test_abandoned_session_is_reclaimed_after_validity_and_grace(
    app: ChargingApplication, store: BalanceStore
) -> None:
    await app.handle_ccr(ccr("s6", 1, 0, [(10, MB, 0)]), None)
    assert (await bucket(store, ACME_POOL, "acme-pool")).reserved == MB
    cfg = app.config
    before_deadline = int((app.clock() + cfg.validity_time) * 1000)
    assert await store.reclaim_all(before_deadline) == 0
    after = int((app.clock() + cfg.validity_time + cfg.reclaim_grace + 5) * 1000)
    assert await store.reclaim_all(after) == 1
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert (pool.reserved, pool.used) == (0, 0)
    await assert_conserved(store, ACME_POOL)
