"""Exactly-once drain of the per-payer streams into PostgreSQL, with injected crashes."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap

import pytest
from redis.asyncio import Redis

from ocs.balance.keys import PayerKeys
from ocs.offline.db import Database
from ocs.offline.drain import GROUP, DrainCrash, Drainer
from tests.offline.conftest import MASTER
from tests.offline.helpers import add_usage


async def _rows(db: Database, tenant: str) -> list[str]:
    async with db.tenant(tenant) as conn:
        rows = await conn.fetch("SELECT record_key FROM usage_records ORDER BY record_key")
    return [r["record_key"] for r in rows]


async def _pending(redis: Redis, tag: str) -> int:
    info = await redis.xpending(PayerKeys(tag).stream, GROUP)
    return int(info["pending"])


def _crash_at(point: str, on_call: int):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    async def hook(name: str) -> None:
        if name == point:
            calls["n"] += 1
            if calls["n"] == on_call:
                raise DrainCrash(point)

    return hook


async def test_drain_moves_every_record_once(redis: Redis, db: Database, tenant: str) -> None:
    tags = [f"{tenant}:prepaid_pool:p{i}" for i in range(3)]
    expected = []
    for tag in tags:
        expected += await add_usage(redis, tag, 120)
    stats = await Drainer(redis, db, MASTER, batch=50).run()
    assert (stats.read, stats.inserted, stats.acked, stats.streams) == (360, 360, 360, 3)
    assert await _rows(db, tenant) == sorted(f"usage:{i}" for i in expected)
    # a second drain finds nothing new
    again = await Drainer(redis, db, MASTER, batch=50).run()
    assert (again.read, again.inserted) == (0, 0)
    async with db.tenant(tenant) as conn:
        row = await conn.fetchrow("SELECT ctx, imsi_bidx, units FROM usage_records LIMIT 1")
    assert "imsi" not in row["ctx"] and "262010000000001" not in row["ctx"]
    assert len(row["imsi_bidx"]) == 16


@pytest.mark.parametrize("point", ["after_commit", "before_commit", "after_ack"])
async def test_crash_then_other_consumer_recovers(
    redis: Redis, db: Database, tenant: str, point: str
) -> None:
    tag = f"{tenant}:postpaid_pool:pp"
    ids = await add_usage(redis, tag, 230)
    with pytest.raises(DrainCrash):
        await Drainer(redis, db, MASTER, batch=50, consumer="a", hook=_crash_at(point, 2)).run()
    committed = {"before_commit": 50, "after_commit": 100, "after_ack": 100}[point]
    assert len(await _rows(db, tenant)) == committed
    pending = {"before_commit": 50, "after_commit": 50, "after_ack": 0}[point]
    assert await _pending(redis, tag) == pending
    # consumer "a" is dead; "b" claims its pending entries and drains the rest
    stats = await Drainer(redis, db, MASTER, batch=50, consumer="b", claim_idle_ms=0).run()
    assert stats.claimed == pending
    assert stats.duplicates == (50 if point == "after_commit" else 0)
    assert await _rows(db, tenant) == sorted(f"usage:{i}" for i in ids)
    assert await _pending(redis, tag) == 0


async def test_same_consumer_restarts_from_its_pending(
    redis: Redis, db: Database, tenant: str
) -> None:
    tag = f"{tenant}:wallet:w"
    ids = await add_usage(redis, tag, 120)
    with pytest.raises(DrainCrash):
        await Drainer(
            redis, db, MASTER, batch=40, consumer="a", hook=_crash_at("after_commit", 1)
        ).run()
    # the default claim idle time would not claim anything yet: own pending entries first
    stats = await Drainer(redis, db, MASTER, batch=40, consumer="a").run()
    assert (stats.claimed, stats.duplicates, stats.inserted) == (0, 40, 80)
    assert await _rows(db, tenant) == sorted(f"usage:{i}" for i in ids)


async def test_replayed_record_is_not_doubled(redis: Redis, db: Database, tenant: str) -> None:
    tag = f"{tenant}:prepaid_pool:p"
    await add_usage(redis, tag, 10)
    await Drainer(redis, db, MASTER).run()
    await add_usage(redis, tag, 15)  # the first 10 ids again (a replayed script result)
    stats = await Drainer(redis, db, MASTER).run()
    assert (stats.read, stats.inserted, stats.duplicates) == (15, 5, 10)
    assert len(await _rows(db, tenant)) == 15


async def test_process_killed_between_insert_and_ack(
    redis: Redis, db: Database, tenant: str, pg_url: str, redis_url_offline: str
) -> None:
    """A real process exits hard (os._exit) after its second commit, before the XACK."""
    tag = f"{tenant}:prepaid_pool:k"
    ids = await add_usage(redis, tag, 300)
    script = textwrap.dedent(f"""
        import asyncio, os
        from redis.asyncio import Redis
        from ocs.config import Settings
        from ocs.offline.db import connect
        from ocs.offline.drain import Drainer
        calls = 0
        async def hook(point):
            global calls
            if point == "after_commit":
                calls += 1
                if calls == 2:
                    os._exit(137)
        async def main():
            db = await connect(Settings(database_url={pg_url!r}), migrate_now=False)
            redis = Redis.from_url({redis_url_offline!r})
            await Drainer(redis, db, bytes(range(32)), batch=100, consumer="k", hook=hook).run()
        asyncio.run(main())
    """)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, env=dict(os.environ))
    assert await proc.wait() == 137
    assert len(await _rows(db, tenant)) == 200
    assert await _pending(redis, tag) == 100
    stats = await Drainer(redis, db, MASTER, batch=100, consumer="z", claim_idle_ms=0).run()
    assert (stats.claimed, stats.duplicates) == (100, 100)
    assert await _rows(db, tenant) == sorted(f"usage:{i}" for i in ids)
