"""A real Redis outage under load: `ocs serve` keeps answering (failover grants, bounded),
logs one line per state change and no traceback; when Redis is back the failover journal
is replayed, so every unit the gateway reported is in a usage record exactly once, drained
to PostgreSQL once (the audit agrees), and on the invoice once.

The test starts its own redis-server (append-only file, so a restart keeps the balances),
stops it by its pid in the middle of the load and starts it again on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import pytest

from ocs.audit import run_audit
from ocs.balance import BalanceStore
from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Message
from ocs.diameter.node import Node
from ocs.diameter.peer import LocalConfig
from ocs.diameter.transport import connect
from ocs.observability.outage import STILL_DOWN_EVERY
from ocs.offline.billrun import bill_run
from ocs.offline.db import Database
from ocs.offline.drain import Drainer
from ocs.rating.loader import load_catalogue
from ocs.redis_client import client_for_url
from tests.balance.helpers import assert_conserved
from tests.charging.ccr import build_ccr
from tests.charging.conftest import ANSWER_TIMEOUT, CLIENT
from tests.charging.helpers import granted, msccs
from tests.charging.test_crash import SERVER_ENV, _run
from tests.diameter.test_cli_serve import OcsServe, clean_env
from tests.offline.conftest import MASTER, catalogue_folder, db, pg_admin_url, pg_url, synced

__all__ = ["db", "pg_admin_url", "pg_url"]  # PostgreSQL fixtures: the drain and the audit

MB = 1_000_000
SESSIONS: Final = 24
OUTAGE_AFTER: Final = 150  # answers before Redis is stopped
OUTAGE_ANSWERS: Final = 150  # answers (by failure handling) while it is down
ROAMING: Final = "20801"  # the SIMs roam in the EU: usage is an invoice line ("Data eu")
OUTAGE_SECONDS: Final = 3.0  # at least this long without Redis
WAIT: Final = 60.0
OUTAGE_LOGGER: Final = "ocs.observability.outage"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of this test's own, stopped and restarted by its pid."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "",
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = client_for_url(self.url, timeout=0.5)
        try:
            for _ in range(100):
                with contextlib.suppress(Exception):
                    if await client.ping():
                        return
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        raise AssertionError("redis-server did not start")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)  # by its pid: a clean shutdown, AOF kept
            await self.proc.wait()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    folder = tmp_path.parent / f"redis-{tmp_path.name}"  # not under ocs serve's folder
    folder.mkdir()
    server = RedisServer(folder)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Load:
    answered: int = 0
    reported: int = 0  # used units the gateway reported, in all
    codes: dict[int, int] = field(default_factory=dict)
    outage: asyncio.Event = field(default_factory=asyncio.Event)  # OUTAGE_AFTER answers
    during: asyncio.Event = field(default_factory=asyncio.Event)  # answers while down
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    down_at: int | None = None

    def count(self, code: int) -> None:
        self.answered += 1
        self.codes[code] = self.codes.get(code, 0) + 1
        if self.answered >= OUTAGE_AFTER:
            self.outage.set()
        if self.down_at is not None and self.answered >= self.down_at + OUTAGE_ANSWERS:
            self.during.set()


def _granted(answer: Message) -> int:
    mscc = msccs(answer).get(10)
    return (granted(mscc) or 0) if mscc is not None else 0


async def _session(proto: object, load: Load, i: int, rng: random.Random) -> None:
    sid = f"pgw.test;outage;{i}"
    imsi = f"26201000000{i + 100:04d}"
    n = 0
    answer = await proto.send_request(  # type: ignore[attr-defined]
        build_ccr(
            sid, sgsn_mcc_mnc=ROAMING, request_type=1, number=n, imsi=imsi, msccs=[(10, MB, 0)]
        ),
        timeout=ANSWER_TIMEOUT,
    )
    load.count(int(answer.get(A.AVP_RESULT_CODE)))
    grant = _granted(answer)
    while not load.stop.is_set():
        n += 1
        used = rng.randint(0, grant)
        answer = await proto.send_request(  # type: ignore[attr-defined]
            build_ccr(
                sid,
                sgsn_mcc_mnc=ROAMING,
                request_type=2,
                number=n,
                imsi=imsi,
                msccs=[(10, MB, used)],
            ),
            timeout=ANSWER_TIMEOUT,
        )
        load.reported += used
        load.count(int(answer.get(A.AVP_RESULT_CODE)))
        grant = _granted(answer)
        await asyncio.sleep(0.01)
    used = rng.randint(0, grant)
    answer = await proto.send_request(  # type: ignore[attr-defined]
        build_ccr(
            sid,
            sgsn_mcc_mnc=ROAMING,
            request_type=3,
            number=n + 1,
            imsi=imsi,
            msccs=[(10, -1, used)],
        ),
        timeout=ANSWER_TIMEOUT,
    )
    load.reported += used
    load.count(int(answer.get(A.AVP_RESULT_CODE)))


@dataclass
class Episode:
    """The lines of one stretch of failed store calls: down, still down, up."""

    down: datetime
    still: int = 0  # "still unreachable" lines
    up: datetime | None = None
    failures: int = 0


def _episodes(outage: list[dict[str, Any]]) -> list[Episode]:
    """The outage log's lines as episodes, checking that it wrote one line per state change:
    a "down" line, a "still unreachable" one at most every STILL_DOWN_EVERY seconds, an "up"
    line, and no line between two episodes. Not only the outage the test makes is one: a
    CCR past its deadline (0.5 s here) is answered by failure handling too and logged as one
    (a server process held off the CPU that long, as on a loaded machine, makes an episode
    of a few calls: counting lines as if the outage made here were the only one failed)."""
    episodes: list[Episode] = []
    for x in outage:
        at = datetime.fromisoformat(x["ts"])
        now = episodes[-1] if episodes and episodes[-1].up is None else None
        if x["state"] == "down" and "failures" not in x:
            assert now is None, outage  # a new outage starts after the last one ended
            episodes.append(Episode(at))
        elif x["state"] == "down":
            assert now is not None, outage
            now.still += 1
            assert (at - now.down).total_seconds() >= now.still * STILL_DOWN_EVERY, outage
        else:
            assert x["state"] == "up" and now is not None, outage
            now.up, now.failures = at, int(x["failures"])
    assert episodes and episodes[-1].up is not None, outage  # it says when Redis is back
    return episodes


async def test_a_redis_outage_mid_load_is_billed_once_and_logged_per_state_change(
    own_redis: RedisServer, db: Database, tmp_path: Path
) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"  # the demo catalogue as a tenant of this test alone
    folder = catalogue_folder(tmp_path / "catalogue", tenant)
    pool = f"{tenant}:prepaid_pool:acme-pool"
    env = clean_env(
        tmp_path,
        OCS_REDIS_URL=own_redis.url,
        OCS_LOG_FORMAT="json",
        OCS_RECLAIM_INTERVAL="0.5",
        OCS_CHARGING_TIMEOUT="0.5",
        OCS_FAILURE_GRANT_BYTES=str(MB),
        OCS_PEERS=SERVER_ENV["OCS_PEERS"],  # the gateway is a configured peer
    )
    await _run(tmp_path, "catalog", "apply", str(folder), env=env)
    server = await OcsServe.start(tmp_path, "--port", "0", env=env)
    proto = await connect(Node(CLIENT), LocalConfig(identity=CLIENT), "127.0.0.1", server.port)
    load = Load()
    rng = random.Random(20261206)
    tasks = [
        asyncio.create_task(_session(proto, load, i, random.Random(rng.random())))
        for i in range(SESSIONS)
    ]
    try:
        await asyncio.wait_for(load.outage.wait(), WAIT)
        load.down_at = load.answered
        await own_redis.stop()  # mid-load
        await asyncio.wait_for(load.during.wait(), WAIT)  # answered by failure handling
        await asyncio.sleep(OUTAGE_SECONDS)  # the load goes on: bounds reached, one log line
        journal = tmp_path / "data" / "failover-grants.jsonl"
        assert journal.exists()
        text = journal.read_text()
        assert "262010000" not in text and "pgw.test;outage" not in text  # no identity in clear
        await own_redis.start()  # the same port, the same data
        await asyncio.sleep(1.5)  # load goes on with Redis back
        load.stop.set()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # the journal is replayed by the server's housekeeping (every 0.5 s here)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    data = tmp_path / "data"
    while list(data.glob("failover-grants.jsonl*")) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)  # files on disk, polled: there is no event to wait on
    assert list(data.glob("failover-grants.jsonl*")) == []
    assert not (data / "failover-unrated.jsonl").exists()
    await proto.disconnect(2.0)
    assert await server.stop() == 0

    client = client_for_url(own_redis.url, timeout=1.0)
    try:
        store = BalanceStore(client)
        records = [r.fields for r in await store.records(pool)]
        usage = [r for r in records if r["kind"] == "usage"]
        ids = [r["id"] for r in usage]
        assert len(ids) == len(set(ids))  # nothing counted twice
        replayed = [r for r in usage if '"failover":true' in r["ctx"]]
        assert replayed  # the outage's usage came back through the journal
        # every unit the gateway reported is in exactly one usage record
        assert sum(int(r["units"]) + int(r["overrun"]) for r in usage) == load.reported
        await assert_conserved(store, pool)
        await store.batch.close()

        # drained to PostgreSQL: each record once, and the audit finds Redis and the
        # records in agreement (no discrepancy on any payer of the tenant)
        catalogue = load_catalogue(folder)
        cipher = await synced(db, catalogue)
        await Drainer(client, db, MASTER).run()
        async with db.tenant(tenant) as conn:
            stored = await conn.fetch(
                "SELECT record_key, units, overrun, ctx->>'failover' AS failover"
                " FROM usage_records WHERE payer = $1 AND kind = 'usage'",
                pool,
            )
        assert sorted(r["record_key"] for r in stored) == sorted(f"usage:{i}" for i in ids)
        assert sum(r["units"] + r["overrun"] for r in stored) == load.reported
        assert sum(1 for r in stored if r["failover"] == "true") == len(replayed)
        audit = await run_audit(client, db, tenant=tenant)
        assert audit.records_checked and audit.discrepancies == []

        # and on the invoice: the EU usage line holds every reported unit, once
        now = datetime.now(ZoneInfo(catalogue.tenant.time_zone))
        next_month = date(now.year + now.month // 12, now.month % 12 + 1, 1)
        run = await bill_run(db, catalogue, cipher, account="acme-iot", on=next_month)
        [number] = run.numbers
        async with db.tenant(tenant) as conn:
            lines = await conn.fetch(
                "SELECT description, quantity FROM invoice_lines WHERE number = $1", number
            )
        data = [
            r for r in lines if r["description"] == "Data, zone EU roaming, plan IoT pooled data"
        ]
        assert [int(r["quantity"]) for r in data] == [load.reported]
    finally:
        await client.aclose()

    lines = [json.loads(x) for x in (tmp_path / "ocs-serve.stderr").read_text().splitlines()]
    assert not any("Traceback" in (x.get("exc") or "") + x["msg"] for x in lines)
    outage = [x for x in lines if x["logger"] == OUTAGE_LOGGER]
    episodes = _episodes(outage)
    # the outage made here is one of them: every call it failed is counted on its lines
    assert max(e.failures for e in episodes) >= OUTAGE_ANSWERS
    noisy = [x for x in lines if x["level"] in ("WARNING", "ERROR")]
    assert len([x for x in noisy if x["logger"] != OUTAGE_LOGGER]) <= 2, noisy
    replay = [x for x in lines if x["msg"].startswith("failover journal replayed")]
    assert replay
    assert load.codes.get(5012, 0) == 0  # an outage is never answered as an error
