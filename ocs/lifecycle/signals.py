"""Re-Auth / Abort-Session requests to a pool's live sessions after the lifecycle pass changed
the pool, through the network side the HTTP API uses (:class:`ocs.network.NetworkCommands`:
look the SIMs' open sessions up, publish each command on the channel of the worker holding
the session). No new bus.

* a renewal (new allowance) or a lifted suspension: RAR, so that gateways ask again (as the
  API does after a top-off);
* a suspension for an unpaid renewal: ASR (as the API does after a subscription suspend).

Only the worker whose script call made the change signals (the scripts answer "renewed",
"held" to that call alone), so several workers running the pass send one command per
session and change. An auto top-off bought inside ``charge.lua`` needs none: the CCR that
triggered it gets the quota in its answer."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

from redis.exceptions import RedisError

from ocs.network.dispatch import NetworkCommands

log = logging.getLogger(__name__)

RAR: Final = "rar"
ASR: Final = "asr"
Sims = Iterable[tuple[str, str, str | None]]
"""(tenant, IMSI, MSISDN) of each SIM: its sessions are looked up in its tenant's index."""


class SessionSignals:
    """Sends what a pass collected (operation -> SIMs), one session lookup per operation."""

    def __init__(self, redis: Any) -> None:
        self.network = NetworkCommands(redis)

    async def send(self, pending: Mapping[str, Sims]) -> dict[str, int]:
        """Send ``pending``; how many sessions each operation was published for (to
        the worker holding the session, or another with a connection from its peer). A
        Redis error is logged, not raised: the change is made, and the sessions pick it up
        on their next CCR (a suspended pool's get 4012), as before this signal existed."""
        sent: dict[str, int] = {}
        for op, sims in pending.items():
            by_tenant: dict[str, list[tuple[str, str | None]]] = {}
            for tenant, imsi, msisdn in dict.fromkeys(sims):
                by_tenant.setdefault(tenant, []).append((imsi, msisdn))
            outcomes: list[dict[str, Any]] = []
            try:
                for tenant, pairs in by_tenant.items():
                    sessions = await self.network.sessions(tenant, pairs)
                    if sessions:
                        outcomes += await self.network.send(op, sessions)
            except (RedisError, OSError) as exc:
                log.warning("lifecycle %s to the pools' sessions not sent: %s", op, exc)
                continue
            # a session whose worker is gone (and no other holds its peer) is dropped
            n = sum(1 for o in outcomes if o["status"] != "no_worker")
            if n:
                sent[op] = n
        return sent
