from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final, cast

import pytest
from prometheus_client import CollectorRegistry

from ocs.balance import BalanceStore
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.config import Settings
from ocs.diameter.answers import Identity
from ocs.diameter.codec import Message
from ocs.diameter.node import Node
from ocs.diameter.peer import LocalConfig
from ocs.diameter.transport import DiameterProtocol, connect
from ocs.observability.metrics import ChargingMetrics
from ocs.process import Runtime, start
from ocs.provisioning.payers import provision_catalogue
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import CatalogueHolder, load_catalogue
from ocs.redis_client import RedisClient
from ocs.wiring import charging_attacher
from tests.balance.fixtures import flushed_client, redis_base_url
from tests.conftest import backend_url

__all__ = ["redis_base_url"]

CHARGING_DB = 14
TRANSPORTS: Final = ["direct", "socket"]
CLIENT: Final = Identity("pgw.test", "test")
ANSWER_TIMEOUT: Final = 10.0  # seconds: a hang fails the test instead of blocking it
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
async def store(
    redis: RedisClient, catalogue: Catalogue, catalogue_dir: Path
) -> AsyncIterator[BalanceStore]:
    store = BalanceStore(redis)
    await provision_catalogue(store, catalogue, str(catalogue_dir))
    yield store
    await store.batch.close()  # its own connection and reader task, like the runtime's close


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


def settings_for(redis_url: str, config: ChargingConfig, **overrides: Any) -> Settings:
    """The `ocs serve` settings whose charging configuration is ``config``."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "origin_host": "ocs.test",
        "origin_realm": "test",
        "redis_url": redis_url,
        "data_dir": config.data_dir,
        "validity_time": config.validity_time,
        "reclaim_grace": config.reclaim_grace,
        "charging_timeout": config.request_timeout,
        "failure_handling": config.failure_handling,
        "failure_grant_bytes": config.failure_grant_bytes,
        "fui_action": config.fui_action.name.lower(),
        "fui_redirect_url": config.fui_redirect_url,
        "free_rating_groups": sorted(config.free_rating_groups),
        "shutdown_timeout": 2.0,
        "peers": [{"origin_host": CLIENT.origin_host, "addresses": ["127.0.0.1"]}],
        "webhooks": False,  # the dispatcher has tests of its own (tests/events)
    }
    return Settings(**(values | overrides))


class ServedCharging:
    """A real ``ocs.process`` with the charging attacher, on a free port, and a Diameter client
    (``ocs.diameter.transport.connect``, CER/CEA done) connected to it over TCP.

    ``handle_ccr`` sends the request on the socket and returns the CCA the client decoded;
    every other attribute is the server's own :class:`ChargingApplication`, so the tests
    written against the application run unchanged over the wire."""

    def __init__(
        self, runtime: Runtime, client: DiameterProtocol, application: ChargingApplication
    ) -> None:
        self.runtime = runtime
        self.client = client
        self.application = application

    async def handle_ccr(self, request: Message, peer: object = None) -> Message:
        return await self.client.send_request(request, timeout=ANSWER_TIMEOUT)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.application, name)

    async def close(self) -> None:
        try:
            if self.client.peer.is_open:
                await self.client.disconnect(2.0)
        finally:
            await self.runtime.stop()


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[ServedCharging]:
    """``ocs.process.start(settings, charging_attacher(None, with_http=False))`` and a client."""
    attacher = charging_attacher(None, with_http=False)
    runtime = await start(settings, attacher)
    assert attacher.runtime is not None
    try:
        client = await connect(
            Node(CLIENT), LocalConfig(identity=CLIENT), "127.0.0.1", runtime.server.port
        )
    except BaseException:
        await runtime.stop()
        raise
    gateway = ServedCharging(runtime, client, attacher.runtime.application)
    try:
        yield gateway
    finally:
        await gateway.close()


@pytest.fixture(params=TRANSPORTS)
async def app(
    request: pytest.FixtureRequest,
    store: BalanceStore,
    catalogue: Catalogue,
    config: ChargingConfig,
    redis_url: str,
) -> AsyncIterator[ChargingApplication]:
    """The application called directly (``direct``), or the same application inside a real
    server reached through a Diameter client over TCP (``socket``)."""
    if request.param == "direct":
        yield make_app(store, catalogue, config)
        return
    async with served(settings_for(redis_url, config)) as gateway:
        yield cast(ChargingApplication, gateway)
