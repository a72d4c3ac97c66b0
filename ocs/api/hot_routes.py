"""The two hot routes, wallet top-up and wallet read, answered without FastAPI's routing,
dependency injection and request/response machinery when the request is well formed.

FastAPI spent most of a top-up's server CPU on itself (routing through the included
routers, solving four dependencies, building the request, parsing and validating the
body, wrapping the sender); see ``docs/benchmarks-api.md``. This ASGI middleware sits
innermost, behind every other middleware of the app (body limits, metrics), and takes

- ``GET /v1/wallets/{wallet_id}`` with a bearer token of scope ``read``, and
- ``POST /v1/wallets/{wallet_id}/top-ups`` with a bearer token of scope ``top-up``, a
  ``Content-Type: application/json`` body that :class:`~ocs.api.models.MoneyMove`
  accepts and one valid ``Idempotency-Key`` header.

Anything else, including every input FastAPI would refuse (no or bad token, wrong scope,
malformed JSON, invalid body or key), goes on to FastAPI unchanged (the body replayed), so
every refusal is FastAPI's own answer. An accepted request runs the same handler function
as the FastAPI route (:func:`~ocs.api.wallets.read_wallet`,
:func:`~ocs.api.wallets.credit_wallet`); an error it raises (unknown wallet, currency,
reused Idempotency-Key, Redis down) gets the answer of the app's exception handlers
(:func:`~ocs.api.problems.answer_for`), and an unexpected one goes up to the app's
server-error middleware as it would from the route. ``tests/api/test_hot_routes.py``
checks both ways give the same answers.
"""

from __future__ import annotations

import json
import re
from typing import Final

from fastapi.security.utils import get_authorization_scheme_param
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocs.api.auth import PRINCIPAL, Principal
from ocs.api.auth import Scope as TokenScope
from ocs.api.idempotency import KEY_PATTERN
from ocs.api.models import MoneyMove
from ocs.api.problems import answer_for
from ocs.api.state import ApiState
from ocs.api.views import json_response
from ocs.api.wallets import credit_wallet, read_wallet, router

PREFIX: Final = router.prefix + "/"
TOP_UPS: Final = "/top-ups"
KEY_RE: Final = re.compile(KEY_PATTERN)
JSON_TYPE: Final = b"application/json"


class HotRoutes:
    """ASGI middleware: answer well-formed top-ups and wallet reads directly."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(PREFIX):
                rest = path[len(PREFIX) :]
                method = scope["method"]
                if method == "GET" and rest and "/" not in rest:
                    if await self._read(scope, send, rest):
                        return
                elif method == "POST" and rest.endswith(TOP_UPS):
                    wallet_id = rest[: -len(TOP_UPS)]
                    if wallet_id and "/" not in wallet_id:
                        body = await _body(receive)
                        if body is None:
                            return  # the client went away
                        if await self._top_up(scope, send, wallet_id, body):
                            return
                        receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _read(self, scope: Scope, send: Send, wallet_id: str) -> bool:
        who = await _principal(scope, _headers(scope), TokenScope.READ)
        if who is None:
            return False
        api = _api(scope)
        api.hot_answers += 1
        try:
            view = await read_wallet(api, who.tenant, wallet_id)
        except Exception as exc:
            await _answer_error(scope, send, exc)
            return True
        await json_response(view)(scope, _nothing, send)
        return True

    async def _top_up(self, scope: Scope, send: Send, wallet_id: str, body: bytes) -> bool:
        headers = _headers(scope)
        key = headers.get(b"idempotency-key")
        if headers.get(b"content-type") != JSON_TYPE or key is None or not body:
            return False
        try:
            key_text = key.decode("ascii")
            move = MoneyMove.model_validate(json.loads(body))
        except (ValueError, ValidationError, RecursionError):  # bad or too deep JSON, ...
            return False
        if not KEY_RE.fullmatch(key_text):
            return False
        who = await _principal(scope, headers, TokenScope.TOP_UP)
        if who is None:
            return False
        api = _api(scope)
        api.hot_answers += 1
        try:
            result = await credit_wallet(api, who.tenant, wallet_id, move, key_text)
        except Exception as exc:
            await _answer_error(scope, send, exc)
            return True
        await json_response(result, 201)(scope, _nothing, send)
        return True


def _api(scope: Scope) -> ApiState:
    api: ApiState = scope["app"].state.api
    return api


def _headers(scope: Scope) -> dict[bytes, bytes | None]:
    """Header name -> value; None for a header that came more than once (FastAPI would
    read the first: such a request goes the long way)."""
    out: dict[bytes, bytes | None] = {}
    for name, value in scope["headers"]:
        out[name] = None if name in out else value
    return out


async def _principal(
    scope: Scope, headers: dict[bytes, bytes | None], needed: TokenScope
) -> Principal | None:
    """The caller as the route's dependency finds it (:class:`~ocs.api.auth.Authenticate`
    left it in the scope, else ``HTTPBearer`` then the token cache); None when the route
    would refuse it (401, 403) or cannot tell (Redis down): then FastAPI answers."""
    found: Principal | None = scope.get(PRINCIPAL)
    if found is not None:
        return found if needed in found.scopes else None
    raw = headers.get(b"authorization")
    if raw is None:
        return None
    authorization = raw.decode("latin-1")
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (scheme and credentials) or scheme.lower() != "bearer":
        return None
    try:
        who = await _api(scope).tokens.principal(f"Bearer {credentials}")
        who.require(needed)
    except Exception:  # FastAPI's dependency answers it (401, 403, 503)
        return None
    return who


async def _answer_error(scope: Scope, send: Send, exc: Exception) -> None:
    response = await answer_for(scope, exc)
    if response is None:
        raise exc
    await response(scope, _nothing, send)


async def _body(receive: Receive) -> bytes | None:
    """The whole request body (its size is bounded by the app's body-limit middleware);
    None if the client went away."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _nothing() -> Message:
    """``receive`` for a response sent after the body was read (it never reads)."""
    return {"type": "http.disconnect"}
