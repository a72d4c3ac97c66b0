"""The demo customer's invoice rendered to HTML and PDF and read back; accounting export."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pypdf import PdfReader
from redis.asyncio import Redis

from ocs.offline.billrun import bill_run
from ocs.offline.db import Database
from ocs.offline.drain import Drainer
from ocs.offline.render import (
    invoice_document,
    journal,
    journal_csv,
    journal_json,
    render_html,
    render_pdf,
)
from ocs.rating import ServiceKind, UsageContext
from ocs.rating.catalogue import Catalogue
from tests.offline.billing_fixture import record
from tests.offline.conftest import MASTER, synced


async def test_demo_customer_pdf_invoice(
    redis: Redis, db: Database, catalogue: Catalogue, tmp_path: Path
) -> None:
    t = catalogue.tenant.id
    cipher = await synced(db, catalogue)
    roaming = UsageContext(
        tenant=t,
        imsi="262010000000007",
        event_time=datetime.fromisoformat("2025-03-12T09:00:00+01:00"),
        service=ServiceKind.DATA,
        quantity=20_000_000,
        apn="iot.demo",
        rating_group=10,
        mcc="208",
        mnc="01",
    )
    await record(redis, catalogue, [(roaming, "acme;1:1:10")])
    await Drainer(redis, db, MASTER).run()
    run = await bill_run(db, catalogue, cipher, account="acme-iot", on=date(2025, 4, 1))
    assert run.numbers == [1]
    inv = run.invoices[0]
    # fees: 2,001 iot-pool twins x sim-fee 1.00 = 2,001.00; 1,000 sensor twins x 4 sensors
    # x 0.25 (12 measurements/h) = 1,000.00; static pool 49.00; EU roaming 20 MB x 0.5 ct
    # = 0.10. Net 3,050.10; VAT 19%: 380.19 + 190.00 + 9.31 + 0.02 = 579.52
    assert (inv.net, inv.tax, inv.gross) == (305_010, 57_952, 362_962)
    async with db.tenant(t) as conn:
        doc = await invoice_document(conn, 1)
        issued = await conn.fetchval("SELECT issued_at FROM invoices WHERE number = 1")
    local_issue = issued.astimezone(ZoneInfo("Europe/Berlin")).date()
    html = render_html(doc)  # acme-iot uses the "detailed" template (demo terms)
    assert "Accounting group: iot-enterprise" in html
    pdf_path = tmp_path / "invoice-1.pdf"
    pdf_path.write_bytes(render_pdf(html))
    text = " ".join(page.extract_text() for page in PdfReader(pdf_path).pages)
    text = " ".join(text.split())
    for expected in (
        "Invoice 1",
        "Demo IoT Operator GmbH",  # seller: legal name, address, VAT ID (demo terms)
        "Friedrichstrasse 100",
        "10117 Berlin",
        "VAT ID: DE123456789",
        "Billing team +49 30 1234567",  # seller contact
        "ACME IoT GmbH",  # buyer
        "70565 Stuttgart",
        "VAT ID: DE987654321",
        "Customer account: acme-iot",
        "Your reference / PO: PO-2025-0042",
        "Period: 2025-03-01 to 2025-03-31",  # local dates (Europe/Berlin), not UTC
        f"Issue date: {local_issue}",
        f"Due date: {local_issue + timedelta(days=14)}",
        "Monthly fee, plan IoT pooled data: 1,001 SIMs (counted per SIM twin: 2,001)",
        "2,001 month 1.00 2,001.00 S 19",  # quantity, unit, unit price, net, category, rate
        "Monthly fee per sensors, plan IoT pooled data: 1,000 SIMs",
        "1,000.00",
        "Pool acme-pool: 10,000,000,000 units included",
        "49.00",
        "Data, zone EU roaming, plan IoT pooled data",
        "20 MB 0.005 0.10 S 19",  # 20,000,000 bytes at 0.5 ct per MB
        "S (standard rate) 19 3,050.10 EUR 579.52 EUR",  # the VAT breakdown
        "Net total: 3,050.10 EUR",
        "VAT total: 579.52 EUR",
        "Total due: 3,629.62 EUR",
        "IBAN DE02120300000000202051",
        "charged once for each twin",
    ):
        assert expected in text, expected
    compact = render_html(doc, "compact")
    assert "(counted per SIM twin: 2,001): 2,001 month x 1.00 = 2,001.00 EUR" in compact


async def test_accounting_export_csv_and_json(
    redis: Redis, db: Database, tmp_path: Path, tenant: str
) -> None:
    from ocs.offline.adjust import adjust_invoice
    from tests.offline.billing_fixture import billing_catalogue, scenario

    cat = billing_catalogue(tmp_path / "c", tenant)
    cipher = await scenario(redis, db, cat)
    await bill_run(db, cat, cipher, bill_day=10, on=date(2025, 4, 10))
    await adjust_invoice(db, tenant, 1, kind="credit", net=1000, reason="goodwill")
    async with db.tenant(tenant) as conn:
        entries = await journal(conn)
    rows = list(csv.DictReader(io.StringIO(journal_csv(entries))))
    assert {r["accounting_group"] for r in rows} == {"b2b"}
    totals = json.loads(journal_json(entries))["totals"]
    # EUR: cust 6911 + ngo 1200 - credit 1000; tax 1284 + 0 - 186
    assert totals == {"b2b/EUR": {"net": 7111, "tax": 1098}, "b2b/USD": {"net": 1000, "tax": 190}}


async def test_german_account_gets_german_line_words(db: Database, catalogue: Catalogue) -> None:
    """acme-iot switched to German before the run: its fee and pool lines are worded in
    German with German digit grouping, in the stored lines and the rendered document."""
    cipher = await synced(db, catalogue)
    async with db.tenant(catalogue.tenant.id) as conn:
        await conn.execute("UPDATE accounts SET language = 'de' WHERE account_id = 'acme-iot'")
    run = await bill_run(db, catalogue, cipher, account="acme-iot", on=date(2025, 4, 1))
    texts = [ln.description for ln in run.invoices[0].lines]
    assert texts == [
        "Grundgebühr Tarif IoT pooled data: 1.001 SIMs (je SIM-Twin gezählt: 2.001)",
        "Grundgebühr je sensors Tarif IoT pooled data: 1.000 SIMs (je SIM-Twin gezählt: 1.000)",
        "Pool acme-pool: 10.000.000.000 Einheiten inklusive",
    ]
    async with db.tenant(catalogue.tenant.id) as conn:
        html = render_html(await invoice_document(conn, run.numbers[0]))
    assert all(t in html for t in texts)
    assert "je Twin (Dienstprofil)" in html  # the per-twin note, in German
