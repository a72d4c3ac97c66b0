"""A process that makes one bulk SIM state move (or creates a SIM) and SIGKILLs itself at a
step boundary of it (tests/offline/test_journal_crash.py): ``python -m
tests.offline.crash_child move|create URL DATA TENANT STEP NTH`` dies at the NTH time the
change reaches STEP (``journal.STEP_HOOK``), with :data:`ocs.provisioning.journal.CHUNK` 3 so
that the journal takes several script calls."""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ocs.balance import BalanceStore
from ocs.provisioning import journal
from ocs.provisioning.bulk_states import BulkMove, NothingMoved, resolve
from ocs.provisioning.catalogues import TenantCatalogues
from ocs.provisioning.states import Actor
from ocs.redis_client import client_for_url

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


NEW_SIM = "262019999999998"
NEW_MSISDN = "491709999998"


async def create(catalogues: TenantCatalogues, tenant: str) -> None:
    """A change that creates a SIM (new identities, a new MSISDN index entry)."""

    def add(state: dict[str, Any]) -> None:
        item = copy.deepcopy(state["sims"][SIMS[0]])
        item.update(imsi=NEW_SIM, msisdn=NEW_MSISDN)
        item.pop("iccid", None)
        state["sims"][NEW_SIM] = item

    await catalogues.change(tenant, add, source="create")


async def main(what: str, url: str, data: str, tenant: str, step: str, nth: int) -> None:
    seen = 0

    def hook(name: str) -> None:
        nonlocal seen
        if name == step:
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    journal.CHUNK = 3  # type: ignore[misc]
    journal.STEP_HOOK = hook
    redis = client_for_url(url, timeout=10)  # a single server or a Redis Cluster
    catalogues = TenantCatalogues(BalanceStore(redis), Path(data))
    await (move if what == "move" else create)(catalogues, tenant)
    sys.exit(3)  # not killed: the step was never reached


if __name__ == "__main__":
    what, url, data, tenant, step, nth = sys.argv[1:]
    asyncio.run(main(what, url, data, tenant, step, int(nth)))
