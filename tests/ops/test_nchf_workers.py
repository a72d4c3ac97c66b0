"""`ocs demo --workers 2` serves Nchf on one port from both workers (SO_REUSEPORT): sessions
whose requests arrive on new connections (so on either worker) are continued from Redis,
and the pool moves by exactly what they reported."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from ocs.balance import BalanceStore
from ocs.redis_client import RedisClient
from tests.balance.fixtures import db_url, flushed_client, redis_base_url
from tests.charging.nchf_client import COLLECTION, charging_request, usage
from tests.conftest import free_ports

__all__ = ["redis_base_url"]

DB = 7
REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on \S+:(\d+) with (\d+) workers; .*Nchf on port (\d+)")
POOL = "demo:prepaid_pool:acme-pool"
JSON = {"content-type": "application/json"}


async def _pool(store: BalanceStore) -> tuple[int, int]:
    (bucket,) = [b for b in await store.buckets(POOL) if b.id == "acme-pool"]
    return bucket.used, bucket.reserved


async def test_two_workers_serve_nchf_sessions_across_connections(
    tmp_path: Path, redis_base_url: str
) -> None:
    url = db_url(redis_base_url, DB)
    async for redis in flushed_client(url):
        await _run(tmp_path, url, redis)


async def _run(tmp_path: Path, url: str, redis: RedisClient) -> None:
    port, http_port, metrics_port, nchf_port = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    env.update(OCS_REDIS_URL=url, OCS_DATA_DIR=str(tmp_path / "data"), OCS_LOG_LEVEL="WARNING")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ocs.cli", "demo", "--workers", "2", "--port", str(port)),
        *("--http-port", str(http_port), "--nchf-port", str(nchf_port)),
        cwd=REPO,
        env=env | {"OCS_METRICS_PORT": str(metrics_port), "OCS_SHUTDOWN_TIMEOUT": "3"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(120):
            while not any(LISTENING.search(line) for line in seen):
                raw = await proc.stdout.readline()
                assert raw, "".join(seen)
                seen.append(raw.decode())
        store = BalanceStore(redis)
        before = await _pool(store)
        base = f"http://127.0.0.1:{nchf_port}{COLLECTION}"

        async def session(i: int) -> int:
            imsi = f"26201000000{i + 500:04d}"

            def client() -> httpx.AsyncClient:  # a new connection: any worker takes it
                return httpx.AsyncClient(http1=False, http2=True, timeout=10)

            async with client() as c:
                doc = charging_request(0, imsi=imsi, units=[usage(10, want=1_000_000)])
                created = await c.post(base, content=json.dumps(doc), headers=JSON)
                assert created.status_code == 201, created.text
            location = created.headers["location"]
            for n in (1, 2):
                async with client() as c:
                    doc = charging_request(n, imsi=imsi, units=[usage(10, used=1000 * n)])
                    got = await c.post(f"{location}/update", content=json.dumps(doc), headers=JSON)
                    assert got.status_code == 200, got.text
            async with client() as c:
                doc = charging_request(3, imsi=imsi, units=[usage(10, used=5, want=None)])
                done = await c.post(f"{location}/release", content=json.dumps(doc), headers=JSON)
                assert done.status_code == 204, done.text
            return 3005

        reported = sum(await asyncio.gather(*(session(i) for i in range(8))))
        used, reserved = await _pool(store)
        assert (used - before[0], reserved) == (reported, 0)
        await store.batch.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 40)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, "".join(seen)
