"""Done-when of issue 16, against the real `ocs serve` process, a real Redis and a real
HTTP receiver (``tools/webhook_receiver.py``, which verifies each signature the documented
way): the demo pool's 80 % threshold (from the catalogue), crossed by Diameter load, reaches
the receiver as exactly one signed event; a 90 % crossing while the receiver is down arrives
once it is back (retried with backoff); a 95 % crossing written to the outbox while the
receiver is down survives a SIGKILL of the server and arrives after the restart."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx

from ocs.api.auth import Scope, create_token
from ocs.balance import BalanceStore
from ocs.balance.keys import PayerKeys
from ocs.redis_client import RedisClient
from tests.charging.conftest import DEMO
from tests.diameter.test_cli_serve import REPO, OcsServe, clean_env
from tests.events.conftest import free_port, receiving
from tools.webhook_receiver import Receiver

ACME: Final = "demo:prepaid_pool:acme-pool"
SIZE: Final = 10_000_000_000
QUOTA: Final = 100_000_000  # bytes a loadgen session uses (CCR-U q/2 + CCR-T q/2)
WAIT: Final = 60.0  # seconds at most for anything below to happen


async def _ocs(env: dict[str, str], *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ocs.cli", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")


async def _load_until(store: BalanceStore, port: int, percent: int) -> int:
    """Diameter sessions of the fleet (tools/loadgen.py) until ``percent`` of the pool is
    used; the bytes used."""
    used = 0
    while used * 100 < percent * SIZE:
        sessions = max((percent * SIZE - used * 100) // (100 * QUOTA) + 1, 1)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "tools" / "loadgen.py"), "--port", str(port),
            "--sessions", str(sessions), "--updates", "1", "--quota", str(QUOTA), "--json-line",
            cwd=REPO, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
        assert proc.returncode == 0, out
        assert json.loads(out)["result_codes"].get("2001", 0) > 0, out
        [pool] = [b for b in await store.buckets(ACME) if b.id == "acme-pool"]
        used = pool.used
    return used


async def _until(check: Callable[[], Any], what: str) -> Any:
    """Poll ``check`` (async) until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while loop.time() < deadline:
        if found := await check():
            return found
        await asyncio.sleep(0.1)  # Redis and the receiver polled: no event to wait on
    raise AssertionError(f"not within {WAIT} s: {what}")


async def _events(receiver: Receiver, count: int) -> list[dict[str, Any]]:
    return await asyncio.to_thread(receiver.wait_for, count, WAIT)


async def test_threshold_webhook_survives_receiver_outage_and_sigkill(
    redis: RedisClient, redis_url: str, tmp_path: Path
) -> None:
    http_port, hook_port = free_port(), free_port()
    env = clean_env(
        tmp_path,
        OCS_REDIS_URL=redis_url,
        OCS_HTTP_PORT=str(http_port),
        OCS_ACCEPT_UNKNOWN_PEERS="1",
        OCS_WEBHOOK_INTERVAL="0.1",
        OCS_WEBHOOK_BACKOFF="0.2",
        OCS_WEBHOOK_BACKOFF_MAX="0.5",
        OCS_WEBHOOK_PRIVATE_TARGETS="1",
    )
    await _ocs(env, "catalog", "apply", str(DEMO))
    store = BalanceStore(redis)
    server = await OcsServe.start(tmp_path, "--port", "0", env=env)
    token = await create_token(redis, "demo", Scope.ADMIN)
    api = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{http_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    try:
        r = await api.get("/v1/pools/acme-pool/thresholds")
        assert (r.json()["percent"], r.json()["source"]) == ([80, 100], "catalogue")
        r = await api.post(
            "/v1/webhooks",
            json={"url": f"http://127.0.0.1:{hook_port}/ocs", "events": ["balance.threshold"]},
        )
        assert r.status_code == 201, r.text
        sub, secret = r.json()["id"], r.json()["secret"]

        async def deliveries() -> list[dict[str, Any]]:
            return list((await api.get(f"/v1/webhooks/{sub}/deliveries")).json())

        # 1. load past 80 %: exactly one signed event
        with receiving(hook_port, secret) as receiver:
            used = await _load_until(store, server.port, 81)
            [event] = await _events(receiver, 1)
            assert (event["type"], event["subject"]["payer"], event["data"]["percent"]) == (
                "balance.threshold",
                "acme-pool",
                80,
            )
            assert event["data"]["used"] <= used and event["data"]["base"] == SIZE
            log = await _until(deliveries, "the delivery logged")
            assert [(x["outcome"], x["event_id"]) for x in log] == [("delivered", event["id"])]
            assert receiver.refused == 0 and receiver.requests == 1  # verified, and only one

        # 2. the receiver is down while the pool crosses 90 %: retried, delivered once back
        r = await api.put("/v1/pools/acme-pool/thresholds", json={"percent": [80, 90]})
        assert r.status_code == 200, r.text
        await _load_until(store, server.port, 91)

        async def retried() -> bool:
            return any(x["outcome"] == "retried" for x in await deliveries())

        await _until(retried, "a failed attempt while the receiver is down")
        with receiving(hook_port, secret) as receiver:
            [event] = await _events(receiver, 1)
            assert event["data"]["percent"] == 90 and receiver.refused == 0

        # 3. 95 % written while the receiver is down, the server SIGKILLed before delivering
        r = await api.put("/v1/pools/acme-pool/thresholds", json={"percent": [80, 90, 95]})
        assert r.status_code == 200, r.text
        await _load_until(store, server.port, 96)

        async def in_outbox() -> str | None:
            for _, fields in await redis.xrange(PayerKeys(ACME).events):
                data = json.loads(fields[b"data"])
                if fields[b"type"] == b"balance.threshold" and data.get("percent") == 95:
                    return str(fields[b"id"].decode())
            return None

        pending = await _until(in_outbox, "the 95 % event in the outbox")
        await OcsServe._reap(server.proc, signal.SIGKILL)
        with receiving(hook_port, secret) as receiver:
            server = await OcsServe.start(tmp_path, "--port", "0", env=env)
            [event] = await _events(receiver, 1)
            assert (event["id"], event["data"]["percent"]) == (pending, 95)
            assert receiver.refused == 0
    finally:
        await api.aclose()
        await server.stop()
