"""Bearer tokens per tenant with scopes. A token is 32 random bytes (URL-safe base64);
only its SHA-256 is stored, under :func:`ocs.api.keys.token_key`, with the tenant and the
scopes. ``admin`` implies ``top-up`` and ``read``; ``top-up`` implies ``read``.

An operator token (``ocs token create --operator``) belongs to no tenant: it is stored under
:data:`OPERATOR_TENANT`, a name no tenant id can take, with the one scope ``operator``, which
no tenant token has. It reaches the operator routes (``/v1/operator/...``: moving a SIM
between tenants) and nothing of any tenant; tenant tokens never reach the operator routes.

A token's public id is the first 16 hex digits of its digest; the tenant's index
(:func:`ocs.api.keys.tokens_key`) lists them for ``GET /v1/tokens`` and ``ocs token list``
and finds the token to revoke by id. :class:`Authenticate` checks the token of every
request under ``/v1/`` before its body is read."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from ocs.api.keys import token_key, tokens_key
from ocs.api.problems import Problem, answer_for
from ocs.redis_client import RedisClient

TOKEN_BYTES: Final = 32
TENANT_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class Scope(StrEnum):
    READ = "read"
    TOP_UP = "top-up"
    ADMIN = "admin"
    OPERATOR = "operator"


OPERATOR_TENANT: Final = "@operator"
"""The owner of operator tokens: not a tenant id (:data:`TENANT_RE`), so a tenant route
called with an operator token finds nothing of any tenant (it needs a tenant scope anyway)."""


IMPLIED: Final = {
    Scope.READ: frozenset({Scope.READ}),
    Scope.TOP_UP: frozenset({Scope.READ, Scope.TOP_UP}),
    Scope.ADMIN: frozenset({Scope.READ, Scope.TOP_UP, Scope.ADMIN}),
    Scope.OPERATOR: frozenset({Scope.OPERATOR}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    scopes: frozenset[Scope]
    token: str = ""  # the token's public id (:func:`token_id`): who acted, for audit entries

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes:
            raise Problem(403, "forbidden", "Insufficient scope", f"this needs scope {scope!r}")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKEN_ID_HEX: Final = 16  # the public id of a token: the first 64 bits of its digest


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What may be shown of a token: never the token, nor its digest."""

    id: str
    tenant: str
    scopes: tuple[str, ...]
    created_at: int


def token_id(token_digest: str) -> str:
    return token_digest[:TOKEN_ID_HEX]


async def issue_token(redis: RedisClient, tenant: str, scope: Scope) -> tuple[str, str]:
    """A new token for ``tenant`` and its id; only its digest is stored, with an entry in
    the tenant's token index (what ``GET /v1/tokens`` and ``ocs token list`` read)."""
    if (scope is Scope.OPERATOR) != (tenant == OPERATOR_TENANT):
        raise ValueError(f"scope {scope.value!r} is not for {tenant!r}: operator tokens only")
    if not TENANT_RE.match(tenant) and tenant != OPERATOR_TENANT:
        raise ValueError(f"invalid tenant id {tenant!r}")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    key = digest(token)
    scopes = ",".join(sorted(IMPLIED[scope]))
    created = int(time.time())
    await _index(redis, tenant, key, scopes, created)
    await redis.hset(
        token_key(key),
        mapping={"tenant": tenant, "scopes": scopes, "created_at": str(created)},
    )
    return token, token_id(key)


async def create_token(redis: RedisClient, tenant: str, scope: Scope) -> str:
    """A new token for ``tenant`` (:func:`issue_token` without the id)."""
    return (await issue_token(redis, tenant, scope))[0]


async def _index(redis: RedisClient, tenant: str, key: str, scopes: str, created: int) -> None:
    entry = json.dumps({"digest": key, "scopes": scopes, "created_at": created})
    await redis.hset(tokens_key(tenant), token_id(key), entry)


async def list_tokens(redis: RedisClient, tenant: str) -> list[TokenInfo]:
    """The tenant's tokens, oldest first."""
    raw = await redis.hgetall(tokens_key(tenant))
    out = []
    for ident, value in raw.items():
        entry = json.loads(value)
        out.append(
            TokenInfo(
                _s(ident),
                tenant,
                tuple(s for s in str(entry["scopes"]).split(",") if s),
                int(entry["created_at"]),
            )
        )
    return sorted(out, key=lambda t: (t.created_at, t.id))


async def revoke_token_id(redis: RedisClient, tenant: str, ident: str) -> str | None:
    """Revoke the tenant's token ``ident``; its digest (for :meth:`TokenCache.forget`), or
    None when the tenant has no such token."""
    raw = await redis.hget(tokens_key(tenant), ident)
    if raw is None:
        return None
    key = str(json.loads(raw)["digest"])
    await redis.delete(token_key(key))
    await redis.hdel(tokens_key(tenant), ident)
    return key


async def revoke_token(redis: RedisClient, token: str) -> bool:
    """Revoke a token given itself."""
    key = digest(token)
    tenant = await redis.hget(token_key(key), "tenant")
    deleted = bool(await redis.delete(token_key(key)))
    if tenant is not None:
        await redis.hdel(tokens_key(_s(tenant)), token_id(key))
    return deleted


async def index_existing_tokens(redis: RedisClient) -> set[str]:
    """The tenants holding tokens, after adding any token created before token ids existed
    to its tenant's index (one SCAN of the token keys; ``ocs token list`` runs it)."""
    tenants: set[str] = set()
    prefix = token_key("")
    async for name in redis.scan_iter(match=prefix + "*", count=1000):
        key = _s(name)[len(prefix) :]
        raw = await redis.hgetall(token_key(key))
        fields = {_s(k): _s(v) for k, v in raw.items()}
        tenant = fields.get("tenant", "")
        if not TENANT_RE.match(tenant):
            continue
        tenants.add(tenant)
        if not await redis.hexists(tokens_key(tenant), token_id(key)):
            created = int(fields.get("created_at") or 0)
            await _index(redis, tenant, key, fields.get("scopes", ""), created)
    return tenants


class TokenCache:
    """Verified tokens for ``ttl`` seconds (``token_cache_ttl``), so a request does not cost
    an extra round trip. A token revoked elsewhere (``ocs token revoke``, another process) is
    still accepted here until its entry expires; :meth:`forget` drops it at once."""

    def __init__(self, redis: RedisClient, ttl: float = 5.0) -> None:
        self.redis = redis
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def forget(self, token_digest: str) -> None:
        self._cache.pop(token_digest, None)

    async def principal(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise _unauthorized("a bearer token is required")
        token = authorization[7:].strip()
        if not token or len(token) > 256:
            raise _unauthorized("invalid token")
        key = digest(token)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            found = hit[1]
        else:
            raw = await self.redis.hgetall(token_key(key))
            found = None
            if raw:
                fields = {_s(k): _s(v) for k, v in raw.items()}
                scopes = frozenset(Scope(s) for s in fields["scopes"].split(",") if s)
                found = Principal(fields["tenant"], scopes, token_id(key))
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self.ttl, found)
        if found is None:
            raise _unauthorized("invalid token")
        return found


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", detail)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


PRINCIPAL: Final = "ocs.principal"  # the ASGI scope key Authenticate leaves the caller under
TOKEN_ROUTES: Final = "/v1/"  # every route under it needs a bearer token


class Authenticate:
    """ASGI middleware, outermost: a request to a route that needs a token is authenticated
    from its headers before a byte of its body is read, so no token, or an unknown or
    revoked one, is a 401 problem document whatever the body holds (size, nesting). The
    caller is left in the scope (:data:`PRINCIPAL`) for the routes' dependency and the hot
    routes; the scope a route needs (403) is the route's own check."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(TOKEN_ROUTES):
            authorization = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            try:
                scope[PRINCIPAL] = await scope["app"].state.api.tokens.principal(authorization)
            except Exception as exc:
                response = await answer_for(scope, exc)
                if response is None:
                    raise
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
