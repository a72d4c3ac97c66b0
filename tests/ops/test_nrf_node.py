"""NRF registration once per node: `ocs demo --workers 2 --nrf-url` registers one CHF (one
PUT, not one per worker) with the Nchf port, keeps it alive, and deregisters at SIGTERM (a
single `ocs serve` registers from its own process: tests/charging/test_nchf_nrf.py). The NRF
is a real HTTP/2 server (tests/sbi/h2server.py); the profile is checked against the Rel-17
NFProfile schema."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.balance.fixtures import db_url, flushed_client, redis_base_url
from tests.conftest import free_ports
from tests.sbi.h2server import H2Server
from tests.sbi.oracle import specs_or_skip
from tests.sbi.test_nrf import NFM, PROFILE, FakeNrf, methods

__all__ = ["redis_base_url"]

DB = 4  # 6: events, 7: docs and nchf workers, 8: workers, 9: cli, 10: api
REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on \S+:(\d+) with (\d+) workers; .*Nchf on port (\d+)")


def service_port(profile: dict[str, object]) -> int:
    (service,) = profile["nfServices"]  # type: ignore[misc]
    (endpoint,) = service["ipEndPoints"]
    return int(endpoint["port"])


async def test_two_workers_register_one_chf_and_deregister_at_sigterm(
    tmp_path: Path, redis_base_url: str
) -> None:
    specs = specs_or_skip()
    nrf = FakeNrf(heartbeat=1, forget_on_patch=0)
    server = await H2Server(nrf).start()
    url = db_url(redis_base_url, DB)
    port, nchf_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    env.update(OCS_REDIS_URL=url, OCS_DATA_DIR=str(tmp_path / "data"), OCS_LOG_LEVEL="WARNING")
    env.update(OCS_SHUTDOWN_TIMEOUT="3", OCS_SBI_ADDRESS="127.0.0.1")
    async for _redis in flushed_client(url):
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "ocs.cli", "demo", "--workers", "2", "--port", str(port)),
            *("--http-port", "0", "--metrics-port", "0", "--nchf-port", str(nchf_port)),
            *("--nrf-url", server.url),
            cwd=REPO,
            env=env,
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
            # registered, then two heartbeats: one registration for the node
            await server.wait_for(lambda rs: methods(rs).count("PATCH") >= 2, timeout=60)
            assert methods(server.requests).count("PUT") == 1
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 40)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await server.stop()
        assert proc.returncode == 0, "".join(seen)
    assert methods(server.requests)[-1] == "DELETE" and nrf.profiles == {}
    profile = server.requests[0].json()
    specs.check(profile, NFM, PROFILE, what="the NFProfile of ocs demo --workers 2")
    assert service_port(profile) == nchf_port
    assert profile["ipv4Addresses"] == ["127.0.0.1"]
