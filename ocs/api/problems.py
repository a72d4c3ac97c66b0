"""RFC 9457 problem documents for every error the API returns, mapped in one place.

Handlers raise :class:`Problem` (or let FastAPI raise its validation and HTTP errors); the
exception handlers registered by :func:`install` turn each into ``application/problem+json``.
An unexpected exception is still a problem document (500), and is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocs.observability.metrics import api_metrics
from ocs.provisioning.errors import Refused
from ocs.provisioning.identity import IdentityTaken

log = logging.getLogger("ocs.api")

PROBLEM_JSON: Final = "application/problem+json"
TYPE_BASE: Final = "https://ocs.invalid/problems/"
MAX_BODY: Final = 1 << 20  # bytes; larger bodies get 413 before any parsing


class ProblemDocument(BaseModel):
    """An RFC 9457 problem detail (extension members allowed)."""

    model_config = {"extra": "allow"}

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class Problem(Refused):
    """An error answer: ``kind`` becomes the problem ``type`` (under :data:`TYPE_BASE`).
    Provisioning's :class:`Refused` is answered the same way."""


def not_found(what: str, ident: str) -> Problem:
    return Problem(404, "not-found", f"{what} not found", f"no {what} {ident!r} in this tenant")


def problem_response(
    status: int,
    kind: str,
    title: str,
    detail: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + kind, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        out.append({"loc": loc, "msg": str(err.get("msg", ""))})
    return out


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    return problem_response(
        exc.status, exc.kind, exc.title, exc.detail, request.url.path, **exc.extra
    )


async def _on_identity(request: Request, exc: Exception) -> JSONResponse:
    """Another tenant holds an IMSI, MSISDN or ICCID of the change: named, its owner not."""
    assert isinstance(exc, IdentityTaken)
    return problem_response(
        409,
        "identity-taken",
        "Identity held by another tenant",
        exc.public_detail,
        request.url.path,
        identity={"kind": exc.kind, "value": exc.value},
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _errors(exc)
    malformed = any(e["msg"].startswith("JSON decode error") for e in errors)
    if malformed:
        return problem_response(
            400,
            "malformed-json",
            "Malformed JSON",
            "the body is not valid JSON",
            request.url.path,
        )
    return problem_response(
        422,
        "validation",
        "Invalid request",
        "the request does not match its schema",
        request.url.path,
        errors=errors,
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
        # FastAPI could not parse the body: not UTF-8, or JSON nested deeper than the
        # decoder's recursion limit (json.JSONDecodeError itself is a validation error)
        deep = isinstance(exc.__cause__, RecursionError)
        return problem_response(
            400,
            "malformed-json",
            "Malformed JSON",
            "the body is nested too deeply" if deep else "the body is not valid JSON",
            request.url.path,
        )
    kind = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}.get(
        exc.status_code, "http"
    )
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(
        exc.status_code, kind, str(exc.detail), None, request.url.path, headers=headers
    )


async def _on_redis(request: Request, exc: Exception) -> JSONResponse:
    api_metrics().redis_errors.inc()  # ocs_redis_errors_total{component="api"}
    log.warning("Redis error on %s: %s", request.url.path, exc)
    return problem_response(
        503,
        "unavailable",
        "Balance store unavailable",
        "try again later",
        request.url.path,
        headers={"Retry-After": "1"},
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return problem_response(500, "internal", "Internal error", None, request.url.path)


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]
HANDLERS: Final[tuple[tuple[type[Exception], Handler], ...]] = (
    (Refused, _on_problem),
    (IdentityTaken, _on_identity),
    (RequestValidationError, _on_validation),
    (StarletteHTTPException, _on_http),
    (RedisError, _on_redis),
    (TimeoutError, _on_redis),
)
"""The expected errors and their answers (anything else is a 500, ``_on_unexpected``)."""


def install(app: FastAPI) -> None:
    for exc_class, handler in HANDLERS:
        app.add_exception_handler(exc_class, handler)
    app.add_exception_handler(Exception, _on_unexpected)


async def answer_for(scope: Scope, exc: Exception) -> JSONResponse | None:
    """The answer FastAPI's handlers give ``exc`` (for code that runs outside FastAPI's
    exception middleware); None for an unexpected exception, which the caller re-raises
    to the server-error middleware (a logged 500 problem document)."""
    for exc_class, handler in HANDLERS:
        if isinstance(exc, exc_class):
            return await handler(Request(scope), exc)
    return None


class BodyLimit:
    """ASGI middleware: refuse request bodies above ``limit`` bytes with 413, whether the
    length is announced (Content-Length) or streamed (chunked)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(scope, receive, send)
                    return
        # Read the whole body first (bounded), then replay it: a refused body never reaches
        # the application, whatever it does with a failing receive().
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            "too-large",
            "Request body too large",
            f"the limit is {self.limit} bytes",
            scope.get("path"),
        )
        await response(scope, receive, send)
