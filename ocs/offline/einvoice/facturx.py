"""Factur-X / ZUGFeRD: the readable PDF with the CII e-invoice embedded as ``factur-x.xml``
(PDF/A-3 attachment, relationship ``Data``, XMP metadata of the EN 16931 profile), made and
checked by the ``factur-x`` library (the reference implementation of the FNFE-MPE, who
publish the standard): it validates the CII against the Factur-X EN 16931 schemas before
embedding and reads it back from the PDF."""

from __future__ import annotations

import logging
from typing import Final

from facturx import (  # type: ignore[import-untyped]
    generate_from_binary,
    get_facturx_xml_from_pdf,
)

LEVEL: Final = "en16931"
# The library logs an INFO line per PDF on its own logger; the CLI prints its own summary.
logging.getLogger("factur-x").setLevel(logging.WARNING)


class FacturXError(Exception):
    pass


def to_facturx(pdf: bytes, cii: bytes, *, title: str, author: str, lang: str = "en") -> bytes:
    """``pdf`` with ``cii`` embedded; raises ``FacturXError`` when the CII does not pass the
    Factur-X EN 16931 schema."""
    try:
        out = generate_from_binary(
            pdf,
            cii,
            flavor="factur-x",
            level=LEVEL,
            check_xsd=True,
            pdf_metadata={"author": author, "title": title, "subject": title, "keywords": ""},
            lang=lang,
            # compressed XMP broke the cross-reference table of fpdf2's PDF/A-3 output
            # (pypdf could not find the catalogue again); uncompressed it is read back
            xmp_compression=False,
        )
    except Exception as exc:  # the library raises plain Exception for a schema failure
        raise FacturXError(f"factur-x: {exc}") from None
    return bytes(out)


def embedded_cii(pdf: bytes) -> bytes:
    """The CII embedded in a Factur-X PDF, checked against the Factur-X schema."""
    _name, xml = get_facturx_xml_from_pdf(pdf, check_xsd=True)
    if not xml:
        raise FacturXError("factur-x: no embedded factur-x.xml")
    return bytes(xml)
