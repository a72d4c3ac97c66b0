"""`ocs audit`: are the balances in Redis consistent in themselves, and with the usage
records drained to PostgreSQL? (issue 12). Reads ``ocs.balance``'s keys and
``ocs.offline``'s tables; imported by the CLI and by `ocs serve`'s periodic audit, never by
the layers it reads."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

from ocs.audit.checks import Discrepancy, audit_records, audit_redis, payers_of
from ocs.offline.db import Database
from ocs.redis_client import RedisClient

STALE_AFTER_MS: Final = 60_000  # a reservation this long past its reclaim deadline is stale

__all__ = ["STALE_AFTER_MS", "AuditReport", "Discrepancy", "run_audit"]


@dataclass(slots=True)
class AuditReport:
    payers: int = 0
    records_checked: bool = False  # the cross-store check ran (a database was given)
    discrepancies: list[Discrepancy] = field(default_factory=list)


async def run_audit(
    redis: RedisClient,
    db: Database | None,
    *,
    tenant: str | None = None,
    now_ms: int | None = None,
    stale_after_ms: int = STALE_AFTER_MS,
) -> AuditReport:
    """Every check of :mod:`ocs.audit.checks` over the payers of ``tenant`` (all tenants
    when None); the cross-store check only with ``db``."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    payers = await payers_of(redis, tenant)
    report = AuditReport(payers=len(payers), records_checked=db is not None)
    report.discrepancies += await audit_redis(redis, payers, now, stale_after_ms)
    if db is not None:
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for payer in payers:
            by_tenant[payer.split(":", 1)[0]].append(payer)
        for name, tagged in sorted(by_tenant.items()):
            report.discrepancies += await audit_records(redis, db, name, tagged)
    return report
