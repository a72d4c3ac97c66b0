"""Crash safety: `ocs serve` is SIGKILLed in the middle of concurrent sessions on one prepaid
pool, restarted, and the gateway carries on (resending what went unanswered, as a PGW does).

Invariant on the pool, exactly: initial = available + committed (the sum of the payer stream's
usage records) + reserved. The orphaned reservations (sessions never terminated) are reclaimed
by the restarted server itself after Validity-Time + grace (2 s + 1 s here), leaving
reserved = 0 and the invariant intact.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ocs.audit import run_audit
from ocs.balance import BalanceStore
from ocs.diameter.codec import Message
from ocs.diameter.constants import FLAG_RETRANSMIT
from ocs.diameter.node import Node
from ocs.diameter.peer import LocalConfig
from ocs.diameter.transport import DiameterProtocol, connect
from ocs.redis_client import RedisClient
from tests.balance.helpers import assert_conserved
from tests.charging.ccr import MsccSpec, build_ccr
from tests.charging.conftest import ANSWER_TIMEOUT, CLIENT, DEMO
from tests.charging.helpers import ACME_POOL, bucket, granted, msccs
from tests.diameter.test_cli_serve import REPO, OcsServe, clean_env

MB = 1_000_000
POOL_SIZE: Final = 60 * MB  # small enough that the sessions contend for it
SESSIONS: Final = 80
KILL_AFTER: Final = 150  # answers received before the SIGKILL
RECLAIM_WAIT: Final = 60.0  # seconds at most for the restarted server to reclaim orphans
SERVER_ENV: Final = {
    "OCS_VALIDITY_TIME": "2",
    "OCS_RECLAIM_GRACE": "1",
    "OCS_PEERS": f'[{{"origin_host": "{CLIENT.origin_host}", "addresses": ["127.0.0.1"]}}]',
}


@dataclass
class Gateway:
    """The PGW side: one Diameter connection, replaced when the server comes back."""

    proto: DiameterProtocol
    answered: int = 0
    resent: int = 0
    kill_at: int = KILL_AFTER
    loaded: asyncio.Event = field(default_factory=asyncio.Event)  # kill_at answers received
    up: asyncio.Event = field(default_factory=asyncio.Event)
    crashed: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self, msg: Message) -> Message:
        """Send until answered; after a connection loss, resend the same request (same
        Session-Id and CC-Request-Number, T flag) once the server is back."""
        while True:
            await self.up.wait()
            try:
                answer = await self.proto.send_request(msg, timeout=ANSWER_TIMEOUT)
            except ConnectionError:
                self.resent += 1
                msg.flags |= FLAG_RETRANSMIT
                await self.crashed.wait()
                continue
            self.answered += 1
            if self.answered >= self.kill_at:
                self.loaded.set()
            return answer


async def _session(gw: Gateway, rng: random.Random, i: int) -> None:
    sid = f"pgw.test;crash;{i}"
    imsi = f"26201000000{i:04d}"

    def ccr(rtype: int, n: int, specs: list[MsccSpec]) -> Message:
        return build_ccr(sid, request_type=rtype, number=n, imsi=imsi, msccs=specs, rat_type=1004)

    answer = await gw.request(ccr(1, 0, [(10, MB, 0)]))
    grant = granted(msccs(answer)[10]) or 0
    updates = rng.randint(1, 4)
    for n in range(1, updates + 1):
        used = rng.randint(0, grant)  # the gateway never reports more than it was granted
        answer = await gw.request(ccr(2, n, [(10, MB, used)]))
        grant = granted(msccs(answer)[10]) or 0
        await asyncio.sleep(0)
    if rng.random() < 0.7:
        await gw.request(ccr(3, updates + 1, [(10, -1, rng.randint(0, grant))]))
    # else: abandoned, its reservation is orphaned until the server reclaims it


async def _run(tmp_path: Path, *args: str, env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ocs.cli", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")


async def _connect(port: int) -> DiameterProtocol:
    return await connect(Node(CLIENT), LocalConfig(identity=CLIENT), "127.0.0.1", port)


async def _ledger(store: BalanceStore) -> tuple[int, int, int, int]:
    """(credited, available, committed from the stream, reserved) of the demo pool."""
    pool = await bucket(store, ACME_POOL, "acme-pool")
    committed = sum(
        amount
        for rec in await store.records(ACME_POOL)
        if rec.fields["kind"] in ("usage", "refund")
        for bid, amount in rec.alloc
        if bid == "acme-pool"
    )
    return pool.credited, pool.available, committed, pool.reserved


async def test_sigkill_mid_load_keeps_the_pool_consistent_and_reclaims_orphans(
    redis: RedisClient, redis_url: str, tmp_path: Path
) -> None:
    env = clean_env(tmp_path, OCS_REDIS_URL=redis_url, **SERVER_ENV)
    await _run(tmp_path, "catalog", "apply", str(DEMO), env=env)
    store = BalanceStore(redis)
    await store.adjust(ACME_POOL, "t", [{"op": "resize", "id": "acme-pool", "size": POOL_SIZE}], 0)

    server = await OcsServe.start(tmp_path, "--port", "0", env=env)
    gw = Gateway(await _connect(server.port))
    gw.up.set()
    rng = random.Random(20240607)
    sessions = [
        asyncio.create_task(_session(gw, random.Random(rng.random()), i)) for i in range(SESSIONS)
    ]
    try:
        await asyncio.wait_for(gw.loaded.wait(), RECLAIM_WAIT)
        gw.up.clear()
        await OcsServe._reap(server.proc, signal.SIGKILL)  # mid-load: requests are in flight
        await asyncio.wait_for(gw.proto.closed, ANSWER_TIMEOUT)

        credited, available, committed, reserved = await _ledger(store)
        assert credited == POOL_SIZE
        assert available + committed + reserved == POOL_SIZE

        server = await OcsServe.start(tmp_path, "--port", "0", env=env)
        gw.proto = await _connect(server.port)
        gw.crashed.set()
        gw.up.set()
        await asyncio.gather(*sessions)
    finally:
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
    assert gw.resent > 0  # the kill did cut requests in flight

    _, available, committed, reserved = await _ledger(store)
    assert available + committed + reserved == POOL_SIZE
    await assert_conserved(store, ACME_POOL)
    usage = [r.fields["id"] for r in await store.records(ACME_POOL) if r.fields["kind"] == "usage"]
    assert len(set(usage)) == len(usage)  # resent requests were charged once

    # Nobody renews the abandoned sessions: the restarted server reclaims them by itself.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECLAIM_WAIT
    while await store.live_reservations(ACME_POOL) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.25)  # Redis state, polled: there is no event to wait on
    _, available, committed, reserved = await _ledger(store)
    assert (await store.live_reservations(ACME_POOL), reserved) == (0, 0)
    assert available + committed == POOL_SIZE
    await assert_conserved(store, ACME_POOL)
    # `ocs audit` (its Redis checks) finds nothing to report on any payer of the tenant
    audit = await run_audit(redis, None, tenant="demo")
    assert audit.payers > 0 and audit.discrepancies == []
    await _run(tmp_path, "audit", "--redis-only", "--tenant", "demo", env=env)  # exit 0

    await gw.proto.disconnect(2.0)
    assert await server.stop() == 0
