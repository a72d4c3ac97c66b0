"""Command-line entry points of the API (wired by ``ocs.cli``)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime

from redis.exceptions import RedisError

from ocs.api.app import serve_api
from ocs.api.auth import (
    Scope,
    TokenInfo,
    index_existing_tokens,
    issue_token,
    list_tokens,
    revoke_token_id,
)
from ocs.config import Settings
from ocs.store import open_redis


async def _create(settings: Settings, tenant: str, scope: Scope) -> tuple[str, str]:
    handle = await open_redis(settings, timeout=10.0)
    try:
        return await issue_token(handle.client, tenant, scope)
    finally:
        await handle.close()


def main_token_create(settings: Settings, tenant: str, scope: str) -> int:
    """``ocs token create --tenant NAME --scope admin``: print a new token (shown once)."""
    try:
        chosen = Scope(scope)
    except ValueError:
        names = ", ".join(s.value for s in Scope)
        print(f"ocs: error: unknown scope {scope!r} (one of {names})", file=sys.stderr)
        return 2
    try:
        token, ident = asyncio.run(_create(settings, tenant, chosen))
    except ValueError as exc:
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(f"ocs: token id {ident} (ocs token revoke {ident} --tenant {tenant})", file=sys.stderr)
    return 0


async def _revoke(settings: Settings, tenant: str, ident: str) -> bool:
    handle = await open_redis(settings, timeout=10.0)
    try:
        return await revoke_token_id(handle.client, tenant, ident) is not None
    finally:
        await handle.close()


def main_token_revoke(settings: Settings, ident: str, tenant: str) -> int:
    """``ocs token revoke ID --tenant NAME``: the token is refused from now on (by a
    running API within ``token_cache_ttl`` seconds, its token cache)."""
    try:
        revoked = asyncio.run(_revoke(settings, tenant, ident))
    except (RedisError, OSError) as exc:
        print(f"ocs: error: Redis: {exc}", file=sys.stderr)
        return 2
    if not revoked:
        print(f"ocs: error: tenant {tenant!r} has no token {ident!r}", file=sys.stderr)
        return 1
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
    try:
        found = asyncio.run(_list(settings, tenant))
    except (RedisError, OSError) as exc:
        print(f"ocs: error: Redis: {exc}", file=sys.stderr)
        return 2
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
    """``ocs api``: the HTTP API alone (``--http-port``)."""
    try:
        asyncio.run(serve_api(settings))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a port taken, an address not ours
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 2
    return 0
