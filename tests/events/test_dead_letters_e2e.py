"""Dead letters redelivered over the API, end to end: the real `ocs serve` process (API and
dispatcher), a real Redis and a real receiver (``tools/webhook_receiver.py``) that first
refuses every delivery (it checks with the wrong secret: 401), so that two SIM state events
are dead-lettered, then is fixed. A newer event of the same SIM goes through live; the
operator lists the dead letters and redelivers them: they arrive with their own event ids,
after the newer one, in the order they were written, marked ``Ocs-Redelivered``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import httpx

from ocs.api.auth import Scope, create_token
from ocs.redis_client import RedisClient
from tests.charging.conftest import DEMO
from tests.diameter.test_cli_serve import OcsServe, clean_env
from tests.events.conftest import free_port, receiving
from tests.events.test_webhooks_e2e import _ocs, _until

BOB: Final = "262019999999999"
WAIT: Final = 60.0


async def test_dead_letters_redelivered_after_the_receiver_recovers(
    redis: RedisClient, redis_url: str, tmp_path: Path
) -> None:
    http_port, hook_port = free_port(), free_port()
    env = clean_env(
        tmp_path,
        OCS_REDIS_URL=redis_url,
        OCS_HTTP_PORT=str(http_port),
        OCS_WEBHOOK_INTERVAL="0.1",
        OCS_WEBHOOK_BACKOFF="0.1",
        OCS_WEBHOOK_BACKOFF_MAX="0.2",
        OCS_WEBHOOK_MAX_ATTEMPTS="2",
        OCS_WEBHOOK_PRIVATE_TARGETS="1",
    )
    await _ocs(env, "catalog", "apply", str(DEMO))
    server = await OcsServe.start(tmp_path, "--port", "0", env=env)
    token = await create_token(redis, "demo", Scope.ADMIN)
    api = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{http_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    try:
        r = await api.post(
            "/v1/webhooks",
            json={
                "url": f"http://127.0.0.1:{hook_port}/ocs",
                "events": ["sim.state_changed"],
                "filter": {"imsis": [BOB]},
            },
        )
        assert r.status_code == 201, r.text
        sub, secret = r.json()["id"], r.json()["secret"]
        letters = f"/v1/webhooks/{sub}/dead-letters"

        async def dead(count: int) -> list[dict[str, Any]] | None:
            found = list((await api.get(letters)).json())
            return found if len(found) == count else None

        # 1. the receiver refuses: two moves of Bob's SIM end as dead letters
        with receiving(hook_port, "whsec_the-wrong-secret-000") as refusing:
            for path in ("suspend", "resume"):
                assert (await api.post(f"/v1/subscriptions/{BOB}/{path}")).status_code == 200
            found = await _until(lambda: dead(2), "two dead letters")
            assert refusing.refused == 4 and refusing.events == []  # 2 attempts each
        written = [d["event"] for d in reversed(found)]  # oldest first
        assert [(e["data"]["from"], e["data"]["to"]) for e in written] == [
            ("active", "suspended"),
            ("suspended", "active"),
        ]
        r = await api.get("/v1/webhooks/dead-letters")
        assert [(s["webhook"], s["count"]) for s in r.json()] == [(sub, 2)]

        with receiving(hook_port, secret) as receiver:
            # 2. fixed: the next move of the same SIM is delivered at once, live
            assert (await api.post(f"/v1/subscriptions/{BOB}/suspend")).status_code == 200
            [newer] = await asyncio.to_thread(receiver.wait_for, 1, WAIT)
            # 3. the operator redelivers the dead letters
            r = await api.post(f"{letters}/redeliver", json={"all": True})
            assert r.status_code == 202, r.text
            assert r.json()["redelivered"] == 2 and r.json()["unknown"] == []
            events = await asyncio.to_thread(receiver.wait_for, 3, WAIT)
            assert receiver.refused == 0
        assert events == [newer, *written]  # after the newer one, each with its id and time
        assert (newer["data"]["from"], newer["data"]["to"]) == ("active", "suspended")
        assert receiver.redelivered == [e["id"] for e in written]
        assert await dead(0) == []

        async def queue_empty() -> bool:
            summary = (await api.get("/v1/webhooks/dead-letters")).json()
            return bool(summary[0]["queue"] == 0)

        await _until(queue_empty, "the redelivery queue empty")
        log = list((await api.get(f"/v1/webhooks/{sub}/deliveries")).json())
        assert [(x["event_id"], x["outcome"]) for x in log[:3]] == [
            (written[1]["id"], "delivered"),
            (written[0]["id"], "delivered"),
            (newer["id"], "delivered"),
        ]
    finally:
        await api.aclose()
        await server.stop()
