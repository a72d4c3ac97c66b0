"""Command-line entry points of the API (wired by ``ocs.cli``)."""

from __future__ import annotations

import asyncio
import sys

from ocs.api.app import serve_api
from ocs.api.auth import Scope, create_token
from ocs.config import Settings
from ocs.store import open_redis


async def _create(settings: Settings, tenant: str, scope: Scope) -> str:
    handle = await open_redis(settings, timeout=10.0)
    try:
        return await create_token(handle.client, tenant, scope)
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
        token = asyncio.run(_create(settings, tenant, chosen))
    except ValueError as exc:
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 2
    print(token)
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
