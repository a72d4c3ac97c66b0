"""`ocs audit`: zero discrepancies after real charging (sessions, a wallet, reservations
still held) and a drain to PostgreSQL; planted discrepancies are each reported (payer,
field, expected, found) and make the command exit 1."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from ocs.audit import run_audit
from ocs.audit.cli import audit_cli
from ocs.balance import BalanceStore
from ocs.balance.keys import PayerKeys
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.observability.metrics import ChargingMetrics
from ocs.offline.db import Database
from ocs.offline.drain import Drainer
from ocs.provisioning.payers import provision_catalogue
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import CatalogueHolder
from tests.charging.ccr import build_ccr
from tests.charging.helpers import wire
from tests.offline.conftest import MASTER, synced

MB = 1_000_000
ACME = "262010000000001"
BOB = "262019999999999"


async def _charge(redis: Redis, catalogue: Catalogue, tmp_path: Path) -> BalanceStore:
    """Real charging on the tenant: sessions on the pool, a wallet session, some closed,
    some still holding their reservation."""
    store = BalanceStore(redis)
    await provision_catalogue(store, catalogue, str(tmp_path))
    app = ChargingApplication(
        store,
        CatalogueHolder(catalogue),
        ChargingConfig(data_dir=tmp_path),
        Identity("ocs.test", "test"),
        ChargingMetrics(CollectorRegistry()),
    )
    for i, imsi in enumerate((ACME, "262010000000002", BOB)):
        sid = f"pgw.test;audit;{i}"
        codes = []
        for n, (rtype, want, used) in enumerate([(1, MB, 0), (2, MB, 700_000), (2, MB, 300_000)]):
            answer = await app.handle_ccr(
                wire(
                    build_ccr(
                        sid, request_type=rtype, number=n, imsi=imsi, msccs=[(10, want, used)]
                    )
                )
            )
            codes.append(answer.get(A.AVP_RESULT_CODE))
        assert codes[0] == 2001, codes
        if i != 1:  # session 1 keeps its reservation (live, not stale)
            await app.handle_ccr(
                wire(build_ccr(sid, request_type=3, number=3, imsi=imsi, msccs=[(10, -1, 5_000)]))
            )
    await store.batch.close()
    return store


def _tag(catalogue: Catalogue, kind: str, pid: str) -> str:
    return f"{catalogue.tenant.id}:{kind}:{pid}"


async def test_zero_discrepancies_after_real_charging_and_a_drain(
    redis: Redis, db: Database, catalogue: Catalogue, tmp_path: Path
) -> None:
    await synced(db, catalogue)
    await _charge(redis, catalogue, tmp_path)
    before = await run_audit(redis, db, tenant=catalogue.tenant.id)  # nothing drained yet
    assert before.discrepancies == [] and before.records_checked
    stats = await Drainer(redis, db, MASTER).run()
    assert stats.inserted > 0
    report = await run_audit(redis, db, tenant=catalogue.tenant.id)
    assert report.payers > 3
    assert report.discrepancies == []
    # drained records removed from the stream (as a trimming drain does): still consistent
    pool = _tag(catalogue, "prepaid_pool", "acme-pool")
    await redis.xtrim(PayerKeys(pool).stream, maxlen=0)
    assert await redis.xlen(PayerKeys(pool).stream) == 0
    assert (await run_audit(redis, db, tenant=catalogue.tenant.id)).discrepancies == []


async def test_planted_discrepancies_are_reported_and_exit_1(
    redis: Redis,
    db: Database,
    catalogue: Catalogue,
    tmp_path: Path,
    settings: Settings,
    redis_url_offline: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tenant = catalogue.tenant.id
    await synced(db, catalogue)
    await _charge(redis, catalogue, tmp_path)
    await Drainer(redis, db, MASTER).run()
    pool = _tag(catalogue, "prepaid_pool", "acme-pool")
    wallet = _tag(catalogue, "wallet", "bob-wallet")
    k = PayerKeys(pool)
    # 1. used moved without a record (what "HINCRBY ... -0" half-applied did)
    await redis.hincrby(k.balances, "acme-pool:u", 1234)  # type: ignore[misc]
    # 2. a reservation entry whose units are not in `reserved`, long past its deadline
    member = "pgw.test;ghost;1|10"
    await redis.hset(  # type: ignore[misc]
        k.reservations,
        member,
        '{"a":[["acme-pool","500","500"]],"n":"0","d":"0","u":"bytes","t":"0"}',
    )
    stale = int(time.time() * 1000) - 3_600_000
    await redis.zadd(k.reservation_index, {member: stale})
    # 3. a wallet debited without a record
    await redis.hincrby(PayerKeys(wallet).balances, "bob-wallet:a", -7)  # type: ignore[misc]

    report = await run_audit(redis, db, tenant=tenant)
    found = {(d.payer, d.field): (d.expected, d.found) for d in report.discrepancies}
    pool_state = {
        k2.decode(): int(v)
        for k2, v in (await redis.hgetall(k.balances)).items()  # type: ignore[misc]
    }
    a, r, u, i = (pool_state[f"acme-pool:{x}"] for x in "arui")
    assert found[(pool, "acme-pool: available+reserved+used")] == (i, a + r + u)
    assert found[(pool, "acme-pool: used vs usage records")] == (u - 1234, u)
    assert found[(pool, "acme-pool: reserved")] == (r + 500, r)
    assert (pool, f"reservation {member}") in found
    wallet_state = {
        k2.decode(): int(v)
        for k2, v in (await redis.hgetall(PayerKeys(wallet).balances)).items()  # type: ignore[misc]
    }
    assert found[(wallet, "bob-wallet: available+reserved+used")] == (
        wallet_state["bob-wallet:i"],
        wallet_state["bob-wallet:i"] - 7,
    )
    assert len(report.discrepancies) == 5

    code = await audit_cli(
        settings.model_copy(update={"redis_url": redis_url_offline}), tenant=tenant
    )
    out = capsys.readouterr().out
    assert code == 1
    assert f"{pool}  acme-pool: used vs usage records  expected {u - 1234}  found {u}" in out
    assert "5 discrepancies" in out
