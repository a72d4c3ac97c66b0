"""`ocs audit [--tenant T] [--json] [--redis-only] [--stale-after S]`: prints each
discrepancy (payer, field, expected, found), exits 1 when there is one, 0 when none, 2 when
a store cannot be reached. The subcommand and its flags are registered by
``ocs.commands.offline``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from redis.exceptions import RedisError

from ocs.audit import run_audit
from ocs.offline.db import DatabaseError, connect
from ocs.redis_client import open_redis


async def main_audit(settings: Any, args: argparse.Namespace) -> int:
    return await audit_cli(
        settings,
        tenant=args.tenant,
        as_json=args.json,
        redis_only=args.redis_only,
        stale_after=args.stale_after,
    )


async def audit_cli(
    settings: Any,
    *,
    tenant: str | None = None,
    as_json: bool = False,
    redis_only: bool = False,
    stale_after: float = 60.0,
) -> int:
    try:
        handle = await open_redis(settings)
    except (RedisError, OSError) as exc:
        print(f"ocs: error: Redis: {exc}", file=sys.stderr)
        return 2
    db = None
    try:
        if not redis_only:
            db = await connect(settings)
        report = await run_audit(
            handle.client, db, tenant=tenant, stale_after_ms=int(stale_after * 1000)
        )
    except DatabaseError as exc:
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 2
    except (RedisError, OSError) as exc:
        print(f"ocs: error: Redis: {exc}", file=sys.stderr)
        return 2
    finally:
        if db is not None:
            await db.close()
        await handle.close()
    found = report.discrepancies
    if as_json:
        doc = {
            "payers": report.payers,
            "records_checked": report.records_checked,
            "discrepancies": [d.as_dict() for d in found],
        }
        print(json.dumps(doc, indent=2))
    else:
        for d in found:
            print(d.line())
        scope = "Redis and PostgreSQL" if report.records_checked else "Redis only"
        print(f"{report.payers} payers audited ({scope}): {len(found)} discrepancies")
    return 1 if found else 0
