"""Every tenant in force is charged by one node, also by a node that never saw the folders:
each tenant's state travels through Redis (``ocs:catalog:tenants`` names the stamp of each
tenant's state), and a node loads the tenants whose stamp changed, alone (single Redis and
cluster)."""

from __future__ import annotations

import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from ocs.balance.keys import PayerKeys
from ocs.charging import apply_catalog, create_charging, show_balance
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from tests.charging.helpers import ACME_IMSI
from tests.charging.test_outcomes import data_ccr

GLOBEX = Path(__file__).resolve().parents[2] / "policies" / "globex"
GLOBEX_IMSI = "262020000000001"


async def test_one_node_charges_every_tenant_and_reloads_one_alone(
    redis: Redis, redis_url: str, catalogue_dir: Path, tmp_path: Path
) -> None:
    node_a = Settings(redis_url=redis_url, data_dir=tmp_path / "node-a")
    source = tmp_path / "applied-on-node-a"
    shutil.copytree(catalogue_dir, source)
    await apply_catalog(source, node_a)
    await apply_catalog(GLOBEX, node_a)
    shutil.rmtree(source)  # node B is another machine: no such folder there

    node_b = Settings(redis_url=redis_url, data_dir=tmp_path / "node-b")
    runtime = await create_charging(node_b, registry=CollectorRegistry(), start=False)
    try:
        assert set(runtime.catalogue.tenants()) == {"demo", "globex"}
        for sid, imsi in (("demo-1", ACME_IMSI), ("globex-1", GLOBEX_IMSI)):
            answer = await runtime.application.handle_ccr(data_ccr(sid, imsi), None)
            assert answer.get(A.AVP_RESULT_CODE) == 2001, imsi
        # each charged to its own tenant's payer
        demo_pool = PayerKeys("demo:prepaid_pool:acme-pool").reservations
        globex_pool = PayerKeys("globex:prepaid_pool:globex-pool").reservations
        assert await redis.hkeys(demo_pool) == [b"demo-1|10"]
        assert await redis.hkeys(globex_pool) == [b"globex-1|10"]
        assert runtime.tenant_of(GLOBEX_IMSI, None) == "globex"
        shown = await show_balance("491500000001", node_a)  # ocs balance show, any tenant
        assert [p["payer"] for p in shown["payers"]] == ["globex:prepaid_pool:globex-pool"]
        assert [b["reserved"] for b in shown["payers"][0]["buckets"]] == [1_000_000]
        assert runtime.tenant_of("001019999999999", None) is None

        # A new apply of demo elsewhere (renamed operator) reaches node B on its next pass;
        # globex's catalogue is not touched (the same object: not even recompiled).
        globex = runtime.catalogue.tenants()["globex"]
        shutil.copytree(catalogue_dir, source)
        tenant = source / "tenant.yaml"
        tenant.write_text(tenant.read_text().replace("Demo IoT Operator", "Renamed Operator"))
        await apply_catalog(source, node_a)
        assert await runtime.reload_if_applied() is True
        assert runtime.catalogue.tenants()["demo"].tenant.name == "Renamed Operator"
        assert runtime.catalogue.tenants()["globex"] is globex
        assert await runtime.reload_if_applied() is False  # nothing new
        answer = await runtime.application.handle_ccr(data_ccr("globex-2", GLOBEX_IMSI), None)
        assert answer.get(A.AVP_RESULT_CODE) == 2001
    finally:
        await runtime.close()
