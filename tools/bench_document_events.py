"""What the events of issued documents cost (docs/webhooks.md, "Events of documents"):
issuing a document (``insert_invoice``: number, lines, party snapshots) with its
``event_outbox`` row against without it, alternating in one run on one database, and the
relay of those rows to Redis.

    .venv/bin/python tools/bench_document_events.py --database-url postgresql://.../scratch \\
        --redis-url redis://127.0.0.1:6379/15 [--documents 300] [--rounds 5]

The database and the Redis DB are scratch ones: the demo tenant's documents are written
there (and its outbox stream in Redis is deleted at the end). Prints JSON: milliseconds per
document with and without the event (median of the rounds), their ratio per round, the
relay's events per second, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import tempfile
import time
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from ocs.config import demo_catalog
from ocs.events.keys import relayed_key, tenant_outbox
from ocs.offline import billrun
from ocs.offline.charges import DraftInvoice, Line
from ocs.offline.crypto import tenant_cipher
from ocs.offline.db import Database, connect, enter_tenant
from ocs.offline.event_relay import relay
from ocs.offline.sync import sync_catalogue, upsert_tenant
from ocs.offline.terms import DEMO_TERMS, load_terms
from ocs.rating.loader import load_catalogue
from ocs.redis_client import client_for_url

MASTER = hashlib.sha256(b"bench_document_events").digest()  # a scratch database's key


def _draft() -> DraftInvoice:
    lines = [
        Line("tenant:demo", "EUR", "usage", f"Data, zone {i}", "telecom", Decimal(1000), "bytes",
             500 + i, accounting_group="iot", tax_rate=Decimal(19), tax=95)
        for i in range(5)
    ]  # fmt: skip
    return DraftInvoice("acme-iot", "tenant:demo", "EUR", "retail", "standard", lines)


async def _issue(db: Database, tenant: str, n: int) -> float:
    draft = _draft()
    started = time.perf_counter()
    for _ in range(n):
        async with db.tenant(tenant) as conn:
            await billrun.insert_invoice(conn, tenant, draft)
    return (time.perf_counter() - started) * 1000 / n


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = SimpleNamespace(database_url=args.database_url, data_dir=tempfile.mkdtemp())
    db = await connect(settings)
    redis = client_for_url(args.redis_url, timeout=30.0)
    catalogue = load_catalogue(demo_catalog())
    tenant = catalogue.tenant.id
    async with db.pool.acquire() as conn, conn.transaction():
        await enter_tenant(conn, tenant)
        await upsert_tenant(conn, tenant, "", "DE", "Europe/Berlin", "EUR")
        cipher = await tenant_cipher(conn, tenant, MASTER)
        await sync_catalogue(conn, catalogue, cipher, load_terms(DEMO_TERMS))
    real = billrun.record_document_event

    async def none(*_: Any) -> str:
        return ""

    with_ms: list[float] = []
    without_ms: list[float] = []
    relay_rates: list[float] = []
    try:
        await _issue(db, tenant, 20)  # warm up
        for r in range(args.rounds):
            order = ("with", "without") if r % 2 == 0 else ("without", "with")
            for mode in order:
                billrun.record_document_event = real if mode == "with" else none  # type: ignore[assignment]
                ms = await _issue(db, tenant, args.documents)
                (with_ms if mode == "with" else without_ms).append(ms)
            started = time.perf_counter()
            relayed = await relay(db, redis, tenant)
            relay_rates.append(relayed / (time.perf_counter() - started))
    finally:
        billrun.record_document_event = real  # type: ignore[assignment]
        await redis.delete(tenant_outbox(tenant), relayed_key(tenant))
        await redis.aclose()
        await db.close()
    ratios = [a / b for a, b in zip(with_ms, without_ms, strict=True)]
    return {
        "documents_per_round": args.documents,
        "rounds": args.rounds,
        "ms_per_document_with_event": round(statistics.median(with_ms), 3),
        "ms_per_document_without": round(statistics.median(without_ms), 3),
        "ratio_per_round": [round(r, 3) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 3),
        "relay_events_per_s": round(statistics.median(relay_rates)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a scratch PostgreSQL database")
    parser.add_argument("--redis-url", required=True, help="a scratch Redis DB")
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=1))
