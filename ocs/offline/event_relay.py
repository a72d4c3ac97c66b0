"""The events of issued documents (docs/webhooks.md): ``invoice.issued``,
``credit_note.issued`` and ``debit_note.issued``.

A document is issued in one PostgreSQL transaction (``billrun.insert_invoice``, for bill
runs and notes alike); :func:`record_document_event` writes its event into the table
``event_outbox`` in that same transaction, so the event exists if and only if the document
was committed: a run that rolls back (a crash, a concurrent run of the same key) leaves
neither. :func:`relay` then copies pending rows into the tenant's Redis outbox, where the
webhook dispatcher of ``ocs serve`` delivers them like every other event, and stamps them
relayed. It runs after every bill run and note (``ocs billrun``, ``ocs invoice adjust``) and
on every pass of ``ocs cdr drain`` (so ``--follow`` relays what a command that died after its
commit left), one relay at a time per row (``FOR UPDATE SKIP LOCKED``).

A relay that stops half-way loses nothing (the rows stay pending until stamped) and adds no
event twice: the event id is derived from the document (tenant, type, document key), and the
Redis side adds an id it has already relayed only once (``ocs.events.outbox.relay_events``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final
from zoneinfo import ZoneInfo

from ocs.events.keys import TENANTS
from ocs.events.outbox import event_fields, relay_events
from ocs.offline.db import Connection, Database
from ocs.offline.einvoice.document import (
    DocumentError,
    Party,
    doc_ref,
    document_dates,
    load_document,
)
from ocs.provisioning.keys import IN_FORCE

ISSUED: Final = {
    "invoice": "invoice.issued",
    "credit_note": "credit_note.issued",
    "debit_note": "debit_note.issued",
}
BATCH: Final = 500  # rows relayed per transaction
KEEP_MS: Final = 7 * 86_400_000  # how long Redis remembers a relayed id (webhook_retention)
FORMATS: Final = "html|pdf|ubl|cii|facturx"
HREF: Final = "/v1/invoices"  # the HTTP API's route of a document (ocs.api.invoices)


async def document_summary(conn: Connection, number: int) -> dict[str, Any]:
    """What the event of document ``number`` (of ``conn``'s tenant) says, and what
    ``GET /v1/invoices/{number}`` answers: the printed number, totals and dates the forms
    print (``document_dates``, as ``load_document``), read in one query (a bill run issues
    many). ``time_ms`` (when it was issued) and ``type`` are for the event."""
    inv = await conn.fetchrow(
        "SELECT i.*, (extract(epoch FROM i.issued_at) * 1000)::bigint AS issued_ms,"
        " t.time_zone, r.kind AS ref_kind, r.series_number AS ref_series,"
        " r.period_start AS ref_start, r.period_end AS ref_end FROM invoices i"
        " LEFT JOIN tenants t USING (tenant_id)"
        " LEFT JOIN invoices r ON r.tenant_id = i.tenant_id AND r.number = i.refers_to"
        " WHERE i.number = $1",
        number,
    )
    if inv is None:
        raise DocumentError(f"invoice {number}: not found")
    if inv["seller"]:  # the snapshot every document issued since 0009 has
        seller = Party.from_json(inv["seller"])
    else:
        seller = (await load_document(conn, number)).seller
    zone = ZoneInfo(inv["time_zone"] or "UTC")
    period = (inv["period_start"], inv["period_end"])
    if period[0] is None and inv["ref_kind"] is not None:  # a note: its invoice's period
        period = (inv["ref_start"], inv["ref_end"])
    issued, due, start, end = document_dates(inv, zone, seller.payment_days, period)
    kind, issuer = inv["kind"], str(inv["issuer"])
    printed = doc_ref(kind, inv["series_number"], number)
    refers: str | None = None  # the corrected invoice's printed number (a note)
    if inv["refers_to"] is not None:
        refers = str(inv["refers_to"])
        if inv["ref_kind"] is not None:
            refers = doc_ref(inv["ref_kind"], inv["ref_series"], inv["refers_to"])
    return {
        "type": ISSUED[kind],
        "time_ms": int(inv["issued_ms"]),
        "number": printed,
        "kind": kind,
        "document": number,
        "account": inv["account_id"],
        "seller": None if issuer.startswith("tenant:") else issuer,
        "currency": inv["currency"],
        "net": int(inv["net"]),
        "tax": int(inv["tax"]),
        "gross": int(inv["gross"]),
        "issue_date": issued.isoformat(),
        "due_date": due.isoformat(),
        "period_start": start.isoformat() if start else None,
        "period_end": end.isoformat() if end else None,
        "refers_to": refers,
        "bill_run": inv["run_id"],
        "href": f"{HREF}/{printed}",
        "export": f"ocs invoice export --number {printed} --format {FORMATS}",
    }


async def record_document_event(conn: Connection, tenant: str, number: int) -> str:
    """Write the event of document ``number`` (just inserted, in ``conn``'s transaction)
    into ``event_outbox``; returns its id. Its data is :func:`document_summary`."""
    data = await document_summary(conn, number)
    etype, issued_ms = data.pop("type"), data.pop("time_ms")
    fields = event_fields(tenant, etype, str(number), {"account": data["account"]}, data, issued_ms)
    await conn.execute(
        "INSERT INTO event_outbox (tenant_id, event_id, type, subject, data, time_ms)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        tenant,
        fields["id"],
        etype,
        fields["subject"],
        fields["data"],
        issued_ms,
    )
    return fields["id"]


Hook = Callable[[str], Awaitable[None]]


async def relay(
    db: Database,
    redis: Any,
    tenant: str,
    *,
    keep_ms: int = KEEP_MS,
    batch: int = BATCH,
    hook: Hook | None = None,
) -> int:
    """Relay ``tenant``'s pending document events to its Redis outbox; returns how many
    rows were stamped. ``hook("relayed")`` is awaited between the Redis write and the
    stamp's commit (tests stop a relay there)."""
    done = 0
    while True:
        async with db.tenant(tenant) as conn:
            rows = await conn.fetch(
                "SELECT event_id, type, subject, data, time_ms FROM event_outbox"
                " WHERE relayed_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
                batch,
            )
            if not rows:
                return done
            events = [
                {
                    "id": r["event_id"],
                    "tenant": tenant,
                    "type": r["type"],
                    "subject": r["subject"],
                    "time": str(r["time_ms"]),
                    "data": r["data"],
                }
                for r in rows
            ]
            await relay_events(redis, tenant, events, int(time.time() * 1000), keep_ms)
            if hook is not None:
                await hook("relayed")
            await conn.execute(
                "UPDATE event_outbox SET relayed_at = now() WHERE event_id = ANY($1::text[])",
                [r["event_id"] for r in rows],
            )
        done += len(rows)
        if len(rows) < batch:
            return done


async def relay_all(db: Database, redis: Any, *, keep_ms: int = KEEP_MS) -> int:
    """:func:`relay` for every tenant in force or with webhook subscriptions."""
    tenants = {_s(t) for t in await redis.hkeys(IN_FORCE)}
    tenants |= {_s(t) for t in await redis.smembers(TENANTS)}
    total = 0
    for tenant in sorted(tenants):
        total += await relay(db, redis, tenant, keep_ms=keep_ms)
    return total


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
