"""Opaque, signed pagination cursors.

A cursor is ``base64url(JSON) "." base64url(HMAC-SHA256[:16])``: the JSON names the query it
belongs to (route, tenant, subject and parameters) and the position after the last item
returned. The key is one per installation, in Redis (``ocs:api:cursor-key``, created once
with ``SET NX``), so every API worker accepts every worker's cursors. A cursor that was
altered, belongs to another query (or tenant), or is not one at all is answered 400
``invalid-cursor``; nothing of it is trusted before its signature is checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any, Final

from ocs.api.problems import Problem
from ocs.api.state import ApiState

KEY: Final = "ocs:api:cursor-key"
MAX_CURSOR: Final = 1024  # characters
_SIG: Final = 16


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def _key(api: ApiState) -> bytes:
    if api.cursor_key is None:
        await api.redis.set(KEY, os.urandom(32).hex(), nx=True)
        raw: Any = await api.redis.get(KEY)
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        api.cursor_key = bytes.fromhex(text)
    return api.cursor_key


async def encode(api: ApiState, query: dict[str, Any], position: Any) -> str:
    body = json.dumps({"q": query, "p": position}, separators=(",", ":"), sort_keys=True)
    raw = body.encode()
    sig = hmac.new(await _key(api), raw, hashlib.sha256).digest()[:_SIG]
    return f"{_b64(raw)}.{_b64(sig)}"


def _invalid(detail: str) -> Problem:
    return Problem(400, "invalid-cursor", "Invalid cursor", detail)


async def decode(api: ApiState, cursor: str, query: dict[str, Any]) -> Any:
    """The position in ``cursor``, which must be ours and belong to ``query``."""
    body, dot, sig = cursor.partition(".")
    if not dot or len(cursor) > MAX_CURSOR:
        raise _invalid("not a cursor of this API (pass next_cursor back unchanged)")
    try:
        raw, given = _unb64(body), _unb64(sig)
    except ValueError:
        raise _invalid("not a cursor of this API (pass next_cursor back unchanged)") from None
    expected = hmac.new(await _key(api), raw, hashlib.sha256).digest()[:_SIG]
    if not hmac.compare_digest(expected, given):
        raise _invalid("the cursor was altered or is not from this installation")
    data = json.loads(raw)
    if data.get("q") != query:
        raise _invalid("the cursor belongs to another query (same path and parameters needed)")
    return data.get("p")
