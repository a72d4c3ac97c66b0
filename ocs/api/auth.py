"""Bearer tokens per tenant with scopes. A token is 32 random bytes (URL-safe base64);
only its SHA-256 is stored, under :func:`ocs.api.keys.token_key`, with the tenant and the
scopes. ``admin`` implies ``top-up`` and ``read``; ``top-up`` implies ``read``."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from ocs.api.keys import token_key
from ocs.api.problems import Problem
from ocs.store import RedisClient

TOKEN_BYTES: Final = 32
TENANT_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class Scope(StrEnum):
    READ = "read"
    TOP_UP = "top-up"
    ADMIN = "admin"


IMPLIED: Final = {
    Scope.READ: frozenset({Scope.READ}),
    Scope.TOP_UP: frozenset({Scope.READ, Scope.TOP_UP}),
    Scope.ADMIN: frozenset({Scope.READ, Scope.TOP_UP, Scope.ADMIN}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    scopes: frozenset[Scope]

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes:
            raise Problem(403, "forbidden", "Insufficient scope", f"this needs scope {scope!r}")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(redis: RedisClient, tenant: str, scope: Scope) -> str:
    """A new token for ``tenant``; only its digest is stored."""
    if not TENANT_RE.match(tenant):
        raise ValueError(f"invalid tenant id {tenant!r}")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    scopes = ",".join(sorted(IMPLIED[scope]))
    await redis.hset(
        token_key(digest(token)),
        mapping={"tenant": tenant, "scopes": scopes, "created_at": str(int(time.time()))},
    )
    return token


async def revoke_token(redis: RedisClient, token: str) -> bool:
    return bool(await redis.delete(token_key(digest(token))))


class TokenCache:
    """Verified tokens for a few seconds, so a read does not cost an extra round trip."""

    def __init__(self, redis: RedisClient, ttl: float = 5.0) -> None:
        self.redis = redis
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Principal | None]] = {}

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
                found = Principal(fields["tenant"], scopes)
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
