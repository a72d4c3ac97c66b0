"""``GET /v1/invoices/{number}``: the summary of an issued document (what its event says)
or one of its forms, read in the token's tenant only; the ``href`` of a document's event."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

from lxml import etree

from ocs.api.auth import Scope, create_token
from ocs.config import Settings
from ocs.offline.adjust import adjust_invoice
from ocs.offline.billrun import bill_run
from ocs.offline.crypto import master_key, tenant_cipher
from ocs.offline.db import connect, enter_tenant
from ocs.offline.einvoice.ubl import CBC
from ocs.offline.sync import sync_catalogue, upsert_tenant
from ocs.offline.terms import DEMO_TERMS, load_terms
from ocs.rating.loader import load_catalogue
from tests.api.conftest import Api
from tests.offline.conftest import catalogue_folder


async def _issue(demo: Api, settings: Settings, tmp_path: Path) -> tuple[str, int]:
    """A tenant of its own (the session shares one database, and each test its own master
    key): its cycle 1 billed, its first invoice credited (CN-1), a read token for it as
    ``who="inv"``. Returns (tenant, invoices)."""
    tid = "inv" + uuid.uuid4().hex[:8]
    catalogue = load_catalogue(catalogue_folder(tmp_path / "cat", tid))
    db = await connect(settings)
    try:
        async with db.pool.acquire() as conn, conn.transaction():
            await enter_tenant(conn, tid)
            await upsert_tenant(conn, tid, "", "DE", "Europe/Berlin", "EUR")
            cipher = await tenant_cipher(conn, tid, master_key(settings))
            await sync_catalogue(conn, catalogue, cipher, load_terms(DEMO_TERMS))
        run = await bill_run(db, catalogue, cipher, bill_day=1, on=date(2025, 4, 1))
        await adjust_invoice(db, tid, run.numbers[0], kind="credit", net=100, reason="x")
        async with db.tenant(tid) as conn:
            data = await conn.fetchval(
                "SELECT data FROM event_outbox WHERE type = 'credit_note.issued'"
            )
        assert '"href":"/v1/invoices/CN-1"' in data  # what the event points to
    finally:
        await db.close()
    demo.tokens["inv"] = await create_token(demo.redis, tid, Scope.READ)
    return tid, len(run.numbers)


async def test_a_document_by_its_printed_number_in_each_form(
    demo: Api, settings: Settings, tmp_path: Path
) -> None:
    tid, _ = await _issue(demo, settings, tmp_path)
    note = "CN-1"
    r = await demo.request("GET", "/v1/invoices/1", who="inv")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["number"], body["kind"], body["account"], body["currency"]) == (
        "1", "invoice", "acme-iot", "EUR",
    )  # fmt: skip
    assert body["gross"] == body["net"] + body["tax"] and body["href"] == "/v1/invoices/1"
    assert body["period_start"] == "2025-03-01" and body["due_date"] > body["issue_date"]
    r = await demo.request("GET", f"/v1/invoices/{note.lower()}", who="inv")
    assert r.status_code == 200 and r.json()["refers_to"] == "1" and r.json()["net"] == -100
    r = await demo.request("GET", "/v1/invoices/1", who="inv", params={"format": "ubl"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    assert etree.fromstring(r.content).xpath("/*/cbc:ID/text()", namespaces={"cbc": CBC}) == ["1"]
    assert f'filename="{tid}-1-ubl.xml"' in r.headers["content-disposition"]
    r = await demo.request("GET", f"/v1/invoices/{note}", who="inv", params={"format": "pdf"})
    assert r.status_code == 200 and r.content.startswith(b"%PDF-")
    r = await demo.request("GET", "/v1/invoices/1", who="inv", params={"format": "html"})
    assert r.status_code == 200 and "acme-iot" in r.text


async def test_unknown_foreign_and_malformed_numbers(
    demo: Api, settings: Settings, tmp_path: Path
) -> None:
    _, invoices = await _issue(demo, settings, tmp_path)
    for path, who, status in (
        ("/v1/invoices/1", "admin", 404),  # tenant demo's token: as if it did not exist
        ("/v1/invoices/1", "other", 404),
        (f"/v1/invoices/{invoices + 1}", "read", 404),
        ("/v1/invoices/CN-99", "read", 404),
        ("/v1/invoices/XN-1", "read", 422),
        ("/v1/invoices/1?format=docx", "read", 422),
    ):
        r = await demo.request("GET", path, who=who)
        assert r.status_code == status, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await demo.client.get("/v1/invoices/1")  # no token
    assert r.status_code == 401
