"""XRechnung 3.0 (the German CIUS of EN 16931): KoSIT's Schematron rules, vendored in
``xrechnung/`` and compiled by ``schematron.py``, run over every e-invoice form the demo bill
run writes. The compiler is proved first on KoSIT's own test instances: each variant their
``xmute`` instructions describe passes and fails exactly the rules they name."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from lxml import etree
from redis.asyncio import Redis

from ocs.config import Settings
from ocs.offline.adjust import adjust_invoice
from ocs.offline.billrun import bill_run
from ocs.offline.cli import main_billrun, main_invoice_adjust
from ocs.offline.crypto import MASTER_FILE
from ocs.offline.db import Database
from ocs.offline.drain import Drainer
from ocs.offline.einvoice.cii import RAM
from ocs.offline.einvoice.document import Document, load_document
from ocs.offline.einvoice.facturx import embedded_cii
from ocs.offline.einvoice.forms import FORMATS, document_forms
from ocs.offline.einvoice.ubl import CAC, CBC, EN16931, XRECHNUNG, to_ubl, xrechnung_gaps
from ocs.offline.terms import DEMO_TERMS
from ocs.rating.catalogue import Catalogue
from tests.offline.billing_fixture import billing_catalogue, record, scenario
from tests.offline.conftest import MASTER, synced
from tests.offline.einvoice_check import (
    XRECHNUNG_DIR,
    need_specs,
    schematron_failures,
    xrechnung_failures,
    xrechnung_findings,
    xsd_errors,
)
from tests.offline.schematron import SchematronError, compile_schematron
from tests.offline.test_einvoice import _demo_documents, _usage, _with_tenant
from tests.offline.xmute import variants

NS = {"cac": CAC, "cbc": CBC}
INSTANCES = sorted((XRECHNUNG_DIR / "instances").rglob("*.xml"))


@pytest.mark.parametrize("path", INSTANCES, ids=[p.stem for p in INSTANCES])
def test_compiler_gives_kosit_expected_results(path: Path) -> None:
    syntax, prefix = ("cii", "xrcii") if path.parent.name == "cii" else ("ubl", "xrubl")
    found = variants(path, prefix)
    assert found, path
    for variant in found:
        findings, fired = xrechnung_findings(variant.xml, syntax)
        failed = {f.id for f in findings if f.kind == "assert"}
        assert fired > 0, variant.name
        assert variant.valid.isdisjoint(failed), (variant.name, sorted(failed))
        assert variant.invalid <= failed, (variant.name, sorted(failed))


def test_vendored_instances_cover_every_mutator_and_both_outcomes() -> None:
    seen = set()
    for path in INSTANCES:
        prefix = "xrcii" if path.parent.name == "cii" else "xrubl"
        for v in variants(path, prefix):
            seen.add(v.mutator)
            seen |= {"valid"} if v.valid else set()
            seen |= {"invalid"} if v.invalid else set()
    assert seen == {"identity", "remove", "code", "valid", "invalid"}
    assert {p.parent.name for p in INSTANCES} == {"ubl-inv", "ubl-cn", "cii"}


def test_compiler_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    sch = tmp_path / "a.sch"
    sch.write_text(
        '<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2">'
        '<pattern abstract="true" id="p"><rule context="/"><assert test="true()">x</assert>'
        "</rule></pattern></schema>"
    )
    with pytest.raises(SchematronError, match="abstract pattern 'p'"):
        compile_schematron(sch)
    sch.write_text('<schema xmlns="http://purl.oclc.org/dsdl/schematron"/>')
    with pytest.raises(SchematronError, match="query binding 'xslt'"):
        compile_schematron(sch)


def test_first_matching_rule_of_a_pattern_wins(tmp_path: Path) -> None:
    """Two rules of one pattern match the same element: only the first checks it; a rule
    of another pattern still does; lets of schema, pattern and rule; name and value-of."""
    sch = tmp_path / "r.sch"
    sch.write_text(
        '<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2">'
        '<let name="limit" value="2"/>'
        '<pattern id="a"><let name="word" value="\'big\'"/>'
        '<rule context="n[. &gt; $limit]"><let name="v" value="number(.)"/>'
        '<assert test="$v &lt; 10" id="A1" flag="fatal"><name/> <value-of select="$v"/> is '
        '<value-of select="$word"/></assert></rule>'
        '<rule context="n"><assert test="false()" id="A2" flag="fatal">second</assert></rule>'
        "</pattern>"
        '<pattern id="b"><rule context="n"><report test=". = 1" id="B1">one</report></rule>'
        "</pattern></schema>"
    )
    from tests.offline.schematron import Validator

    findings, fired = Validator(sch).run(b"<r><n>1</n><n>20</n></r>")
    got = sorted((f.kind, f.id, f.text, f.location) for f in findings)
    assert got == [
        ("assert", "A1", "n 20 is big", "/Q{}r[1]/Q{}n[2]"),
        ("assert", "A2", "second", "/Q{}r[1]/Q{}n[1]"),
        ("report", "B1", "one", "/Q{}r[1]/Q{}n[1]"),
    ]
    assert fired == 4


def _remove(xml: bytes, path: str) -> bytes:
    root = etree.fromstring(xml)
    found = root.xpath(path, namespaces=NS)
    assert found, path
    for el in found:
        el.getparent().remove(el)
    return bytes(etree.tostring(root))


async def test_demo_bill_run_writes_xrechnung(
    redis: Redis, db: Database, catalogue: Catalogue
) -> None:
    """Every form the demo bill run writes (with --einvoice; and the notes ``ocs invoice
    adjust`` writes): the UBL declares XRechnung 3.0 and passes XSD, EN 16931 and the
    XRechnung rules with no fatal failure; the CII declares EN 16931 (the Factur-X profile)
    and passes them too, and the Factur-X PDF carries exactly it. Taking out the buyer
    reference or the seller contact makes exactly BR-DE-15 or BR-DE-2 fail."""
    need_specs()
    docs = await _demo_documents(redis, db, catalogue)
    assert {d.kind for d in docs} == {"invoice", "credit_note", "debit_note"}
    warnings = []
    async with db.tenant(catalogue.tenant.id) as conn:
        for doc in docs:
            forms = await document_forms(conn, doc.number, FORMATS)
            where = f"{doc.doc_id} ({doc.kind}, {doc.buyer.account_id})"
            assert xrechnung_gaps(doc) == [], where
            ubl, cii = forms["ubl"], forms["cii"]
            assert etree.fromstring(ubl).xpath("cbc:CustomizationID/text()", namespaces=NS) == [
                XRECHNUNG
            ], where
            assert xsd_errors(ubl, "ubl") == [], where
            assert schematron_failures(ubl, "ubl") == [], where
            findings, fired = xrechnung_findings(ubl, "ubl")
            assert fired >= 7, where  # document, seller, its address and contact, buyer's
            # address, payment means, each VAT breakdown
            fatal = [f for f in findings if f.flag == "fatal"]
            assert fatal == [], where
            warnings += [(doc.kind, "ubl", f.id, f.flag) for f in findings]
            for gone, rule in (
                ("/*/cbc:BuyerReference", "BR-DE-15"),
                ("//cac:AccountingSupplierParty/cac:Party/cac:Contact", "BR-DE-2"),
                ("//cac:AccountingCustomerParty//cbc:PostalZone", "BR-DE-9"),
            ):
                got = [e.split(":")[0] for e in xrechnung_failures(_remove(ubl, gone), "ubl")]
                assert got == [rule], (where, gone)
            ctx = etree.fromstring(cii).xpath(
                "//ram:GuidelineSpecifiedDocumentContextParameter/ram:ID/text()",
                namespaces={"ram": RAM},
            )
            assert ctx == [EN16931], where
            assert embedded_cii(forms["facturx"]) == cii, where
            assert xrechnung_failures(cii, "cii") == [], where
            warnings += [(doc.kind, "cii", f.id, f.flag) for f in xrechnung_findings(cii, "cii")[0]]
    # no fatal failure; what is left: BR-DE-21 (a warning), the CII "should" declare
    # XRechnung; BR-DE-17 (a warning), XRechnung lists no code for a debit note (383).
    # Notes carry the period of the invoice they correct (BG-14; no BR-DE-TMP-32)
    assert set(warnings) == {
        ("invoice", "cii", "BR-DE-21", "warning"),
        ("credit_note", "cii", "BR-DE-21", "warning"),
        ("debit_note", "cii", "BR-DE-21", "warning"),
        ("debit_note", "cii", "BR-DE-17", "warning"),
        ("debit_note", "ubl", "BR-DE-17", "warning"),
    }
    for note in (d for d in docs if d.refers_to is not None):
        (invoice,) = [d for d in docs if d.number == note.refers_to]
        assert (note.period_start, note.period_end) == (invoice.period_start, invoice.period_end)
        assert note.period_start is not None


async def test_a_document_lacking_xrechnung_data_declares_en16931_and_says_why(
    redis: Redis, db: Database, tmp_path: Path, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """test_billrun's scenario: buyers with a country but no address, reference or e-mail.
    Their UBL declares plain EN 16931 (and passes it), the export logs what is missing, and
    every fatal XRechnung rule that fails is one the missing data names."""
    need_specs()
    cat = billing_catalogue(tmp_path / "c", tenant)
    cipher = await scenario(redis, db, cat)
    run = await bill_run(db, cat, cipher, bill_day=10, on=date(2025, 4, 10))
    note = await adjust_invoice(db, tenant, run.numbers[0], kind="credit", net=999, reason="x")
    caplog.set_level(logging.WARNING, logger="ocs.offline.einvoice")
    async with db.tenant(tenant) as conn:
        for number in [*run.numbers, note.number]:
            doc = await load_document(conn, number)
            gaps = xrechnung_gaps(doc)
            assert gaps, doc.doc_id
            ubl = (await document_forms(conn, number, ("ubl",)))["ubl"]
            assert etree.fromstring(ubl).xpath("cbc:CustomizationID/text()", namespaces=NS) == [
                EN16931
            ]
            assert schematron_failures(ubl, "ubl") == []
            failed = {e.split(":")[0] for e in xrechnung_failures(ubl, "ubl")}
            named = set(re.findall(r"BR-DE-\d+", " ".join(gaps)))
            assert failed and failed <= named, (doc.doc_id, failed, gaps)
            (message,) = [r.getMessage() for r in caplog.records if f" {doc.doc_id} " in r.message]
            assert "UBL declares plain EN 16931, not XRechnung 3.0" in message
            assert "buyer reference (BT-10, BR-DE-15)" in message
            caplog.clear()


async def test_cli_bill_run_files_are_xrechnung(
    redis: Redis,
    db: Database,
    catalogue: Catalogue,
    settings: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``ocs billrun --einvoice`` over the demo catalogue (days 1 and 5) and ``ocs invoice
    adjust``: every file written, read back from the folder, is what the rules accept; no
    warning that a UBL is plain EN 16931."""
    need_specs()
    t = catalogue.tenant.id
    (Path(settings.data_dir) / MASTER_FILE).write_text(MASTER.hex())  # the key synced uses
    await synced(db, catalogue)
    acme = _usage("262010000000007", "2025-03-12T09:00:00+01:00", "iot.demo", "208")
    farm = _usage("262010000100000", "2025-03-20T10:00:00+01:00", "internet.demo")
    usage = [(_with_tenant(acme, t), "acme;1:1:10"), (_with_tenant(farm, t), "farm;1:1:10")]
    await record(redis, catalogue, usage)
    await Drainer(redis, db, MASTER).run()
    folder, out = tmp_path / "catalogue", tmp_path / "out"
    caplog.set_level(logging.WARNING, logger="ocs.offline.einvoice")
    for day in (1, 5):
        run = {"cycle": day, "on": date(2025, 4, day), "catalog": folder, "terms": DEMO_TERMS}
        assert (
            await asyncio.to_thread(main_billrun, settings, out_dir=out, einvoice=True, **run) == 0
        )
    note = {"catalog": folder, "out_dir": out, "reason": "goodwill"}
    assert await asyncio.to_thread(
        main_invoice_adjust, settings, number="1", kind="credit", amount=1000, **note
    ) == 0  # fmt: skip
    assert await asyncio.to_thread(
        main_invoice_adjust, settings, number="3", kind="debit", amount=7, **note
    ) == 0  # fmt: skip
    assert [r.getMessage() for r in caplog.records] == []
    ubls = sorted(out.glob("*-ubl.xml"))
    assert [p.name.removeprefix(f"{t}-") for p in ubls] == [
        f"{n}-ubl.xml" for n in ("1", "2", "3", "4", "CN-1", "DN-1")
    ]
    for ubl_path in ubls:
        stem = ubl_path.name.removesuffix("-ubl.xml")
        ubl, cii = ubl_path.read_bytes(), (out / f"{stem}-cii.xml").read_bytes()
        assert etree.fromstring(ubl).xpath("cbc:CustomizationID/text()", namespaces=NS) == [
            XRECHNUNG
        ], stem
        for syntax, xml in (("ubl", ubl), ("cii", cii)):
            assert xsd_errors(xml, syntax) == [], (stem, syntax)
            assert schematron_failures(xml, syntax) == [], (stem, syntax)
            assert xrechnung_failures(xml, syntax) == [], (stem, syntax)
        assert embedded_cii((out / f"{stem}-facturx.pdf").read_bytes()) == cii, stem
        assert (out / f"{stem}.pdf").stat().st_size > 0 and (out / f"{stem}.html").exists()


def test_gaps_name_each_missing_field() -> None:
    """What a demo document would lack without its data, field by field."""
    base = _document()
    assert xrechnung_gaps(base) == []
    cases = {
        "buyer_reference": "BR-DE-15",
        "email": "BT-49",
        "city": "BR-DE-8",
        "postcode": "BR-DE-9",
    }
    for field, rule in cases.items():
        (gap,) = xrechnung_gaps(replace(base, buyer=replace(base.buyer, **{field: " "})))
        assert rule in gap, field
    seller = {
        "contact_name": "BR-DE-5",
        "phone": "BR-DE-6",
        "email": "BR-DE-7",
        "city": "BR-DE-3",
        "postcode": "BR-DE-4",
        "vat_id": "BR-DE-16",
        "iban": "BR-DE-1",
    }
    for field, rule in seller.items():
        (gap,) = xrechnung_gaps(replace(base, seller=replace(base.seller, **{field: ""})))
        assert rule in gap, field
        ubl = to_ubl(replace(base, seller=replace(base.seller, **{field: ""})))
        assert b"xrechnung" not in ubl


def _document() -> Document:
    from decimal import Decimal

    from ocs.offline.einvoice.document import DocLine, Party

    seller = Party(
        name="S GmbH", country="DE", street="A 1", postcode="10117", city="Berlin",
        vat_id="DE123456789", email="s@s.example", contact_name="Desk", phone="+49 30 1",
        iban="DE02120300000000202051",
    )  # fmt: skip
    buyer = Party(
        name="B GmbH", country="DE", street="B 2", postcode="70565", city="Stuttgart",
        email="b@b.example", buyer_reference="PO-1", account_id="b",
    )  # fmt: skip
    line = DocLine(1, "Data", Decimal(1), "C62", Decimal(1000), 1000, 190, "S", Decimal(19), "", "")
    return Document(
        1, "invoice", "EUR", date(2025, 4, 1), date(2025, 4, 15), None, None,
        seller, buyer, [line], 1000, 190, 1190,
    )  # fmt: skip


def test_vendored_rules_are_the_ones_source_md_names() -> None:
    """SOURCE.md's hashes are those of the vendored files (they are KoSIT's, unchanged)."""
    import hashlib

    note = (XRECHNUNG_DIR / "SOURCE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`<]+)` \| `[^`]+` \| `([0-9a-f]{64})` \|$", note, re.M)
    assert {name for name, _ in rows} == {
        "common.sch",
        "ubl/XRechnung-UBL-validation.sch",
        "cii/XRechnung-CII-validation.sch",
        "LICENSE",
    }
    for name, digest in rows:
        assert hashlib.sha256((XRECHNUNG_DIR / name).read_bytes()).hexdigest() == digest, name
