"""Every form of one issued document, made from the one ``Document``: the readable HTML and
PDF (the account's template and language), UBL 2.1, CII and the Factur-X PDF with the CII
embedded. ``ocs invoice export --number N --format ...`` writes one, ``ocs billrun
--einvoice`` all of them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

from ocs.offline.db import Connection
from ocs.offline.einvoice.cii import to_cii
from ocs.offline.einvoice.facturx import to_facturx
from ocs.offline.einvoice.ubl import to_ubl, xrechnung_gaps
from ocs.offline.render import invoice_document, render_html, render_pdf

FORMATS: Final = ("html", "pdf", "ubl", "cii", "facturx")
SUFFIX: Final = {
    "html": ".html",
    "pdf": ".pdf",
    "ubl": "-ubl.xml",
    "cii": "-cii.xml",
    "facturx": "-facturx.pdf",
}
log = logging.getLogger("ocs.offline.einvoice")


async def document_forms(
    conn: Connection, number: int, formats: tuple[str, ...]
) -> dict[str, bytes]:
    """The requested ``formats`` of document ``number`` (of the connection's tenant)."""
    return render_forms(await invoice_document(conn, number), formats)


def render_forms(view: dict[str, Any], formats: tuple[str, ...]) -> dict[str, bytes]:
    """The requested ``formats`` of a loaded document (``invoice_document``): CPU only, no
    I/O (a server runs it off its event loop: a Factur-X PDF takes about half a second)."""
    doc = view["doc"]
    out: dict[str, bytes] = {}
    html = render_html(view)
    pdf = render_pdf(html, view["lang"]) if "pdf" in formats else b""
    cii = to_cii(doc) if {"cii", "facturx"} & set(formats) else b""
    for fmt in formats:
        if fmt == "html":
            out[fmt] = html.encode("utf-8")
        elif fmt == "pdf":
            out[fmt] = pdf
        elif fmt == "ubl":
            out[fmt] = to_ubl(doc)
            gaps = xrechnung_gaps(doc)
            if gaps:  # said where the file is written (the CLI logs WARNING on stderr)
                log.warning(
                    "%s %s (%s): UBL declares plain EN 16931, not XRechnung 3.0: it lacks %s",
                    doc.kind.replace("_", " "),
                    doc.doc_id,
                    doc.buyer.account_id,
                    "; ".join(gaps),
                )
        elif fmt == "cii":
            out[fmt] = cii
        elif fmt == "facturx":
            out[fmt] = to_facturx(
                render_pdf(html, view["lang"], pdfa=True),
                cii,
                title=f"{view['title']} {doc.doc_id}",
                author=doc.seller.name,
                lang=view["lang"],
            )
    return out


def write_forms(folder: Path, stem: str, forms: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, data in forms.items():
        path = folder / f"{stem}{SUFFIX[fmt]}"
        path.write_bytes(data)
        paths.append(path)
    return paths
