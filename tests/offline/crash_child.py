"""A process that makes one bulk SIM state move and SIGKILLs itself at a step boundary of
it (tests/offline/test_journal_crash.py): ``python -m tests.offline.crash_child URL DATA
TENANT STEP NTH`` dies at the NTH time the change reaches STEP (``journal.STEP_HOOK``), with
:data:`ocs.provisioning.journal.CHUNK` 3 so that the journal takes several script calls."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from redis.asyncio import Redis

from ocs.balance import BalanceStore
from ocs.provisioning import journal
from ocs.provisioning.bulk_states import BulkMove, NothingMoved, resolve
from ocs.provisioning.catalogues import TenantCatalogues
from ocs.provisioning.states import Actor

SIMS = ("262019999999999", *(str(262010000000010 + n) for n in range(6)))
TO = "suspended"


async def move(catalogues: TenantCatalogues, tenant: str) -> int | None:
    """The bulk move (what a client sends, and sends again when it got no answer): its
    revision, or None when every SIM was already in the state."""
    catalogue = (await catalogues.compiled(tenant)).catalogue
    bulk = BulkMove(resolve(catalogue, {}, [("imsi", i) for i in SIMS]), TO)
    try:
        applied = await catalogues.change(
            tenant, bulk, source="bulk", actor=Actor("token", "ops"), reason="unpaid"
        )
    except NothingMoved:
        return None
    return applied.revision


async def main(url: str, data: str, tenant: str, step: str, nth: int) -> None:
    seen = 0

    def hook(name: str) -> None:
        nonlocal seen
        if name == step:
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    journal.CHUNK = 3  # type: ignore[misc]
    journal.STEP_HOOK = hook
    redis = Redis.from_url(url)
    await move(TenantCatalogues(BalanceStore(redis), Path(data)), tenant)
    sys.exit(3)  # not killed: the step was never reached


if __name__ == "__main__":
    url, data, tenant, step, nth = sys.argv[1:]
    asyncio.run(main(url, data, tenant, step, int(nth)))
