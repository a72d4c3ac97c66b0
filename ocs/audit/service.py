"""The audit `ocs serve` runs every ``audit_interval`` seconds (0: never): the Redis checks
always, the cross-store check when ``database_url`` is set. It exports
``ocs_audit_discrepancies`` (alert ``OcsAuditDiscrepancies``) and the time of the last
complete audit, and logs one WARNING per audit that finds something (the first few
discrepancies named; `ocs audit` prints them all)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

from ocs.audit import run_audit
from ocs.charging.errors import is_store_outage
from ocs.observability.metrics import AuditMetrics
from ocs.offline.db import Database, DatabaseError, connect
from ocs.redis_client import RedisClient

log = logging.getLogger(__name__)

NAMED: Final = 5  # discrepancies named in the log line


class AuditService:
    def __init__(
        self, settings: Any, redis: RedisClient, metrics: AuditMetrics, interval: float
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        self.interval = interval
        self._db: Database | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="ocs-audit")

    async def once(self) -> int:
        """One audit; the number of discrepancies (also exported)."""
        if self._db is None and getattr(self.settings, "database_url", None):
            self._db = await connect(self.settings, max_size=2)
        report = await run_audit(self.redis, self._db)
        found = report.discrepancies
        self.metrics.discrepancies.set(len(found))
        self.metrics.last_run.set(time.time())
        if found:
            log.warning(
                "audit: %d discrepancies over %d payers: %s",
                len(found),
                report.payers,
                "; ".join(d.line() for d in found[:NAMED]),
            )
        return len(found)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.once()
            except DatabaseError as exc:
                log.warning("audit skipped: %s", exc)
            except Exception as exc:
                if not is_store_outage(exc):
                    log.exception("audit failed")
                # an outage: the charging path logs it once; the next pass tries again

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._db is not None:
            await self._db.close()
            self._db = None
