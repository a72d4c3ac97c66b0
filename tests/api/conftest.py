"""The API over real HTTP (uvicorn on a free port, httpx) on a real Redis (DB 10, flushed),
and, for the network tests, the charging application behind a real Diameter server with a
gateway peer connected to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ocs.api import start_api
from ocs.api.auth import Scope, create_token
from ocs.charging import create_charging
from ocs.config import Settings
from ocs.diameter.answers import Identity, make_answer
from ocs.diameter.codec import Message
from ocs.diameter.constants import Application, Command, ResultCode
from ocs.diameter.node import Node, PeerInfo
from ocs.diameter.peer import LocalConfig
from ocs.diameter.transport import DiameterProtocol, DiameterServer, connect
from ocs.network import attach_network
from ocs.process import local_config
from ocs.rating.loader import _StrictLoader
from ocs.redis_client import RedisClient
from tests.balance.fixtures import db_url, flushed_client, redis_base_url
from tests.offline.conftest import pg_admin_url, pg_url

__all__ = ["pg_admin_url", "pg_url", "redis_base_url"]

API_DB = 10  # 12: offline, 13: balance, 14: charging, 11: tools/bench_api.py
DEMO = Path(__file__).resolve().parents[2] / "policies" / "demo"
TENANT = "demo"


def demo_documents() -> dict[str, Any]:
    return {
        p.name: yaml.load(p.read_text(), Loader=_StrictLoader) for p in sorted(DEMO.glob("*.yaml"))
    }


def tenant_documents(tenant: str) -> dict[str, Any]:
    """The demo catalogue as another tenant's, with SIMs of its own (IMSIs 26202...,
    MSISDNs 4915...): an identity belongs to one tenant."""
    docs = demo_documents()
    docs["tenant.yaml"]["tenant"]["id"] = tenant
    for doc in docs.values():
        for section in ("sims", "sim_ranges"):
            for item in (doc or {}).get(section) or []:
                for key in ("imsi", "imsi_first"):
                    if key in item:
                        item[key] = "26202" + item[key][5:]
                for key in ("msisdn", "msisdn_first"):
                    if key in item:
                        item[key] = "4915" + item[key][4:]
    return docs


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    return db_url(redis_base_url, API_DB)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    async for client in flushed_client(redis_url):
        yield client


@pytest.fixture
def settings(redis_url: str, pg_url: str, tmp_path: Path) -> Settings:
    """The drained usage records (usage reads, wallet transactions) are in ``pg_url``, one
    database for the session: a test that drains uses a tenant of its own."""
    return Settings(
        redis_url=redis_url,
        database_url=pg_url,
        data_dir=tmp_path,
        host="127.0.0.1",
        port=0,
        http_port=0,
        origin_host="ocs.test",
        origin_realm="test",
        log_level="WARNING",
        peers=[{"origin_host": "pgw.test", "addresses": ["127.0.0.1"]}],
    )


@dataclass
class Api:
    client: httpx.AsyncClient
    tokens: dict[str, str]
    redis: RedisClient

    def auth(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def request(
        self, method: str, path: str, who: str = "admin", **kw: Any
    ) -> httpx.Response:
        headers = {**self.auth(who), **kw.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kw)


@pytest.fixture
async def api(settings: Settings, redis: RedisClient) -> AsyncIterator[Api]:
    server = await start_api(settings, port=0)
    tokens = {
        "admin": await create_token(redis, TENANT, Scope.ADMIN),
        "topup": await create_token(redis, TENANT, Scope.TOP_UP),
        "read": await create_token(redis, TENANT, Scope.READ),
        "other": await create_token(redis, "other", Scope.ADMIN),
    }
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            yield Api(client, tokens, redis)
    finally:
        await server.stop()


@pytest.fixture
async def demo(api: Api) -> Api:
    """The API with the demo catalogue applied to tenant demo."""
    r = await api.request("POST", "/v1/catalogue", json={"documents": demo_documents()})
    assert r.status_code == 200, r.text
    return api


@dataclass
class Gateway:
    """A PGW-like peer: it answers RAR/ASR with 2001 and queues them for the test."""

    proto: DiameterProtocol
    received: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    next_number: dict[str, int] = field(default_factory=dict)

    async def send(self, request: Message) -> Message:
        return await self.proto.send_request(request)


@pytest.fixture
async def gateway(settings: Settings, demo: Api) -> AsyncIterator[Gateway]:
    """`ocs serve` as the lead wires it: charging + network attachment on one node, and a
    gateway peer connected over TCP."""
    runtime = await create_charging(settings)
    node = Node(Identity(settings.origin_host, settings.origin_realm))
    net = await attach_network(settings, node, refresh=runtime.reload_if_applied)
    node.register(
        Application.CREDIT_CONTROL,
        Command.CREDIT_CONTROL,
        net.track(runtime.application.handle_ccr, runtime.tenant_of),
    )
    server = DiameterServer(node, local_config(settings), host="127.0.0.1", port=0)
    await server.start()
    gw_identity = Identity("pgw.test", "test")
    gw_node = Node(gw_identity)
    queue: asyncio.Queue[Message] = asyncio.Queue()

    async def answer(request: Message, peer: PeerInfo) -> Message:
        queue.put_nowait(request)
        return make_answer(request, gw_identity, ResultCode.DIAMETER_SUCCESS)

    gw_node.register(Application.CREDIT_CONTROL, Command.RE_AUTH, answer)
    gw_node.register(Application.CREDIT_CONTROL, Command.ABORT_SESSION, answer)
    proto = await connect(gw_node, LocalConfig(identity=gw_identity), "127.0.0.1", server.port)
    try:
        yield Gateway(proto, queue)
    finally:
        await server.stop(2.0)
        await net.close()
        await runtime.close()
