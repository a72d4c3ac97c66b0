from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ocs.balance import BalanceStore
from ocs.charging.application import ChargingApplication
from ocs.charging.catalog import provision_catalogue
from ocs.charging.config import ChargingConfig
from ocs.diameter.answers import Identity
from ocs.observability.metrics import ChargingMetrics
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import CatalogueHolder, load_catalogue
from ocs.store import RedisClient
from tests.balance.fixtures import flushed_client, redis_base_url
from tests.conftest import backend_url

__all__ = ["redis_base_url"]

CHARGING_DB = 14
DEMO = Path(__file__).resolve().parents[2] / "policies" / "demo"
EXTRA = """
sims:
  - imsi: "262010000999001"
    msisdn: "491700999001"
    account: acme-iot
    twins:
      - id: data
        status: suspended
        payer: {kind: prepaid_pool, id: acme-pool}
        plans: [{plan: iot-pool, from: "2024-01-01T00:00:00+01:00"}]
"""


@pytest.fixture(scope="session")
def catalogue_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo catalogue plus a suspended SIM."""
    folder = tmp_path_factory.mktemp("catalogue")
    for item in DEMO.glob("*.yaml"):
        (folder / item.name).write_text(item.read_text())
    (folder / "zz-test-extra.yaml").write_text(EXTRA)
    return folder


@pytest.fixture(scope="session")
def catalogue(catalogue_dir: Path) -> Catalogue:
    return load_catalogue(catalogue_dir)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_backend: str) -> str:
    """This suite's DB on the single server, or the session's Redis Cluster."""
    return backend_url(request, redis_backend, CHARGING_DB)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    async for client in flushed_client(redis_url):
        yield client


@pytest.fixture
async def store(redis: RedisClient, catalogue: Catalogue, catalogue_dir: Path) -> BalanceStore:
    store = BalanceStore(redis)
    await provision_catalogue(store, catalogue, str(catalogue_dir))
    return store


@pytest.fixture
def config(tmp_path: Path) -> ChargingConfig:
    return ChargingConfig(data_dir=tmp_path, free_rating_groups=frozenset({99}))


def make_app(
    store: BalanceStore, catalogue: Catalogue, config: ChargingConfig
) -> ChargingApplication:
    return ChargingApplication(
        store,
        CatalogueHolder(catalogue),
        config,
        Identity("ocs.test", "test"),
        ChargingMetrics(CollectorRegistry()),
    )


@pytest.fixture
def app(store: BalanceStore, catalogue: Catalogue, config: ChargingConfig) -> ChargingApplication:
    return make_app(store, catalogue, config)
