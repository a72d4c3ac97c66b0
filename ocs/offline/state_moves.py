"""Durable audit of SIM state moves (docs/sim-states.md): every move journaled in Redis with
the catalogue state that made it (``ocs.provisioning.keys.state_moves_key``, one stream per
tenant) is copied into PostgreSQL (``sim_state_changes``) by ``ocs cdr drain``, then deleted
from the stream. Exactly once: the Redis entry id is the row's key, and an entry is deleted
only after the transaction that stored it committed (a crash in between stores it again,
``ON CONFLICT DO NOTHING``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

from ocs.offline.crypto import TenantCipher, tenant_cipher
from ocs.offline.db import Database, enter_tenant
from ocs.provisioning.keys import IN_FORCE, state_moves_key
from ocs.redis_client import RedisClient

BATCH: Final = 1000
INSERT: Final = (
    "INSERT INTO sim_state_changes (tenant_id, stream_id, imsi_bidx, imsi_enc, range_id,"
    " from_state, to_state, actor, reason, at, revision)"
    " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (tenant_id, stream_id) DO NOTHING"
)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(fields: dict[Any, Any]) -> dict[str, Any]:
    raw: bytes | str = fields.get(b"entry") or fields["entry"]
    entry: dict[str, Any] = json.loads(_s(raw))
    return entry


def _row(tenant: str, eid: str, entry: dict[str, Any], cipher: TenantCipher) -> tuple[Any, ...]:
    imsi = entry.get("imsi")
    return (
        tenant,
        eid,
        cipher.bidx(imsi) if imsi else None,
        cipher.encrypt(imsi) if imsi else None,
        entry.get("range"),
        str(entry["from"]),
        str(entry["to"]),
        str(entry["by"]),
        str(entry.get("reason", ""))[:500],
        datetime.fromisoformat(str(entry["at"])),
        int(entry["revision"]),
    )


async def drain_state_moves(redis: RedisClient, db: Database, master: bytes) -> int:
    """Copy every tenant's journaled state moves into PostgreSQL; how many were copied."""
    tenants = sorted(_s(t) for t in await redis.hkeys(IN_FORCE))
    copied = 0
    for tenant in tenants:
        key = state_moves_key(tenant)
        while True:
            entries: Any = await redis.xrange(key, count=BATCH)
            if not entries:
                break
            async with db.pool.acquire() as conn, conn.transaction():
                await enter_tenant(conn, tenant)
                cipher = await tenant_cipher(conn, tenant, master)
                rows = [_row(tenant, _s(eid), _entry(fields), cipher) for eid, fields in entries]
                await conn.executemany(INSERT, rows)
            await redis.xdel(key, *[eid for eid, _ in entries])
            copied += len(entries)
    return copied
