"""A single `ocs serve` with Nchf and ``nrf_url`` registers its Nchf port from its own
process and deregisters when it stops (with ``--workers N`` the supervisor does:
tests/ops/test_nrf_node.py)."""

from __future__ import annotations

from ocs.balance import BalanceStore
from ocs.charging.config import ChargingConfig
from tests.charging.conftest import settings_for
from tests.charging.nchf_client import nchf_served
from tests.ops.test_nrf_node import service_port
from tests.sbi.h2server import H2Server
from tests.sbi.test_nrf import FakeNrf, methods


async def test_a_single_process_registers_its_nchf_port(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    nrf = FakeNrf(heartbeat=60)
    server = await H2Server(nrf).start()
    settings = settings_for(redis_url, config).model_copy(
        update={"nrf_url": server.url, "sbi_address": "127.0.0.1"}
    )
    try:
        async with nchf_served(settings) as served:
            await server.wait_for(lambda rs: "PUT" in methods(rs))
            assert service_port(server.requests[0].json()) == served.port
        assert methods(server.requests) == ["PUT", "DELETE"]
    finally:
        await server.stop()
