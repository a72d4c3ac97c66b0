"""``invoice.issued``, ``credit_note.issued`` and ``debit_note.issued`` end to end, on a real
PostgreSQL, a real Redis and a real HTTP receiver: the event is written in the transaction
that issues the document (so it exists if and only if the document was committed), relayed
to the tenant's Redis outbox and delivered, signed, by the webhook dispatcher. A relay that
stops half-way loses no event and adds none twice; every event keeps its id."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis

from ocs.config import Settings
from ocs.events.dispatcher import DeliverySettings, Dispatcher
from ocs.events.keys import tenant_outbox
from ocs.events.model import event_id
from ocs.events.subscriptions import Subscriptions
from ocs.offline.adjust import adjust_invoice
from ocs.offline.billrun import bill_run
from ocs.offline.cli import main_billrun, main_drain, main_invoice_adjust
from ocs.offline.db import Database, connect
from ocs.offline.einvoice.document import load_document
from ocs.offline.event_relay import relay, relay_all
from ocs.rating.catalogue import Catalogue
from ocs.redis_client import RedisClient, client_for_url
from tests.events.conftest import SECRET
from tests.offline.conftest import (
    catalogue,
    catalogue_folder,
    db,
    pg_admin_url,
    pg_url,
    synced,
    tenant,
)
from tools.webhook_receiver import Receiver

__all__ = ["catalogue", "db", "pg_admin_url", "pg_url", "tenant"]  # fixtures of tests/offline

FAST = DeliverySettings(interval=0.05, timeout=2.0, backoff=0.05, backoff_max=0.2, max_attempts=3)
TYPES = ["invoice.issued", "credit_note.issued", "debit_note.issued"]


class Stop(Exception):
    """A process dying at a chosen point."""


async def _subscribe(redis: RedisClient, receiver: Receiver, tenant: str) -> None:
    port = receiver.server_address[1]
    await Subscriptions(redis).create(
        tenant,
        f"http://127.0.0.1:{port}/hook",
        TYPES,
        secret=SECRET,
        payers=[],
        imsis=[],
        private_targets=True,
    )


async def _deliver(redis: RedisClient) -> None:
    dispatcher = Dispatcher(redis, FAST)
    try:
        await dispatcher.run_once(wait=True)
    finally:
        await dispatcher.close()


async def _issued(db: Database, tenant: str) -> dict[int, Any]:
    async with db.tenant(tenant) as conn:
        keys = [r["number"] for r in await conn.fetch("SELECT number FROM invoices")]
        return {k: await load_document(conn, k) for k in keys}


async def test_each_committed_document_is_delivered_once_with_its_figures(
    redis: RedisClient, receiver: Receiver, db: Database, catalogue: Catalogue
) -> None:
    t = catalogue.tenant.id
    cipher = await synced(db, catalogue)
    await _subscribe(redis, receiver, t)
    await Subscriptions(redis).create(  # another tenant's subscription sees none of it
        "someone-else", receiver_url(receiver), ["*"], secret=SECRET, payers=[], imsis=[],
        private_targets=True,
    )  # fmt: skip
    run = await bill_run(db, catalogue, cipher, bill_day=1, on=date(2025, 4, 1))
    assert len(run.numbers) >= 2
    credit = await adjust_invoice(db, t, run.numbers[0], kind="credit", net=100, reason="x")
    debit = await adjust_invoice(db, t, run.numbers[1], kind="debit", net=7, reason="y")
    assert await redis.xlen(tenant_outbox(t)) == 0  # nothing in Redis before the relay
    assert await relay(db, redis, t) == len(run.numbers) + 2
    assert await relay(db, redis, t) == 0  # stamped: relayed once
    await _deliver(redis)

    docs = await _issued(db, t)
    events = receiver.events
    assert receiver.refused == 0 and receiver.requests == len(docs) == len(events)
    by_doc = {e["data"]["document"]: e for e in events}
    assert set(by_doc) == set(docs)
    for key, doc in docs.items():
        e = by_doc[key]
        assert e["type"] == f"{doc.kind}.issued" and e["tenant"] == t
        assert e["id"] == event_id(t, e["type"], str(key))  # from the document: stable
        assert e["subject"] == {"account": doc.buyer.account_id}
        d = e["data"]
        assert (d["number"], d["kind"], d["currency"]) == (doc.doc_id, doc.kind, doc.currency)
        assert (d["net"], d["tax"], d["gross"]) == (doc.net, doc.tax, doc.gross)
        assert (d["issue_date"], d["due_date"]) == (
            doc.issue_date.isoformat(),
            doc.due_date.isoformat(),
        )
        assert d["refers_to"] == doc.refers_to_id
        days = (doc.period_start, doc.period_end)
        assert (d["period_start"], d["period_end"]) == tuple(x and x.isoformat() for x in days)
        assert d["export"].startswith(f"ocs invoice export --number {doc.doc_id} --format ")
    assert by_doc[credit.number]["data"]["number"] == "CN-1"
    assert by_doc[credit.number]["data"]["gross"] == credit.gross < 0  # as stored and printed
    assert by_doc[debit.number]["type"] == "debit_note.issued"
    assert by_doc[run.numbers[0]]["data"]["period_start"] == "2025-03-01"
    assert by_doc[credit.number]["data"]["period_end"] == "2025-03-31"  # its invoice's period


def receiver_url(receiver: Receiver) -> str:
    return f"http://127.0.0.1:{receiver.server_address[1]}/other"


async def test_a_rolled_back_document_has_no_event_and_a_resumed_run_one_each(
    redis: RedisClient, receiver: Receiver, db: Database, catalogue: Catalogue
) -> None:
    t = catalogue.tenant.id
    cipher = await synced(db, catalogue)
    await _subscribe(redis, receiver, t)
    billed: list[str] = []

    async def die_on_the_second(point: str, account: str) -> None:
        billed.append(account)
        if len(billed) == 2:
            raise Stop(account)  # after its invoices and events were written, before commit

    with pytest.raises(Stop) as stopped:
        await bill_run(
            db, catalogue, cipher, bill_day=1, on=date(2025, 4, 1), hook=die_on_the_second
        )
    lost = str(stopped.value)
    async with db.tenant(t) as conn:
        assert await conn.fetchval("SELECT count(*) FROM invoices WHERE account_id = $1", lost) == 0
        rows = await conn.fetchval("SELECT count(*) FROM event_outbox")
        assert rows == await conn.fetchval("SELECT count(*) FROM invoices") > 0
    run = await bill_run(db, catalogue, cipher, bill_day=1, on=date(2025, 4, 1))  # resumes
    assert run.skipped == 1 and run.numbers
    await relay(db, redis, t)
    await _deliver(redis)
    docs = await _issued(db, t)
    assert sorted(e["data"]["document"] for e in receiver.events) == sorted(docs)
    assert lost in {e["subject"]["account"] for e in receiver.events}


async def test_a_relay_stopped_between_redis_and_its_stamp_adds_no_event_twice(
    redis: RedisClient, receiver: Receiver, db: Database, catalogue: Catalogue
) -> None:
    t = catalogue.tenant.id
    cipher = await synced(db, catalogue)
    await _subscribe(redis, receiver, t)
    run = await bill_run(db, catalogue, cipher, bill_day=1, on=date(2025, 4, 1))
    n = len(run.numbers)

    async def die(point: str) -> None:
        raise Stop(point)

    with pytest.raises(Stop):  # the events are in Redis, their stamps rolled back
        await relay(db, redis, t, hook=die)
    assert await redis.xlen(tenant_outbox(t)) == n
    async with db.tenant(t) as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM event_outbox WHERE relayed_at IS NULL") == n
        )
    assert await relay_all(db, redis) == n  # the next relay (the drain's) stamps them ...
    assert await redis.xlen(tenant_outbox(t)) == n  # ... and adds none again
    await _deliver(redis)
    ids = [e["id"] for e in receiver.events]
    assert receiver.requests == n == len(set(ids))  # each event once, never re-sent
    await _deliver(redis)
    assert receiver.requests == n


async def _counts(url: str, tenant: str) -> tuple[int, int]:
    """(documents issued, events waiting in PostgreSQL) of ``tenant``."""
    db = await connect(Settings(database_url=url), migrate_now=False)
    try:
        async with db.tenant(tenant) as conn:
            issued = await conn.fetchval("SELECT count(*) FROM invoices")
            waiting = await conn.fetchval(
                "SELECT count(*) FROM event_outbox WHERE relayed_at IS NULL"
            )
        return int(issued), int(waiting)
    finally:
        await db.close()


def test_the_commands_relay_and_a_redis_outage_leaves_the_events_to_the_drain(
    redis_url: str, pg_url: str, tmp_path: Path, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ocs billrun`` relays what it issued; with Redis unreachable it still issues (exit
    0), warns, and ``ocs cdr drain`` relays the events later, once."""
    folder = catalogue_folder(tmp_path / "cat", tenant)
    sync = SyncRedis.from_url(redis_url)
    sync.flushdb()

    async def subscribe() -> None:  # the tenant is then one the drain relays for
        client = client_for_url(redis_url)
        try:
            await Subscriptions(client).create(
                tenant, "http://127.0.0.1:9/hook", TYPES, secret=SECRET, payers=[], imsis=[],
                private_targets=True,
            )  # fmt: skip
        finally:
            await client.aclose()

    asyncio.run(subscribe())
    down = Settings(database_url=pg_url, data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
    up = Settings(database_url=pg_url, data_dir=tmp_path, redis_url=redis_url)
    out = tmp_path / "invoices"
    assert main_billrun(down, cycle=1, on=date(2025, 4, 1), catalog=folder, out_dir=out) == 0
    assert "document events not relayed yet" in capsys.readouterr().err
    issued, waiting = asyncio.run(_counts(pg_url, tenant))
    assert issued == waiting > 0
    assert sync.xlen(tenant_outbox(tenant)) == 0
    assert main_drain(up) == 0
    assert f"relayed {issued} document events" in capsys.readouterr().out
    assert main_drain(up) == 0  # nothing left: nothing twice
    assert sync.xlen(tenant_outbox(tenant)) == issued
    assert (
        main_invoice_adjust(
            up, number="1", kind="credit", amount=100, reason="x", catalog=folder, out_dir=out
        )
        == 0
    )
    total, waiting = asyncio.run(_counts(pg_url, tenant))
    assert (total, waiting) == (issued + 1, 0)  # relayed by the command itself
    assert sync.xlen(tenant_outbox(tenant)) == total
    sync.close()
