"""What a CCR leaves in Redis for retransmissions is bounded by ``answer_ttl``: the stored
answer and the balance result of its request id expire after it, while the session itself
lives ``session_ttl`` (single Redis and cluster)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from ocs.balance.keys import answer_key, session_key
from ocs.charging import apply_catalog, create_charging
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from tests.charging.helpers import ACME_IMSI
from tests.charging.test_outcomes import data_ccr


async def test_answers_and_results_expire_after_answer_ttl(
    redis: Redis, redis_url: str, catalogue_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, answer_ttl=120)
    await apply_catalog(catalogue_dir, settings)
    runtime = await create_charging(settings, registry=CollectorRegistry(), start=False)
    try:
        answer = await runtime.application.handle_ccr(data_ccr("ttl-1", ACME_IMSI), None)
        assert answer.get(A.AVP_RESULT_CODE) == 2001
    finally:
        await runtime.close()
    assert 0 < await redis.ttl(answer_key("ttl-1", 0)) <= 120
    assert await redis.ttl(session_key("ttl-1")) > 3600
    done = [k async for k in redis.scan_iter(match="ocs:{*}:done:*ttl-1*")]
    assert done, "the charge stored its result under its request id (session and number)"
    for key in done:
        assert 0 < await redis.pttl(key) <= 120_000
