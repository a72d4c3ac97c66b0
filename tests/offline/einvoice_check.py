"""Validation of produced e-invoices with the official artefacts (../shared/specs/en16931,
never copied into the repository): the UBL 2.1 and CII D16B XSD schemas (lxml) and the
EN 16931 business rules, Schematron compiled to XSLT, run with saxonche. Tests that need
them skip, naming the folder, when it is absent."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest
from lxml import etree

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
