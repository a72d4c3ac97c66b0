"""Every line the bill run writes reads in the buyer's language (issue #17): a German
account's invoice with an auto top-off, a pool renewal and a named pool says so in German in
each of its forms (HTML, PDF, UBL, CII, Factur-X), and the forms' totals agree to the cent.
The top-offs are bought by the real ``charge.lua``, the renewal by the lifecycle pass; time
is injected into every script call."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from lxml import etree
from pypdf import PdfReader
from redis.asyncio import Redis

from ocs.balance import BalanceStore
from ocs.balance.keys import payer_tag
from ocs.lifecycle import Lifecycle
from ocs.offline.billrun import bill_run
from ocs.offline.charges import AccountRow
from ocs.offline.db import Database
from ocs.offline.drain import Drainer
from ocs.offline.einvoice.cii import RAM
from ocs.offline.einvoice.document import load_document
from ocs.offline.einvoice.facturx import embedded_cii
from ocs.offline.einvoice.forms import FORMATS, document_forms
from ocs.offline.einvoice.ubl import CAC, CBC
from ocs.offline.purchases import Purchase, purchase_lines
from ocs.provisioning.payers import lifecycle_rules, provision_catalogue
from ocs.rating.loader import load_catalogue
from tests.balance.helpers import charge
from tests.offline.conftest import MASTER, catalogue_folder, synced
from tests.offline.einvoice_check import schematron_failures, specs_dir, xsd_errors

EXTRA = """
addons:
  - {id: boost, name: Boost 1k, currency: EUR, price: 250, service: data, units: 1000,
     validity_days: 30}
accounts:
  - {id: ada, name: Ada GmbH, kind: enterprise, payment: postpaid, currency: EUR,
     tax_profile: de-vat, accounting_group: b2b, bill_day: 10, time_zone: UTC,
     invoice: {language: de, legal_name: Ada GmbH, street: Hauptstrasse 1, postcode: "10115",
               city: Berlin, country: DE, vat_id: DE111111111}}
pools:
  - {id: ada-topped, name: Flottendaten, account: ada, size: 1000,
     auto_top_off: {addon: boost, max_per_period: 5}}
  - {id: ada-monthly, name: Monatspool, account: ada, size: 1000, renewal: {fee: 1200}}
"""


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


async def test_german_invoice_with_top_off_renewal_and_pool_in_every_form(
    redis: Redis, db: Database, tmp_path: Path, tenant: str
) -> None:
    folder = catalogue_folder(tmp_path / "cat", tenant, EXTRA)
    cat = load_catalogue(folder)
    cipher = await synced(db, cat)
    store = BalanceStore(redis)
    await provision_catalogue(store, cat, str(folder), now_ms=ms("2025-03-12T00:00:00"))
    topped = payer_tag(tenant, "prepaid_pool", "ada-topped")
    monthly = payer_tag(tenant, "prepaid_pool", "ada-monthly")
    # the bill day: the monthly pool renews (its fee on the invoice of the new period) ...
    await Lifecycle(redis).run_once(lifecycle_rules(cat), ms("2025-04-10T00:00:01"))
    # ... and two auto top-offs are bought in that period
    t = ms("2025-04-15T10:00:00")
    await charge(store, topped, "t1", want=1000, now=t)
    await charge(store, topped, "t2", used=1000, want=1000, now=t + 1)
    await charge(store, topped, "t3", used=1000, want=1000, now=t + 2)
    await Drainer(redis, db, MASTER).run()
    async with db.tenant(tenant) as conn:  # the pool's own fee (billing terms)
        await conn.execute(
            "INSERT INTO pool_terms (tenant_id, pool_id, account_id, kind, currency, payer, fee,"
            " size, per_sim, overage_per, overage_price, ladder)"
            " VALUES ($1, 'ada-monthly', 'ada', 'static', 'EUR', $2, 900, 1000, 0, 1000, 0,"
            " '[]'::jsonb)",
            tenant,
            monthly,
        )

    run = await bill_run(db, cat, cipher, bill_day=10, on=date(2025, 5, 10), account="ada")
    (number,) = run.numbers
    async with db.tenant(tenant) as conn:
        doc = await load_document(conn, number)
        forms = await document_forms(conn, number, FORMATS)
    texts = [ln.description for ln in doc.lines]
    assert sorted(texts) == [
        "Automatisches Zusatzpaket Boost 1k",
        "Pool Monatspool: 1.000 Einheiten inklusive",
        "Verlängerung Pool Monatspool (2025-04-10T00:00:00Z)",
    ]
    assert sum(ln.net for ln in doc.lines) == doc.net == 500 + 900 + 1200
    assert doc.tax == sum(ln.tax for ln in doc.lines) and doc.gross == doc.net + doc.tax

    # the same words in every form: UBL and CII item names (BT-153), HTML, PDF, Factur-X
    ubl = etree.fromstring(forms["ubl"])
    uns = {"cac": CAC, "cbc": CBC}
    assert ubl.xpath("//cac:InvoiceLine/cac:Item/cbc:Name/text()", namespaces=uns) == texts
    cii = etree.fromstring(forms["cii"])
    cns = {"ram": RAM}
    assert cii.xpath("//ram:SpecifiedTradeProduct/ram:Name/text()", namespaces=cns) == texts
    html = forms["html"].decode()
    assert all(t in html for t in texts) and "Rechnung" in html
    for pdf in (forms["pdf"], forms["facturx"]):
        shown = _flat(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages))
        for text in texts:
            assert all(word in shown for word in text.split()), (text, shown)
    assert embedded_cii(forms["facturx"]) == forms["cii"]

    # the totals of the stored document, the UBL, the CII and the PDF's CII agree to the cent
    def cents(root: etree._Element, path: str, ns: dict[str, str]) -> int:
        (value,) = root.xpath(f"{path}/text()", namespaces=ns)
        return int(Decimal(value) * 100)

    total = "//ram:SpecifiedTradeSettlementHeaderMonetarySummation"
    for c in (cii, etree.fromstring(embedded_cii(forms["facturx"]))):
        assert cents(c, f"{total}/ram:TaxBasisTotalAmount", cns) == doc.net
        assert cents(c, f"{total}/ram:TaxTotalAmount", cns) == doc.tax
        assert cents(c, f"{total}/ram:DuePayableAmount", cns) == doc.gross
    assert cents(ubl, "//cac:LegalMonetaryTotal/cbc:TaxExclusiveAmount", uns) == doc.net
    assert cents(ubl, "//cac:TaxTotal/cbc:TaxAmount", uns) == doc.tax
    assert cents(ubl, "//cac:LegalMonetaryTotal/cbc:PayableAmount", uns) == doc.gross
    assert f"{doc.gross // 100},{doc.gross % 100:02d}" in html or (
        f"{doc.gross // 100}.{doc.gross % 100:02d}" in html
    )
    if specs_dir() is not None:  # the EN 16931 artefacts beside the repository
        for xml, syntax in ((forms["ubl"], "ubl"), (forms["cii"], "cii")):
            assert xsd_errors(xml, syntax) == []
            assert schematron_failures(xml, syntax) == []


def test_late_purchases_and_renewals_in_words_of_both_languages(tmp_path: Path) -> None:
    """A purchase charged late (after its period's run) says so in the buyer's language;
    plans, pools and add-ons by their names (the id of one without a name)."""
    cat = load_catalogue(catalogue_folder(tmp_path / "cat", "words", EXTRA))
    at = datetime(2025, 3, 15, tzinfo=UTC)
    bought = [
        Purchase("k1", at, "top-off", "boost", "addon", 250, "EUR", "", "2025-03-10/2025-04-10"),
        Purchase("k2", at, "renewal", "ada-monthly", "pool", 1200, "EUR", "2025-04", ""),
        Purchase("k3", at, "renewal", "iot-pool", "plan", 500, "EUR", "month", ""),
        Purchase("k4", at, "renewal", "gone", "pool", 100, "EUR", "2025-04", ""),
    ]

    def words(language: str) -> list[str]:
        account = AccountRow(
            "ada", "Ada", None, "enterprise", "postpaid", "EUR", "de-vat", "DE", "", "", language
        )
        return sorted(ln.description for ln in purchase_lines(cat, account, bought))

    plan = cat.plans["iot-pool"].name
    assert plan and plan != "iot-pool"
    assert words("de") == [
        "Nachberechnung 2025-03-10/2025-04-10: Zusatzpaket Boost 1k",
        "Verlängerung Pool Monatspool (2025-04)",
        "Verlängerung Pool gone (2025-04)",
        f"Verlängerung Tarif {plan} (month)",
    ]
    assert words("en") == [
        "Late 2025-03-10/2025-04-10: Top-off Boost 1k",
        f"Renewal plan {plan} (month)",
        "Renewal pool Monatspool (2025-04)",
        "Renewal pool gone (2025-04)",
    ]
    assert json.dumps(words("fr")) == json.dumps(words("en"))  # any other language: English
