"""Command-line entry points of the API (wired by ``ocs.commands.serve``). Errors are raised
(:mod:`ocs.errors`); ``ocs.cli`` reports them."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime

from ocs.api.asgi import serve_api
from ocs.api.auth import (
    OPERATOR_TENANT,
    TENANT_RE,
    Scope,
    TokenInfo,
    index_existing_tokens,
    issue_token,
    list_tokens,
    revoke_token_id,
)
from ocs.balance.keys import CATALOG
from ocs.config import Settings
from ocs.errors import CommandError, UsageError
from ocs.provisioning.keys import IN_FORCE, state_key
from ocs.redis_client import RedisClient, open_redis


async def _in_force(redis: RedisClient, tenant: str) -> bool:
    """A catalogue is in force for ``tenant``: applied over the API or by ``ocs catalog
    apply`` / ``ocs demo`` (its state, the tenants in force, or the single pointer)."""
    if await redis.hexists(IN_FORCE, tenant) or await redis.exists(state_key(tenant)):
        return True
    applied = await redis.hget(CATALOG, "tenant")
    if applied is None:
        return False
    return (applied.decode() if isinstance(applied, bytes) else str(applied)) == tenant


async def _create(settings: Settings, tenant: str, scope: Scope) -> tuple[str, str]:
    handle = await open_redis(settings, timeout=10.0)
    try:
        if scope is not Scope.OPERATOR and not await _in_force(handle.client, tenant):
            where = settings.redis_url or f"the embedded Redis in {settings.data_dir}"
            raise UsageError(
                f"--tenant: {tenant!r} has no catalogue in force in {where} (apply one with"
                " `ocs catalog apply FOLDER` or run `ocs demo` on the same store)"
            )
        return await issue_token(handle.client, tenant, scope)
    finally:
        await handle.close()


def main_token_create(
    settings: Settings, tenant: str | None, scope: str | None, *, operator: bool = False
) -> int:
    """``ocs token create --tenant NAME --scope admin``: print a new token (shown once);
    ``--operator``: an operator token, of no tenant (``ocs.api.auth``)."""
    if operator:
        if tenant is not None or scope is not None:
            raise UsageError("--operator: an operator token has no --tenant and no --scope")
        token, ident = asyncio.run(_create(settings, OPERATOR_TENANT, Scope.OPERATOR))
        print(token)
        print(
            f"ocs: operator token id {ident} (ocs token revoke {ident} --operator)", file=sys.stderr
        )
        return 0
    if tenant is None or scope is None:
        raise UsageError("give --tenant and --scope (or --operator)")
    try:
        chosen = Scope(scope)
    except ValueError:
        names = ", ".join(s.value for s in Scope)
        raise UsageError(f"--scope: unknown scope {scope!r} (one of {names})") from None
    if not TENANT_RE.match(tenant):
        raise UsageError(f"--tenant: {tenant!r} is not a tenant id")
    token, ident = asyncio.run(_create(settings, tenant, chosen))
    print(token)
    print(f"ocs: token id {ident} (ocs token revoke {ident} --tenant {tenant})", file=sys.stderr)
    return 0


async def _revoke(settings: Settings, tenant: str, ident: str) -> bool:
    handle = await open_redis(settings, timeout=10.0)
    try:
        return await revoke_token_id(handle.client, tenant, ident) is not None
    finally:
        await handle.close()


def main_token_revoke(
    settings: Settings, ident: str, tenant: str | None, *, operator: bool = False
) -> int:
    """``ocs token revoke ID --tenant NAME``: the token is refused from now on (by a
    running API within ``token_cache_ttl`` seconds, its token cache); ``--operator``: an
    operator token."""
    if operator == (tenant is not None):
        raise UsageError("give --tenant NAME or --operator")
    tenant = OPERATOR_TENANT if operator else tenant
    assert tenant is not None
    if not asyncio.run(_revoke(settings, tenant, ident)):
        raise CommandError(f"tenant {tenant!r} has no token {ident!r}")
    print(f"revoked {ident} of tenant {tenant}")
    return 0


async def _list(settings: Settings, tenant: str | None) -> list[TokenInfo]:
    handle = await open_redis(settings, timeout=10.0)
    try:
        tenants = await index_existing_tokens(handle.client)
        chosen = [tenant] if tenant is not None else sorted(tenants)
        return [t for name in chosen for t in await list_tokens(handle.client, name)]
    finally:
        await handle.close()


def main_token_list(settings: Settings, tenant: str | None, *, as_json: bool) -> int:
    """``ocs token list [--tenant NAME] [--json]``: ids, tenants, scopes and creation times
    of the tokens; never a token."""
    found = asyncio.run(_list(settings, tenant))
    if as_json:
        rows = [
            {"id": t.id, "tenant": t.tenant, "scopes": list(t.scopes), "created_at": t.created_at}
            for t in found
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for t in found:
        created = datetime.fromtimestamp(t.created_at, UTC).isoformat(timespec="seconds")
        print(f"{t.id}  {t.tenant}  {','.join(t.scopes)}  {created}")
    return 0


def main_api(settings: Settings) -> int:
    """``ocs api``: the HTTP API alone (``--http-port``) until SIGTERM/SIGINT."""
    try:
        asyncio.run(serve_api(settings))
    except KeyboardInterrupt:
        return 130
    return 0
