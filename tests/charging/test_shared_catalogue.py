"""A catalogue applied on one node is served by a node that never saw its folder: the
folder's files travel through Redis with the ``ocs:catalog`` pointer (single Redis and
cluster)."""

from __future__ import annotations

import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from ocs.balance.keys import CATALOG_FILES
from ocs.charging import apply_catalog, create_charging
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.rating.loader import load_catalogue
from tests.charging.helpers import ACME_IMSI
from tests.charging.test_outcomes import data_ccr


async def test_node_without_the_folder_loads_and_reloads_the_shared_catalogue(
    redis: Redis, redis_url: str, catalogue_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "applied-on-node-a"
    shutil.copytree(catalogue_dir, source)
    await apply_catalog(source, Settings(redis_url=redis_url, data_dir=tmp_path / "node-a"))
    shutil.rmtree(source)  # node B is another machine: no such folder there

    node_b = Settings(redis_url=redis_url, data_dir=tmp_path / "node-b")
    runtime = await create_charging(node_b, registry=CollectorRegistry(), start=False)
    try:
        assert runtime.catalogue.current.tenant.name == "Demo IoT Operator"
        answer = await runtime.application.handle_ccr(data_ccr("shared", ACME_IMSI), None)
        assert answer.get(A.AVP_RESULT_CODE) == 2001
        [fetched] = (tmp_path / "node-b" / "catalogues" / "shared").iterdir()
        # the tenant's state in force (the folder merged with what the API created), as
        # the one JSON document the provisioning layer writes
        assert [p.name for p in fetched.iterdir()] == ["catalogue.yaml"]
        shared = load_catalogue(fetched)
        assert shared.plans.keys() == load_catalogue(catalogue_dir).plans.keys()

        # A new apply elsewhere (renamed operator) reaches node B on its next pass.
        shutil.copytree(catalogue_dir, source)
        tenant = source / "tenant.yaml"
        tenant.write_text(tenant.read_text().replace("Demo IoT Operator", "Renamed Operator"))
        await apply_catalog(source, Settings(redis_url=redis_url, data_dir=tmp_path / "node-a"))
        shutil.rmtree(source)
        assert await runtime.reload_if_applied() is True
        assert runtime.catalogue.current.tenant.name == "Renamed Operator"
        assert await runtime.reload_if_applied() is False  # nothing new
        assert len(list((tmp_path / "node-b" / "catalogues" / "shared").iterdir())) <= 2
    finally:
        await runtime.close()


async def test_half_recorded_apply_is_picked_up_on_the_next_pass(
    redis: Redis, redis_url: str, catalogue_dir: Path, tmp_path: Path
) -> None:
    """The pointer names an apply whose files are not (yet) the ones in Redis: the node keeps
    its catalogue and does not mark the apply as seen."""
    settings = Settings(redis_url=redis_url, data_dir=tmp_path / "node")
    await apply_catalog(catalogue_dir, settings)
    runtime = await create_charging(settings, registry=CollectorRegistry(), start=False)
    try:
        files = await redis.hgetall(CATALOG_FILES)
        await redis.hset(CATALOG_FILES, "\x00applied_at", "older")
        await redis.hset("ocs:catalog", "applied_at", "newer")
        assert await runtime.reload_if_applied() is False
        assert runtime.applied_at != "newer"
        await redis.hset(CATALOG_FILES, mapping={**files, "\x00applied_at": "newer"})
        assert await runtime.reload_if_applied() is True
        assert runtime.applied_at == "newer"
    finally:
        await runtime.close()
