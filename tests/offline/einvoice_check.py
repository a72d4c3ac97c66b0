"""Validation of produced e-invoices with the official artefacts (../shared/specs/en16931,
never copied into the repository): the UBL 2.1 and CII D16B XSD schemas (lxml) and the
EN 16931 business rules, Schematron compiled to XSLT, run with saxonche. Tests that need
them skip, naming the folder, when it is absent. The XRechnung rules (KoSIT's Schematron) are
vendored in ``xrechnung/`` beside this file and always run."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest
from lxml import etree

from tests.offline.schematron import Finding, Validator

ROOT = Path(__file__).resolve().parents[2]
SVRL = "http://purl.oclc.org/dsdl/svrl"


def specs_dir() -> Path | None:
    """``$OCS_EN16931_SPECS``, else ``shared/specs/en16931`` beside the repository (or beside
    the folder of a worktree under ``wt/``)."""
    env = os.environ.get("OCS_EN16931_SPECS")
    candidates = [Path(env)] if env else []
    candidates += [p / "shared" / "specs" / "en16931" for p in (ROOT.parent, ROOT.parents[1])]
    return next((p for p in candidates if (p / "ubl").is_dir() and (p / "cii").is_dir()), None)


def need_specs() -> Path:
    found = specs_dir()
    if found is None:
        pytest.skip("EN 16931 validation artefacts not found (../shared/specs/en16931)")
    return found


@cache
def _schema(path: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(path))


def xsd_errors(xml: bytes, syntax: str) -> list[str]:
    base = need_specs()
    root = etree.fromstring(xml)
    name = etree.QName(root).localname
    path = {
        "Invoice": base / "ubl/schema/maindoc/UBL-Invoice-2.1.xsd",
        "CreditNote": base / "ubl/schema/maindoc/UBL-CreditNote-2.1.xsd",
        "CrossIndustryInvoice": base
        / "cii/schema/uncefact/data/standard/CrossIndustryInvoice_100pD16B.xsd",
    }[name]
    assert (syntax == "cii") == (name == "CrossIndustryInvoice"), name
    schema = _schema(str(path))
    if schema.validate(root):
        return []
    return [f"{e.line}: {e.message}" for e in schema.error_log]


@cache
def _stylesheet(syntax: str) -> object:
    from saxonche import PySaxonProcessor

    base = need_specs()
    proc = PySaxonProcessor(license=False)
    xslt = proc.new_xslt30_processor()
    path = base / syntax / f"EN16931-{syntax.upper()}-validation.xslt"
    return (proc, xslt.compile_stylesheet(stylesheet_file=str(path)))


def schematron_failures(xml: bytes, syntax: str) -> list[str]:
    """The fatal ``svrl:failed-assert``s of the EN 16931 rules (id and text)."""
    proc, executable = _stylesheet(syntax)  # type: ignore[misc]
    node = proc.parse_xml(xml_text=xml.decode("utf-8"))
    svrl = executable.transform_to_string(xdm_node=node)
    report = etree.fromstring(svrl.encode("utf-8"))
    out = []
    for fa in report.iter(f"{{{SVRL}}}failed-assert"):
        if fa.get("flag", "fatal") == "fatal":
            text = " ".join("".join(fa.itertext()).split())
            out.append(f"{fa.get('id')}: {text}")
    return out


def fired_rules(xml: bytes, syntax: str) -> int:
    """How many rule contexts fired (a run that matched nothing proves nothing)."""
    proc, executable = _stylesheet(syntax)  # type: ignore[misc]
    node = proc.parse_xml(xml_text=xml.decode("utf-8"))
    svrl = executable.transform_to_string(xdm_node=node)
    report = etree.fromstring(svrl.encode("utf-8"))
    return sum(1 for _ in report.iter(f"{{{SVRL}}}fired-rule"))


def pdfa_problems(pdf: bytes) -> list[str]:
    """What a Factur-X PDF lacks of the PDF/A-3 structure (not a full PDF/A validation, which
    needs veraPDF): an sRGB PDF/A output intent, XMP naming PDF/A-3 and the Factur-X
    profile, every font embedded, the XML as an associated file of the document."""
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf))
    root = reader.trailer["/Root"]
    out = []
    intents = root.get("/OutputIntents") or []
    if not any(i.get_object().get("/S") == "/GTS_PDFA1" for i in intents):
        out.append("no PDF/A output intent")
    xmp = root["/Metadata"].get_object().get_data().decode("utf-8")
    if "<pdfaid:part>3</pdfaid:part>" not in xmp and 'pdfaid:part="3"' not in xmp:
        out.append("XMP does not say PDF/A-3")
    if "EN 16931" not in xmp:
        out.append("XMP does not name the Factur-X EN 16931 profile")
    for page in reader.pages:
        for name, ref in page["/Resources"].get("/Font", {}).items():
            font = ref.get_object()
            desc = font.get("/FontDescriptor")
            if desc is None and "/DescendantFonts" in font:
                desc = font["/DescendantFonts"][0].get_object().get("/FontDescriptor")
            desc = desc.get_object() if desc is not None else {}
            if not any(k in desc for k in ("/FontFile", "/FontFile2", "/FontFile3")):
                out.append(f"font {name} ({font.get('/BaseFont')}) not embedded")
    files = [f.get_object() for f in root.get("/AF", [])]
    if not any(f.get("/F") == "factur-x.xml" and f.get("/AFRelationship") for f in files):
        out.append("factur-x.xml is not an associated file with a relationship")
    return out


XRECHNUNG_DIR = Path(__file__).resolve().parent / "xrechnung"  # vendored, see its SOURCE.md


@cache
def xrechnung_validator(syntax: str) -> Validator:
    """KoSIT's XRechnung Schematron of ``syntax`` (``ubl`` or ``cii``), compiled by
    ``tests/offline/schematron.py``."""
    return Validator(XRECHNUNG_DIR / syntax / f"XRechnung-{syntax.upper()}-validation.sch")


def xrechnung_findings(xml: bytes, syntax: str) -> tuple[list[Finding], int]:
    """Every failed assertion of the XRechnung rules (any flag) and how many rules fired."""
    return xrechnung_validator(syntax).run(xml)


def xrechnung_failures(xml: bytes, syntax: str) -> list[str]:
    """The fatal failed assertions of the XRechnung rules (id and text)."""
    findings, _ = xrechnung_findings(xml, syntax)
    return [f"{f.id}: {f.text}" for f in findings if f.kind == "assert" and f.flag == "fatal"]
