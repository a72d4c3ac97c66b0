"""Exactly-once drain of the per-payer streams into PostgreSQL, with injected crashes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from ocs.balance.keys import PayerKeys
from ocs.offline.db import Database
from ocs.offline.drain import GROUP, STRIPPED, DrainCrash, Drainer, strip_identifiers
from tests.offline.conftest import MASTER
from tests.offline.helpers import add_usage, usage_fields


async def _rows(db: Database, tenant: str) -> list[str]:
    async with db.tenant(tenant) as conn:
        rows = await conn.fetch("SELECT record_key FROM usage_records ORDER BY record_key")
    return [r["record_key"] for r in rows]


async def _backends(conn: asyncpg.Connection[asyncpg.Record]) -> set[int]:
    """The server processes of every other connection to this test session's database."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()"
    )
    return {r["pid"] for r in rows}


async def _pending(redis: Redis, tag: str) -> int:
    info = await redis.xpending(PayerKeys(tag).stream, GROUP)
    return int(info["pending"])


async def _ack_state(redis: Redis, tag: str, added: list[str]) -> tuple[set[str], set[str]]:
    """Record keys of the entries the group acknowledged and of those still pending
    (delivered = up to the group's last delivered id). The drain deletes an entry right
    after acknowledging it: an ``added`` record no longer in the stream was acknowledged."""
    stream = PayerKeys(tag).stream
    groups = await redis.xinfo_groups(stream)
    last = next(g["last-delivered-id"] for g in groups if g["name"] in (GROUP, GROUP.encode()))
    delivered = await redis.xrange(stream, "-", last)
    present = {f"usage:{f[b'id'].decode()}" for _, f in await redis.xrange(stream, "-", "+")}
    pending_ids = {
        p["message_id"] for p in await redis.xpending_range(stream, GROUP, "-", "+", 1_000_000)
    }
    acked, pending = set(), set()
    for eid, fields in delivered:
        key = f"usage:{fields[b'id'].decode()}"
        (pending if eid in pending_ids else acked).add(key)
    deleted = {f"usage:{i}" for i in added} - present
    assert not deleted & pending
    return acked | deleted, pending


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
    assert stats.replays == 0  # first deliveries, nothing stored yet: every plain insert held
    assert await _rows(db, tenant) == sorted(f"usage:{i}" for i in expected)
    # a second drain finds nothing new
    again = await Drainer(redis, db, MASTER, batch=50).run()
    assert (again.read, again.inserted) == (0, 0)
    async with db.tenant(tenant) as conn:
        row = await conn.fetchrow("SELECT ctx, imsi_bidx, units FROM usage_records LIMIT 1")
    assert "imsi" not in row["ctx"] and "262010000000001" not in row["ctx"]
    assert len(row["imsi_bidx"]) == 16


@pytest.mark.parametrize("writers", [1, 2])
@pytest.mark.parametrize("point", ["after_commit", "before_commit", "after_ack"])
async def test_crash_then_other_consumer_recovers(
    redis: Redis, db: Database, tenant: str, point: str, writers: int
) -> None:
    tag = f"{tenant}:postpaid_pool:pp"
    ids = await add_usage(redis, tag, 230)
    with pytest.raises(DrainCrash):
        await Drainer(
            redis, db, MASTER, batch=50, consumer="a", hook=_crash_at(point, 2), writers=writers
        ).run()
    stored = set(await _rows(db, tenant))
    # the invariant: acknowledged only after commit; committed but unacknowledged stays
    # pending (so do read-ahead entries of a next batch, neither stored nor acknowledged)
    acked, pending = await _ack_state(redis, tag, ids)
    assert acked <= stored
    assert stored - acked <= pending
    assert len(pending) == await _pending(redis, tag)
    if writers == 1:  # batches commit in order: the counts are exact
        committed = {"before_commit": 50, "after_commit": 100, "after_ack": 100}[point]
        assert len(stored) == committed
        unacked = {"before_commit": 0, "after_commit": 50, "after_ack": 0}[point]
        assert len(stored - acked) == unacked
        assert len(pending) >= 50 * (point != "after_ack")
    # consumer "a" is dead; "b" claims its pending entries and drains the rest
    stats = await Drainer(redis, db, MASTER, batch=50, consumer="b", claim_idle_ms=0).run()
    assert stats.claimed == len(pending)
    assert stats.duplicates == len(stored & pending)
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
    stored = set(await _rows(db, tenant))
    acked, pending = await _ack_state(redis, tag, ids)
    assert len(stored) >= 40 and acked <= stored and stored - acked <= pending
    # the default claim idle time would not claim anything yet: own pending entries first
    stats = await Drainer(redis, db, MASTER, batch=40, consumer="a").run()
    assert (stats.claimed, stats.duplicates) == (0, len(stored & pending))
    assert stats.inserted == 120 - len(stored)
    assert await _rows(db, tenant) == sorted(f"usage:{i}" for i in ids)


async def test_replayed_record_is_not_doubled(redis: Redis, db: Database, tenant: str) -> None:
    tag = f"{tenant}:prepaid_pool:p"
    await add_usage(redis, tag, 10)
    await Drainer(redis, db, MASTER).run()
    await add_usage(redis, tag, 15)  # the first 10 ids again (a replayed script result)
    stats = await Drainer(redis, db, MASTER).run()
    assert (stats.read, stats.inserted, stats.duplicates) == (15, 5, 10)
    assert stats.replays == 1  # the plain insert met a stored record; redone conflict-safe
    assert len(await _rows(db, tenant)) == 15


async def test_rewound_group_after_commit_before_ack(
    redis: Redis, db: Database, tenant: str
) -> None:
    """Committed but never acknowledged, then the group position goes back (Redis restored
    from an older snapshot, a replica promoted before it saw the read): the entries come
    again as first deliveries (">"); their plain insert fails, the conflict-safe one stores
    nothing twice, and every entry is acknowledged. (The first batch, committed and
    acknowledged, was deleted from the stream: only the other 60 come again.)"""
    tag = f"{tenant}:postpaid_pool:r"
    ids = await add_usage(redis, tag, 100)
    with pytest.raises(DrainCrash):
        await Drainer(
            redis, db, MASTER, batch=40, consumer="a", hook=_crash_at("after_commit", 2), writers=1
        ).run()
    stored = set(await _rows(db, tenant))
    assert len(stored) == 80 and await _pending(redis, tag) > 0
    stream = PayerKeys(tag).stream
    assert await redis.xlen(stream) == 60
    await redis.xgroup_destroy(stream, GROUP)
    await redis.xgroup_create(stream, GROUP, id="0")
    stats = await Drainer(redis, db, MASTER, batch=40, consumer="b", writers=1).run()
    assert (stats.read, stats.inserted, stats.duplicates, stats.acked) == (60, 20, 40, 60)
    assert stats.replays == 1  # the batch of the 40 stored records; the next one was clean
    assert await _rows(db, tenant) == sorted(f"usage:{i}" for i in ids)
    assert await _pending(redis, tag) == 0
    assert await redis.xlen(stream) == 0


async def test_batch_mixing_fresh_and_replayed_records(redis: Redis, db: Database) -> None:
    """One batch of first deliveries: tenant 1's streams hold new records and records already
    stored (appended again), tenant 2's only new ones. Only tenant 1's rows take the
    conflict-safe insert; each record is stored once, every entry is acknowledged."""
    t1, t2 = f"tm{os.getpid()}a", f"tm{os.getpid()}b"
    first = await add_usage(redis, f"{t1}:wallet:w", 20)
    await Drainer(redis, db, MASTER).run()
    # the same 20 ids again plus 10 new ones on the same stream, 25 new on a second stream
    again = await add_usage(redis, f"{t1}:wallet:w", 30)
    other = await add_usage(redis, f"{t1}:prepaid_pool:p", 25)
    new2 = await add_usage(redis, f"{t2}:wallet:w", 15)
    stats = await Drainer(redis, db, MASTER).run()
    assert (stats.read, stats.inserted, stats.duplicates, stats.acked) == (70, 50, 20, 70)
    assert stats.replays == 1
    assert await _rows(db, t1) == sorted(f"usage:{i}" for i in set(first + again + other))
    assert await _rows(db, t2) == sorted(f"usage:{i}" for i in new2)


@pytest.mark.parametrize("writers", [1, 2])
async def test_same_record_in_concurrent_fresh_batches(
    redis: Redis, db: Database, tenant: str, writers: int
) -> None:
    """Two streams carry the same records, read into different batches that may be in their
    transactions at once: the second plain insert waits for the first, fails on its keys
    and is redone conflict-safe (or both meet in a deadlock, redone the same way)."""
    ids = await add_usage(redis, f"{tenant}:wallet:a", 60)
    await add_usage(redis, f"{tenant}:wallet:b", 60)  # ids of their own
    # stream c repeats stream a's request ids (what a replayed script result would write)
    tag_c = f"{tenant}:wallet:c"
    await redis.sadd("ocs:payers", tag_c)  # type: ignore[misc]
    for n, rid in enumerate(ids):
        fields = usage_fields(tag_c, rid, 1_740_000_000_000 + n, 1000 + n)
        await redis.xadd(PayerKeys(tag_c).stream, fields)  # type: ignore[arg-type]
    stats = await Drainer(redis, db, MASTER, batch=30, writers=writers).run()
    assert (stats.read, stats.acked) == (180, 180)
    assert (stats.inserted, stats.duplicates) == (120, 60)
    assert stats.replays >= 1
    rows = await _rows(db, tenant)
    assert len(rows) == len(set(rows)) == 120


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
    watch = await asyncpg.connect(pg_url)  # a connection of its own: the pool opens none
    try:
        before = await _backends(watch)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, env=dict(os.environ)
        )
        assert await proc.wait() == 137
        # A COMMIT the process sent before it died is still carried out by its backend: read
        # what is stored once the dead process's backends are gone (they raced the read)
        for _ in range(1200):
            if not await _backends(watch) - before:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the killed drainer's database connections never closed")
    finally:
        await watch.close()
    stored = set(await _rows(db, tenant))
    # two batches committed; with two writers the third may have committed (and even been
    # acknowledged) too
    assert len(stored) >= 200
    acked, pending = await _ack_state(redis, tag, ids)
    assert acked <= stored and len(stored - acked) >= 100 and stored - acked <= pending
    assert len(pending) == await _pending(redis, tag)
    stats = await Drainer(redis, db, MASTER, batch=100, consumer="z", claim_idle_ms=0).run()
    assert (stats.claimed, stats.duplicates) == (len(pending), len(stored & pending))
    assert await _rows(db, tenant) == sorted(f"usage:{i}" for i in ids)


async def test_batches_span_tenants_and_escape_text(redis: Redis, db: Database) -> None:
    """One XREADGROUP batch holds several tenants' streams; odd bytes survive the COPY."""
    t1, t2 = f"tx{os.getpid()}a", f"tx{os.getpid()}b"
    ids1 = await add_usage(redis, f"{t1}:wallet:w", 30)
    ids2 = await add_usage(redis, f"{t2}:wallet:w", 30)
    odd = f"{t1}:wallet:odd"
    await redis.sadd("ocs:payers", odd)  # type: ignore[misc]
    fields = usage_fields(odd, "a\\b\tc\nd\re ü;1", 1_740_000_000_123, 7, account="Zoë \\ \t x")
    reclaim = {"kind": "reclaim", "id": "m\\1", "payer": odd, "ts": "1740000000999",
               "units": "0", "money": "0", "alloc": '[["b1", "5"]]'}  # fmt: skip
    await redis.xadd(PayerKeys(odd).stream, fields)  # type: ignore[arg-type]
    await redis.xadd(PayerKeys(odd).stream, reclaim)  # type: ignore[arg-type]
    stats = await Drainer(redis, db, MASTER).run()
    assert (stats.read, stats.inserted, stats.acked, stats.streams) == (62, 62, 62, 3)
    assert await _rows(db, t2) == sorted(f"usage:{i}" for i in ids2)
    async with db.tenant(t1) as conn:
        rows = {r["record_key"]: r for r in await conn.fetch("SELECT * FROM usage_records")}
    assert len(rows) == 32 and {f"usage:{i}" for i in ids1} <= set(rows)
    row = rows["usage:a\\b\tc\nd\re ü;1"]
    assert (row["account_id"], row["units"], row["rating_group"]) == ("Zoë \\ \t x", 7, 10)
    assert row["ts"].timestamp() == 1_740_000_000.123 and len(row["imsi_bidx"]) == 16
    assert "imsi" not in row["ctx"] and "msisdn" not in row["ctx"]
    rec = rows["reclaim:m\\1:1740000000999"]
    assert (rec["ctx"], rec["unit"], rec["session_id"], rec["imsi_bidx"]) == (None, "", None, None)


_NAMES = st.sampled_from(["session", "n", "rg", "twin", "account", "levels", "x"])
_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
# nested values never use the stripped names as keys (no producer writes them below the top)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=3),
    max_leaves=6,
)
_IDENTIFIER = st.none() | st.text(max_size=16) | st.integers(0, 10**15)


@settings(max_examples=300, deadline=None)
@given(
    body=st.dictionaries(
        st.sampled_from(["session", "n", "rg", "twin", "account", "levels", "x"])
        | st.sampled_from(list(STRIPPED)),
        _IDENTIFIER | _VALUES,
        max_size=8,
    ),
    compact=st.booleans(),
    ascii_only=st.booleans(),
)
def test_strip_identifiers_equals_decoding(
    body: dict[str, object], compact: bool, ascii_only: bool
) -> None:
    """Cutting the identifiers out of the text gives the same object (and IMSI) as decoding,
    popping and encoding, whatever the key order, separators, escapes and value types."""
    separators = (",", ":") if compact else (", ", ": ")
    raw = json.dumps(body, separators=separators, ensure_ascii=ascii_only).encode()
    imsi, out = strip_identifiers(raw)
    assert json.loads(out) == {k: v for k, v in body.items() if k not in STRIPPED}
    expected = body.get("imsi")
    assert imsi == (None if expected is None else str(expected))


def test_strip_identifiers_cuts_the_producers_context() -> None:
    """The charging code's context (json.dumps, identifiers in the middle) takes the cut."""
    raw = usage_fields("t:wallet:w", "r;1:0:10", 1, 5, account='say "imsi": \\ ü')["ctx"]
    imsi, out = strip_identifiers(raw.encode())
    assert imsi == "262010000000001"
    assert b"imsi" not in out.replace(b'say \\"imsi\\"', b"") and b"4917" not in out
    assert json.loads(out)["account"] == 'say "imsi": \\ ü'
    assert out.startswith(b'{"session": "s1", "n": 1, "rg": 10, "twin": "data", "account"')
