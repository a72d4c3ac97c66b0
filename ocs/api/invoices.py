"""Issued documents (invoices, credit and debit notes) over HTTP: what the events of
documents (``invoice.issued``, ... in docs/webhooks.md) point to with their ``href``.

``GET /v1/invoices/{number}`` answers the document's summary (the event's data) or, with
``format``, one of its forms (HTML, PDF, UBL, CII, Factur-X) as ``ocs invoice export``
writes it. The number is the printed one (``12``, ``CN-3``, ``DN-1``); the documents are
read in the token's tenant only (row-level security), so another tenant's number is 404.
Rendering runs off the event loop (a Factur-X PDF takes about half a second)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Path, Query, Response

from ocs.api.problems import Problem, not_found
from ocs.api.state import Api, Reader
from ocs.api.usage import unavailable
from ocs.offline.einvoice.document import DocumentError, resolve_document
from ocs.offline.einvoice.forms import SUFFIX, render_forms
from ocs.offline.event_relay import document_summary
from ocs.offline.render import RenderError, invoice_document

router = APIRouter(prefix="/v1/invoices", tags=["invoices"])

STATEMENT_TIMEOUT: Final = "30s"  # every statement of a read
MEDIA: Final = {
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
    "ubl": "application/xml",
    "cii": "application/xml",
    "facturx": "application/pdf",
}
Number = Annotated[
    str,
    Path(
        pattern=r"^([0-9]{1,18}|[CcDd][Nn]-[0-9]{1,18})$",
        description="the printed number: 12, CN-3, DN-1",
    ),
]
Format = Literal["json", "html", "pdf", "ubl", "cii", "facturx"]


@router.get(
    "/{number}",
    responses={
        200: {
            "description": "the summary (JSON) or the form asked for",
            "content": {m: {} for m in {*MEDIA.values(), "application/json"}},
        }
    },
)
async def get_invoice(
    number: Number,
    who: Reader,
    api: Api,
    format: Annotated[Format, Query(description="json (the summary) or a form")] = "json",
) -> Any:
    assert api.database is not None
    with unavailable():
        db = await api.database.get()
        async with db.tenant(who.tenant) as conn:
            await conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
            try:
                key = await resolve_document(conn, number)
            except DocumentError:
                raise not_found("document", number) from None
            if format == "json":
                return await document_summary(conn, key)
            try:
                view = await invoice_document(conn, key)
            except RenderError as exc:
                raise Problem(404, "not-found", "document not found", str(exc)) from None
    body = (await asyncio.to_thread(render_forms, view, (format,)))[format]
    name = f"{who.tenant}-{view['doc'].doc_id}{SUFFIX[format]}"
    return Response(
        body,
        media_type=MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
