"""Bulk import of accounts and subscriptions (CRM exports) over HTTP: the body is the file
(``text/csv``, ``application/json`` array, or ``application/x-ndjson`` JSON Lines) and the
answer the same report as ``ocs import`` prints. Rows in error are listed with line, field
and reason and the good rows are applied (200 in both cases); a body that cannot be read at
all is a 400 problem naming the line, one above ``IMPORT_MAX_BODY`` a 413."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from ocs.api.auth import Principal
from ocs.api.problems import MAX_BODY, BodyLimit, Problem, ProblemDocument
from ocs.api.state import Admin, Api, ApiState
from ocs.crm.importer import DEFAULT_BATCH, KINDS, MAX_BATCH, run_import
from ocs.crm.readers import FileError, Row, decode, format_of_media_type, read_rows
from ocs.provisioning.states import Actor
from ocs.rating.loader import _collector_paused

IMPORT_MAX_BODY: Final = 64 << 20  # bytes: ~500,000 subscription rows of CSV
BODY_NAME: Final = "body"  # the "file" named in rejections

router = APIRouter(prefix="/v1/imports", tags=["imports"])

_BODY_DOC: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "description": "the import file (formats: docs/import.md)",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}

_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    415: {"model": ProblemDocument, "description": "not CSV, JSON or JSON Lines"}
}


class RejectedRow(BaseModel):
    file: str
    line: int
    field: str
    reason: str


class ImportResult(BaseModel):
    kind: str
    file: str
    dry_run: bool
    rows: int
    created: int
    updated: int
    unchanged: int
    rejected: list[RejectedRow]
    revisions: list[int]
    signalled: dict[str, int]
    cpu_s: dict[str, float]


class ImportBodyLimit(BodyLimit):
    """The API's body limit, with :data:`IMPORT_MAX_BODY` for the import routes."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        super().__init__(app, limit)
        self.imports = BodyLimit(app, IMPORT_MAX_BODY)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(router.prefix):
            await self.imports(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _rows(kind: str, content_type: str, data: bytes) -> list[Row]:
    fmt = format_of_media_type(content_type)
    if fmt is None:
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "send text/csv, application/json or application/x-ndjson",
        )
    try:
        return read_rows(BODY_NAME, decode(BODY_NAME, data), fmt, KINDS[kind])
    except FileError as exc:
        raise Problem(
            400, "import-unreadable", "Import unreadable", str(exc), line=exc.line
        ) from None


async def _import(
    kind: str, request: Request, who: Principal, api: ApiState, dry_run: bool, batch: int
) -> ImportResult:
    data = await request.body()
    media_type = request.headers.get("content-type", "")
    # Paused from the parse on: this process holds compiled catalogues (millions of
    # objects), and the collector re-scanning them took 4.4 s of a 0.5 s parse.
    with _collector_paused():
        cpu = time.process_time()
        rows = await asyncio.to_thread(_rows, kind, media_type, data)
        read_cpu = time.process_time() - cpu
        report = await run_import(
            api,
            who.tenant,
            kind,
            BODY_NAME,
            rows,
            dry_run=dry_run,
            batch=batch,
            actor=Actor("token", who.token),
        )
    report.add_cpu("read", read_cpu)
    return ImportResult.model_validate(report.as_dict())


DryRun = Annotated[bool, Query(description="validate and report, write nothing")]
Batch = Annotated[int, Query(ge=1, le=MAX_BATCH, description="rows per state write")]


@router.post(
    "/accounts", response_model=ImportResult, openapi_extra=_BODY_DOC, responses=_RESPONSES
)
async def import_accounts(
    request: Request, who: Admin, api: Api, dry_run: DryRun = False, batch: Batch = DEFAULT_BATCH
) -> ImportResult:
    """Create or update accounts (customers, end customers with ``parent``) by id."""
    return await _import("accounts", request, who, api, dry_run, batch)


@router.post(
    "/subscriptions", response_model=ImportResult, openapi_extra=_BODY_DOC, responses=_RESPONSES
)
async def import_subscriptions(
    request: Request, who: Admin, api: Api, dry_run: DryRun = False, batch: Batch = DEFAULT_BATCH
) -> ImportResult:
    """Create or update subscriptions (SIMs, plans, payers, properties, status, twins) by
    IMSI; changed live subscriptions get an RAR, suspended or terminated ones an ASR."""
    return await _import("subscriptions", request, who, api, dry_run, batch)
