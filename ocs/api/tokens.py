"""Bearer tokens of a tenant, listed and revoked by its admin: ``GET /v1/tokens`` (ids,
scopes, creation times; never a secret) and ``DELETE /v1/tokens/{token_id}``.

A revoked token is refused at once by the process that revoked it; other processes (workers,
another ``ocs api``) refuse it once their token cache entry expires (``token_cache_ttl``,
5 s by default; see docs/api.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from ocs.api.auth import list_tokens, revoke_token_id
from ocs.api.problems import not_found
from ocs.api.state import Admin, Api

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


class TokenView(BaseModel):
    id: str
    scopes: list[str]
    created_at: int  # seconds since the epoch


@router.get("", summary="the tenant's bearer tokens (ids and scopes, no secrets)")
async def get_tokens(api: Api, who: Admin) -> list[TokenView]:
    return [
        TokenView(id=t.id, scopes=list(t.scopes), created_at=t.created_at)
        for t in await list_tokens(api.redis, who.tenant)
    ]


@router.delete("/{token_id}", status_code=204, summary="revoke a token of the tenant")
async def delete_token(api: Api, who: Admin, token_id: str) -> Response:
    revoked = await revoke_token_id(api.redis, who.tenant, token_id)
    if revoked is None:
        raise not_found("token", token_id)
    api.tokens.forget(revoked)
    return Response(status_code=204)
