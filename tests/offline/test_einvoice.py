"""Every document of a bill run over the demo data as an EN 16931 e-invoice: UBL 2.1 and
CII pass the official XSD and the EN 16931 Schematron with no fatal assertion, the Factur-X
PDF carries exactly the CII, and all forms state the same totals (to the cent)."""

from __future__ import annotations

import io
import json
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree
from pypdf import PdfReader
from redis.asyncio import Redis

from ocs.offline.adjust import adjust_invoice
from ocs.offline.billrun import bill_run, insert_invoice
from ocs.offline.charges import DraftInvoice
from ocs.offline.db import Database
from ocs.offline.drain import Drainer
from ocs.offline.einvoice.cii import RAM, to_cii
from ocs.offline.einvoice.document import (
    Document,
    DocumentError,
    load_document,
    resolve_document,
)
from ocs.offline.einvoice.facturx import embedded_cii, to_facturx
from ocs.offline.einvoice.ubl import CAC, CBC, to_ubl
from ocs.offline.render import invoice_document, pdf_font_dir, render_html, render_pdf
from ocs.rating import ServiceKind, UsageContext
from ocs.rating.catalogue import Catalogue
from tests.offline.billing_fixture import billing_catalogue, record, scenario
from tests.offline.conftest import MASTER, synced
from tests.offline.einvoice_check import (
    fired_rules,
    need_specs,
    pdfa_problems,
    schematron_failures,
    xsd_errors,
)


def _usage(imsi: str, at: str, apn: str, mcc: str = "262") -> UsageContext:
    return UsageContext(
        tenant="",
        imsi=imsi,
        event_time=datetime.fromisoformat(at),
        service=ServiceKind.DATA,
        quantity=20_000_000,
        apn=apn,
        rating_group=10,
        mcc=mcc,
        mnc="01",
    )


async def _demo_documents(redis: Redis, db: Database, catalogue: Catalogue) -> list[Document]:
    """acme-iot (DE, 19 %), intl-org (DE, exempt), connect-reseller (AT, reverse charge)
    and farm-co (AT, 20 %, retail from the reseller) billed; a credit note against
    acme-iot's invoice, a debit note against connect-reseller's (reverse charge)."""
    t = catalogue.tenant.id
    cipher = await synced(db, catalogue)
    acme = _usage("262010000000007", "2025-03-12T09:00:00+01:00", "iot.demo", "208")
    farm = _usage("262010000100000", "2025-03-20T10:00:00+01:00", "internet.demo")
    await record(
        redis,
        catalogue,
        [(_with_tenant(acme, t), "acme;1:1:10"), (_with_tenant(farm, t), "farm;1:1:10")],
    )
    await Drainer(redis, db, MASTER).run()
    numbers = (await bill_run(db, catalogue, cipher, bill_day=1, on=date(2025, 4, 1))).numbers
    numbers += (await bill_run(db, catalogue, cipher, bill_day=5, on=date(2025, 4, 5))).numbers
    note = await adjust_invoice(db, t, numbers[0], kind="credit", net=10_000, reason="goodwill")
    numbers.append(note.number)
    async with db.tenant(t) as conn:
        reseller = await conn.fetchval(
            "SELECT number FROM invoices WHERE account_id = 'connect-reseller'"
        )
    debit = await adjust_invoice(db, t, reseller, kind="debit", net=7, reason="late fee")
    numbers.append(debit.number)
    async with db.tenant(t) as conn:
        return [await load_document(conn, n) for n in numbers]


def _with_tenant(ctx: UsageContext, tenant: str) -> UsageContext:
    from dataclasses import replace

    return replace(ctx, tenant=tenant)


def _amount(root: etree._Element, path: str, ns: dict[str, str]) -> int:
    (text,) = root.xpath(f"{path}/text()", namespaces=ns)
    return int(Decimal(text) * 100)


async def test_demo_documents_validate_and_agree(
    redis: Redis, db: Database, catalogue: Catalogue
) -> None:
    need_specs()
    docs = await _demo_documents(redis, db, catalogue)
    kinds = {(d.buyer.account_id, d.kind) for d in docs}
    assert kinds == {
        ("acme-iot", "invoice"),
        ("intl-org", "invoice"),
        ("connect-reseller", "invoice"),
        ("farm-co", "invoice"),
        ("acme-iot", "credit_note"),
        ("connect-reseller", "debit_note"),
    }
    categories = {b.category for d in docs for b in d.breakdown}
    assert categories == {"S", "AE", "E"}
    for doc in docs:
        ubl, cii = to_ubl(doc), to_cii(doc)
        where = f"document {doc.doc_id} ({doc.kind}, {doc.buyer.account_id})"
        assert xsd_errors(ubl, "ubl") == [], where
        assert xsd_errors(cii, "cii") == [], where
        assert schematron_failures(ubl, "ubl") == [], where
        assert schematron_failures(cii, "cii") == [], where
        assert fired_rules(ubl, "ubl") > 10 and fired_rules(cii, "cii") > 10
        # the four forms agree to the cent: stored totals, UBL, CII, and the PDF's CII
        sign = doc.sign
        u = etree.fromstring(ubl)
        uns = {"cac": CAC, "cbc": CBC}
        assert _amount(u, "//cac:LegalMonetaryTotal/cbc:TaxExclusiveAmount", uns) == sign * doc.net
        assert _amount(u, "//cac:TaxTotal/cbc:TaxAmount", uns) == sign * doc.tax
        assert _amount(u, "//cac:LegalMonetaryTotal/cbc:PayableAmount", uns) == sign * doc.gross
        c = etree.fromstring(cii)
        cns = {"ram": RAM}
        total = "//ram:SpecifiedTradeSettlementHeaderMonetarySummation"
        assert _amount(c, f"{total}/ram:TaxBasisTotalAmount", cns) == sign * doc.net
        assert _amount(c, f"{total}/ram:TaxTotalAmount", cns) == sign * doc.tax
        assert _amount(c, f"{total}/ram:DuePayableAmount", cns) == sign * doc.gross
        async with db.tenant(catalogue.tenant.id) as conn:
            html = render_html(await invoice_document(conn, doc.number))
        assert f"{doc.gross // 100:,}.{doc.gross % 100:02d}".replace("-", "") in html
        pdf = to_facturx(render_pdf(html), cii, title=f"{doc.kind} {doc.number}", author="demo")
        assert embedded_cii(pdf) == cii


async def test_reverse_charge_invoice_carries_category_vat_ids_and_note(
    redis: Redis, db: Database, catalogue: Catalogue
) -> None:
    docs = await _demo_documents(redis, db, catalogue)
    (rc,) = [d for d in docs if d.buyer.account_id == "connect-reseller" and d.kind == "invoice"]
    assert [b.category for b in rc.breakdown] == ["AE"]
    assert rc.tax == 0 and rc.buyer.vat_id == "ATU12345678"
    assert rc.seller.vat_id == "DE123456789"
    ubl = etree.fromstring(to_ubl(rc))
    ns = {"cac": CAC, "cbc": CBC}
    assert ubl.xpath("//cac:AccountingCustomerParty//cbc:CompanyID/text()", namespaces=ns) == [
        "ATU12345678"
    ]
    (reason,) = ubl.xpath("//cac:TaxSubtotal//cbc:TaxExemptionReason/text()", namespaces=ns)
    assert "Reverse charge" in reason and "Article 196" in reason
    async with db.tenant(catalogue.tenant.id) as conn:
        html = render_html(await invoice_document(conn, rc.number))
    assert "Article 196" in html and "ATU12345678" in html


async def test_exempt_invoice_and_credit_note_documents(
    redis: Redis, db: Database, catalogue: Catalogue
) -> None:
    docs = await _demo_documents(redis, db, catalogue)
    (ex,) = [d for d in docs if d.buyer.account_id == "intl-org"]
    assert [(b.category, b.tax) for b in ex.breakdown] == [("E", 0)]
    assert "Article 151" in ex.breakdown[0].note
    (farm,) = [d for d in docs if d.buyer.account_id == "farm-co"]
    assert [(b.category, b.rate) for b in farm.breakdown] == [("S", Decimal(20))]
    assert farm.seller.name == "Connect Reseller AG" and farm.seller.iban.startswith("AT")
    (note,) = [d for d in docs if d.kind == "credit_note"]
    (inv,) = [d for d in docs if d.number == note.refers_to]
    assert note.net == -10_000 and note.tax == -1_900 and note.currency == "EUR"
    assert note.refers_to_date == inv.issue_date
    ubl = etree.fromstring(to_ubl(note))
    ns = {"cac": CAC, "cbc": CBC}
    assert etree.QName(ubl).localname == "CreditNote"
    assert ubl.xpath("//cac:BillingReference//cbc:ID/text()", namespaces=ns) == [inv.doc_id]
    async with db.tenant(catalogue.tenant.id) as conn:
        german = render_html(await invoice_document(conn, farm.number))
        credit = render_html(await invoice_document(conn, note.number))
    assert "Rechnung" in german and "Leistungszeitraum" in german and "USt-IdNr." in german
    # printed in magnitudes, as the UBL CreditNote and the CII 381 send it (no "-119.00")
    assert f"Corrects invoice {inv.doc_id}" in credit and "Total credited: 119.00 EUR" in credit
    assert re.findall(r"(?<![0-9A-Za-z])-[0-9]", credit) == []  # no amount, no quantity


async def test_notes_are_numbered_in_series_of_their_own(
    redis: Redis, db: Database, catalogue: Catalogue
) -> None:
    docs = await _demo_documents(redis, db, catalogue)
    t = catalogue.tenant.id
    (credit,) = [d for d in docs if d.kind == "credit_note"]
    (debit,) = [d for d in docs if d.kind == "debit_note"]
    assert (credit.doc_id, debit.doc_id) == ("CN-1", "DN-1")
    invoice = credit.refers_to
    assert invoice is not None
    more = [
        await adjust_invoice(db, t, invoice, kind="credit", net=1, reason=f"r{i}") for i in range(3)
    ]
    assert [n.doc_id for n in more] == ["CN-2", "CN-3", "CN-4"]  # gapless, per tenant
    async with db.tenant(t) as conn:
        doc = await load_document(conn, more[-1].number)
        html = render_html(await invoice_document(conn, more[-1].number))
    ns = {"cac": CAC, "cbc": CBC}
    assert etree.fromstring(to_ubl(doc)).xpath("/*/cbc:ID/text()", namespaces=ns) == ["CN-4"]
    c = etree.fromstring(to_cii(doc))
    assert c.xpath(
        "//*[local-name()='ExchangedDocument']/ram:ID/text()", namespaces={"ram": RAM}
    ) == ["CN-4"]
    assert "Credit note CN-4" in html and f"(document {more[-1].number})" not in html


async def test_invoice_numbers_stay_gapless_when_notes_are_issued(
    redis: Redis, db: Database, catalogue: Catalogue
) -> None:
    """Notes do not take numbers out of the invoices' series (0011): the next invoice after
    any number of notes is the last invoice's number + 1, and is found by that number."""
    docs = await _demo_documents(redis, db, catalogue)
    t = catalogue.tenant.id
    invoices = [d for d in docs if d.kind == "invoice"]
    printed = sorted(int(d.doc_id) for d in invoices)
    assert printed == list(range(1, len(invoices) + 1))
    assert any(d.kind != "invoice" for d in docs)  # notes were issued in between
    last = invoices[-1]
    await adjust_invoice(db, t, last.number, kind="credit", net=1, reason="between")
    draft = DraftInvoice(last.buyer.account_id, "tenant:" + t, "EUR", "retail", "standard")
    async with db.tenant(t) as conn, conn.transaction():
        key = await insert_invoice(conn, t, draft)
    async with db.tenant(t) as conn:
        assert (await load_document(conn, key)).doc_id == str(len(invoices) + 1)
        assert await resolve_document(conn, str(len(invoices) + 1)) == key
        assert await resolve_document(conn, "cn-1", kind="credit_note") != key
        for bad, why in (("X-1", "not a document number"), ("CN-1", "not an invoice")):
            with pytest.raises(DocumentError, match=why):
                await resolve_document(conn, bad, kind="invoice")
        with pytest.raises(DocumentError, match="invoice 999: not found"):
            await resolve_document(conn, "999")


async def test_invoice_data_set_on_the_catalogue_goes_over_the_terms_file(
    db: Database, catalogue: Catalogue
) -> None:
    """An account's and the tenant's own ``invoice`` data (folder, API, CRM import) is what
    the documents carry, field by field over the billing terms file; unset fields keep the
    terms' values."""
    from dataclasses import replace

    from ocs.rating.models import InvoiceParty

    acme = catalogue.accounts["acme-iot"].model_copy(
        update={"invoice": InvoiceParty(vat_id="DE111111111", buyer_reference="PO-42")}
    )
    tenant = catalogue.tenant.model_copy(
        update={"invoice": InvoiceParty(iban="DE89370400440532013000", city="Hamburg")}
    )
    reseller = catalogue.accounts["connect-reseller"].model_copy(
        update={"invoice": InvoiceParty(contact_name="Desk 2", payment_days=21)}
    )
    accounts = {**catalogue.accounts, "acme-iot": acme, "connect-reseller": reseller}
    changed = replace(catalogue, tenant=tenant, accounts=accounts)
    await synced(db, changed)
    async with db.tenant(catalogue.tenant.id) as conn:
        buyer = json.loads(
            await conn.fetchval("SELECT party FROM accounts WHERE account_id = 'acme-iot'")
        )
        seller = json.loads(
            await conn.fetchval(
                "SELECT party FROM tenants WHERE tenant_id = $1", catalogue.tenant.id
            )
        )
        sells = json.loads(
            await conn.fetchval("SELECT party FROM accounts WHERE account_id = 'connect-reseller'")
        )
    assert (buyer["vat_id"], buyer["buyer_reference"]) == ("DE111111111", "PO-42")
    assert buyer["city"] == "Stuttgart"  # from the terms file
    assert (seller["iban"], seller["city"]) == ("DE89370400440532013000", "Hamburg")
    assert seller["vat_id"] == "DE123456789"  # from the terms file
    # a reseller sells to its own customers: its contact and payment terms from the catalogue
    assert (sells["contact_name"], sells["payment_days"]) == ("Desk 2", 21)
    assert sells["iban"] == "AT611904300234573201"  # from the terms file


async def test_facturx_pdf_is_pdfa3_with_embedded_fonts(
    redis: Redis, db: Database, catalogue: Catalogue
) -> None:
    if pdf_font_dir() is None:
        pytest.skip("DejaVu Sans not installed (fonts-dejavu-core): PDFs use core fonts")
    docs = await _demo_documents(redis, db, catalogue)
    from ocs.offline.einvoice.forms import document_forms

    async with db.tenant(catalogue.tenant.id) as conn:
        for doc in docs:
            forms = await document_forms(conn, doc.number, ("pdf", "cii", "facturx"))
            assert pdfa_problems(forms["facturx"]) == [], doc.doc_id
            assert embedded_cii(forms["facturx"]) == forms["cii"]
        (farm,) = [d for d in docs if d.buyer.account_id == "farm-co"]
        pdf = (await document_forms(conn, farm.number, ("pdf",)))["pdf"]
    text = " ".join(PdfReader(io.BytesIO(pdf)).pages[0].extract_text().split())
    assert "Rechnung" in text and "Verkäufer" in text and "Fällig am" in text  # German, UTF-8


async def test_hand_checked_scenario_documents_validate(
    redis: Redis, db: Database, tmp_path: Path, tenant: str
) -> None:
    """The bill run of every charge type (test_billrun's scenario): two standard rates on
    one invoice (19 % and goods at 7 %), an exempt buyer without a note of its own (the
    default text), a USD invoice beside the EUR one, buyers with no address but a country,
    late-free pro rata quantities; and a credit note over both rates."""
    need_specs()
    cat = billing_catalogue(tmp_path / "c", tenant)
    cipher = await scenario(redis, db, cat)
    run = await bill_run(db, cat, cipher, bill_day=10, on=date(2025, 4, 10))
    note = await adjust_invoice(db, tenant, run.numbers[0], kind="credit", net=999, reason="x")
    async with db.tenant(tenant) as conn:
        docs = [await load_document(conn, n) for n in [*run.numbers, note.number]]
    assert {d.currency for d in docs} == {"EUR", "USD"}
    rates = {(b.category, b.rate) for d in docs for b in d.breakdown}
    assert {("S", Decimal(19)), ("S", Decimal(7)), ("E", Decimal(0))} <= rates
    (credit,) = [d for d in docs if d.kind == "credit_note"]
    assert len(credit.breakdown) == 2  # one line per rate of the invoice, each taxed at it
    for doc in docs:
        for syntax, xml in (("ubl", to_ubl(doc)), ("cii", to_cii(doc))):
            where = f"{doc.doc_id} {doc.buyer.account_id} {doc.currency} {syntax}"
            assert xsd_errors(xml, syntax) == [], where
            assert schematron_failures(xml, syntax) == [], where


async def test_document_issued_before_party_snapshots_uses_current_parties(
    db: Database, catalogue: Catalogue
) -> None:
    """A document issued before migration 0009 has no seller/buyer snapshot (and a note
    before 0010 no series number): it prints and exports the parties as they are now."""
    need_specs()
    t = catalogue.tenant.id
    await synced(db, catalogue)
    async with db.tenant(t) as conn:
        for number, kind, refers, net, tax in ((900, "invoice", None, 1000, 190),
                                               (901, "credit_note", 900, -100, -19)):  # fmt: skip
            await conn.execute(
                "INSERT INTO invoices (tenant_id, number, kind, refers_to, account_id, issuer,"
                " currency, net, tax, gross) VALUES ($1, $2, $3, $4, 'acme-iot', $5, 'EUR',"
                " $6, $7, $8)",
                t, number, kind, refers, f"tenant:{t}", net, tax, net + tax,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO invoice_lines (tenant_id, number, line_no, kind, description,"
                " quantity, unit, net, tax_rate, tax) VALUES ($1, $2, 1, 'one_time', 'Setup',"
                " 1, 'each', $3, 19, $4)",
                t, number, net, tax,
            )  # fmt: skip
        docs = [await load_document(conn, n) for n in (900, 901)]
    for doc in docs:
        assert doc.seller.name == "Demo IoT Operator GmbH" and doc.seller.vat_id == "DE123456789"
        assert doc.buyer.name == "ACME IoT GmbH" and doc.buyer.city == "Stuttgart"
        for syntax, xml in (("ubl", to_ubl(doc)), ("cii", to_cii(doc))):
            assert xsd_errors(xml, syntax) == [], (doc.number, syntax)
            assert schematron_failures(xml, syntax) == [], (doc.number, syntax)
    assert docs[1].doc_id == "901"  # no series number: the document number


async def test_line_texts_are_words_in_the_buyers_language(
    redis: Redis, db: Database, catalogue: Catalogue
) -> None:
    """farm-co's terms choose German: its lines are German in HTML, UBL (BT-153) and CII;
    no line of any document names a fee by its catalogue id or a plan without its name."""
    docs = await _demo_documents(redis, db, catalogue)
    (farm,) = [d for d in docs if d.buyer.account_id == "farm-co"]
    texts = [ln.description for ln in farm.lines]
    # the zone's and the plan's names as the catalogue gives them; the words German
    assert texts == ["Daten, Zone Home network, Tarif Agri IoT daytime"]
    ubl = etree.fromstring(to_ubl(farm))
    ns = {"cac": CAC, "cbc": CBC}
    assert ubl.xpath("//cac:InvoiceLine/cac:Item/cbc:Name/text()", namespaces=ns) == texts
    cii = etree.fromstring(to_cii(farm))
    names = cii.xpath("//ram:SpecifiedTradeProduct/ram:Name/text()", namespaces={"ram": RAM})
    assert names == texts
    async with db.tenant(catalogue.tenant.id) as conn:
        html = render_html(await invoice_document(conn, farm.number))
    assert all(t in html for t in texts)
    plan_ids = set(catalogue.plans)
    for doc in docs:
        for ln in doc.lines:
            assert not re.search(r"\w-fee\b", ln.description), ln
            assert not plan_ids & set(ln.description.replace(",", " ").split()), ln
    (note,) = [d for d in docs if d.kind == "credit_note"]
    assert note.lines[0].description == "Credit: goodwill"
