"""``ocs demo`` puts its catalogue in force for the HTTP API too (issue 11): the demo
tenant's ``/v1`` routes answer at once, the Diameter side serves the API's revision, and
what was created over the API survives a restart of the demo."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import httpx
import pytest

from ocs.api.auth import Scope, create_token
from ocs.wiring import charging_attacher
from ocs.balance.keys import CATALOG, MSISDN_INDEX
from ocs.config import Settings
from ocs.process import start
from ocs.redis_client import RedisClient
from tests.balance.fixtures import db_url, flushed_client, redis_base_url
from tests.conftest import free_ports

__all__ = ["redis_base_url"]

DOCS_DB: Final = 7  # 8: workers, 10: api, 11: bench_api, 12: offline, 13: balance, 14: charging
DEMO: Final = Path(__file__).resolve().parents[2] / "policies" / "demo"
NEW_SIM: Final = {
    "imsi": "262019999990001",
    "msisdn": "491709999001",
    "account": "bob",
    "plan": "consumer-data",
    "payer": {"kind": "wallet", "id": "bob-wallet"},
}


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    return db_url(redis_base_url, DOCS_DB)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    async for client in flushed_client(redis_url):
        yield client


def demo_settings(redis_url: str, data_dir: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        data_dir=data_dir,
        host="127.0.0.1",
        port=0,
        http_port=free_ports(1)[0],
        metrics_port=0,
        nchf_port=0,  # the demo's 8090 may be another test's
        origin_host="ocs.test",
        origin_realm="test",
        log_level="WARNING",
        shutdown_timeout=2.0,
    )


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def test_the_demo_tenant_api_works_at_once_and_keeps_api_changes(
    redis: RedisClient, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = demo_settings(redis_url, tmp_path)
    api = f"http://127.0.0.1:{settings.http_port}"
    attacher = charging_attacher(str(DEMO))
    runtime = await start(settings, attacher)
    try:
        out = capsys.readouterr().out
        assert f"ocs: HTTP API on {api}" in out
        assert "a token: ocs token create --tenant demo --scope admin" in out
        assert f"API docs at {api}/docs" in out

        token = await create_token(redis, "demo", Scope.ADMIN)
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=api, headers=auth, timeout=30) as http:
            wallet = await http.get("/v1/wallets/bob-wallet")
            assert wallet.status_code == 200, wallet.text
            assert wallet.json()["available"] == 1000
            versions = (await http.get("/v1/catalogue/versions")).json()
            assert [v["revision"] for v in versions] == [1]
            assert versions[0]["source"] == f"ocs demo {DEMO}"
            assert versions[0]["summary"]["sims"] == 1004

            # The Diameter side serves the revision the API put in force.
            pointer = {_s(k): _s(v) for k, v in (await redis.hgetall(CATALOG)).items()}
            assert pointer["path"] == str(tmp_path / "catalogues" / "demo" / "rev-1")
            assert pointer["tenant"] == "demo"
            assert attacher.runtime is not None
            assert attacher.runtime.applied_at == pointer["applied_at"]  # loaded, not pending

            created = await http.post("/v1/subscriptions", json=NEW_SIM)
            assert created.status_code == 201, created.text
            assert await redis.hget(MSISDN_INDEX, NEW_SIM["msisdn"]) is not None
    finally:
        await runtime.stop()

    # A restart applies the demo folder again: the SIM created over the API is kept.
    runtime = await start(settings, charging_attacher(str(DEMO)))
    try:
        async with httpx.AsyncClient(base_url=api, headers=auth, timeout=30) as http:
            versions = (await http.get("/v1/catalogue/versions")).json()
            assert [v["revision"] for v in versions] == [3, 2, 1]
            kept = await http.get(f"/v1/subscriptions/{NEW_SIM['imsi']}")
            assert kept.status_code == 200, kept.text
            assert kept.json()["msisdn"] == NEW_SIM["msisdn"]
        entry = json.loads(_s(await redis.hget(MSISDN_INDEX, NEW_SIM["msisdn"]) or b"{}"))
        assert entry["imsi"] == NEW_SIM["imsi"]
        pointer = {_s(k): _s(v) for k, v in (await redis.hgetall(CATALOG)).items()}
        assert pointer["path"] == str(tmp_path / "catalogues" / "demo" / "rev-3")
    finally:
        await runtime.stop()


async def test_demo_with_workers_puts_the_catalogue_in_force_for_the_api(
    redis: RedisClient, redis_url: str, tmp_path: Path
) -> None:
    """``ocs demo --workers 2``: the supervisor applies the catalogue the same way, before
    the workers start, and says how to get a token."""
    port, http_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    env.update(OCS_REDIS_URL=redis_url, OCS_DATA_DIR=str(tmp_path), OCS_LOG_LEVEL="WARNING")
    env.update(OCS_SHUTDOWN_TIMEOUT="3", OCS_HTTP_PORT=str(http_port), OCS_METRICS_PORT="0")
    env.update(OCS_NCHF_PORT="0")  # the demo's 8090 may be another test's
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ocs.cli", "demo", "--workers", "2", "--port", str(port)),
        *("--catalog", str(DEMO)),
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    try:
        while not (lines and lines[-1].startswith("ocs: demo tenant")):
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line, f"exited: {''.join(lines)}{(await proc.stderr.read()).decode()}"
            lines.append(line)
        assert any(f"listening on 127.0.0.1:{port} with 2 workers" in line for line in lines)
        assert "a token: ocs token create --tenant demo --scope admin" in lines[-1]
        token = await create_token(redis, "demo", Scope.READ)
        async with httpx.AsyncClient(timeout=30) as http:
            wallet = await http.get(
                f"http://127.0.0.1:{http_port}/v1/wallets/bob-wallet",
                headers={"Authorization": f"Bearer {token}"},
            )
        assert wallet.status_code == 200, wallet.text
        assert wallet.json()["available"] == 1000
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
