"""A Gy session belongs to the peer that opened it (issue 14): another configured peer that
knows (or guesses) its Session-Id gets 5002 DIAMETER_UNKNOWN_SESSION_ID, for a new request
as for a retransmission, and changes nothing. Two real Diameter clients over TCP, real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from ocs.balance import BalanceStore
from ocs.balance.keys import session_key
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.diameter.codec import Message
from ocs.diameter.node import Node
from ocs.diameter.peer import LocalConfig
from ocs.diameter.transport import DiameterProtocol, connect
from ocs.network.listener import NetworkAttachment
from ocs.process import Runtime, start
from ocs.rating.catalogue import Catalogue
from ocs.redis_client import RedisClient
from ocs.wiring import ChargingAttacher
from tests.balance.helpers import assert_conserved
from tests.charging.ccr import MsccSpec, build_ccr
from tests.charging.conftest import ANSWER_TIMEOUT, CLIENT, make_app, settings_for
from tests.charging.helpers import ACME_IMSI, ACME_POOL, BOB_IMSI, bucket, granted, msccs
from tests.charging.test_socket import retransmission, same_answer

MB = 1_000_000
OTHER = Identity("pgw2.test", "test")
UNKNOWN_SESSION = 5002


def ccr(sid: str, rtype: int, n: int, specs: list[MsccSpec], host: str, **kw: object) -> Message:
    return build_ccr(
        sid,
        request_type=rtype,
        number=n,
        imsi=str(kw.get("imsi", ACME_IMSI)),
        msccs=specs,
        sgsn_mcc_mnc="26201",
        rat_type=1004,
        origin_host=host,
    )


class KeepingAttacher(ChargingAttacher):
    """The server's charging attacher, keeping the network attachment (its session
    tracker writes behind on a connection of its own)."""

    network: NetworkAttachment | None = None

    async def __call__(self, settings: Any, node: Node) -> Any:
        closers = await super().__call__(settings, node)
        for close in closers:
            owner = getattr(close, "__self__", None)
            if isinstance(owner, NetworkAttachment):
                self.network = owner
        return closers


@dataclass
class TwoPeers:
    runtime: Runtime
    app: ChargingApplication
    network: NetworkAttachment
    a: DiameterProtocol
    b: DiameterProtocol

    async def send(self, client: DiameterProtocol, request: Message) -> Message:
        return await client.send_request(request, timeout=ANSWER_TIMEOUT)

    async def settled(self) -> None:
        """Every write queued so far (the session store's and the network tracker's, both
        write-behind) has reached Redis: closing a batcher sends what is queued and waits for
        every batch in flight (single Redis and cluster); the next command reconnects."""
        await self.app.store.batch.close()
        await self.network.tracker.batch.close()


@pytest.fixture
async def peers(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> AsyncIterator[TwoPeers]:
    configured = [
        {"origin_host": CLIENT.origin_host, "addresses": ["127.0.0.1"]},
        {"origin_host": OTHER.origin_host, "addresses": ["127.0.0.1"]},
    ]
    attacher = KeepingAttacher(None, with_http=False)
    runtime = await start(settings_for(redis_url, config, peers=configured), attacher)
    assert attacher.runtime is not None and attacher.network is not None
    clients: list[DiameterProtocol] = []
    try:
        for identity in (CLIENT, OTHER):
            clients.append(
                await connect(
                    Node(identity), LocalConfig(identity=identity), "127.0.0.1", runtime.server.port
                )
            )
        yield TwoPeers(
            runtime, attacher.runtime.application, attacher.network, clients[0], clients[1]
        )
    finally:
        for client in clients:
            if client.peer.is_open:
                await client.disconnect(2.0)
        await runtime.stop()


async def dump_all(redis: RedisClient) -> dict[bytes, bytes | None]:
    return {key: await redis.dump(key) async for key in redis.scan_iter(match="*")}


async def test_another_peer_cannot_charge_or_read_a_session(
    peers: TwoPeers, store: BalanceStore, redis: RedisClient
) -> None:
    a, b = CLIENT.origin_host, OTHER.origin_host
    opened = await peers.send(peers.a, ccr("bind-1", 1, 0, [(10, MB, 0)], a))
    assert opened.get(A.AVP_RESULT_CODE) == 2001
    update = ccr("bind-1", 2, 1, [(10, MB, 300_000)], a)
    first = await peers.send(peers.a, update)
    assert first.get(A.AVP_RESULT_CODE) == 2001
    await peers.settled()
    before = await dump_all(redis)
    assert before, "the session, its answers and the balances are in Redis"

    # B charges usage to A's session with the next CC-Request-Number: refused, nothing moves
    forged = await peers.send(peers.b, ccr("bind-1", 2, 2, [(10, MB, 900_000)], b, imsi=BOB_IMSI))
    assert forged.get(A.AVP_RESULT_CODE) == UNKNOWN_SESSION
    assert forged.get(A.AVP_SESSION_ID) == "bind-1"
    assert not msccs(forged)
    # B resends A's CCR-U (same number, T flag): 5002, not A's stored answer
    replayed = await peers.send(peers.b, retransmission(ccr("bind-1", 2, 1, [(10, MB, 0)], b)))
    assert replayed.get(A.AVP_RESULT_CODE) == UNKNOWN_SESSION
    assert not same_answer(replayed, first)
    assert not msccs(replayed)
    # and B can neither end nor event-charge it
    for rtype in (3, 4):
        other = await peers.send(peers.b, ccr("bind-1", rtype, 2, [(10, -1, 1)], b))
        assert other.get(A.AVP_RESULT_CODE) == UNKNOWN_SESSION
    await peers.settled()
    assert await dump_all(redis) == before

    # A's session goes on: its own retransmission gets its answer, its next CCR-U is charged
    again = await peers.send(peers.a, retransmission(update))
    assert same_answer(again, first)
    later = await peers.send(peers.a, ccr("bind-1", 2, 2, [(10, MB, 200_000)], a))
    assert later.get(A.AVP_RESULT_CODE) == 2001
    assert granted(msccs(later)[10]) == MB
    final = await peers.send(peers.a, ccr("bind-1", 3, 3, [(10, -1, 100_000)], a))
    assert final.get(A.AVP_RESULT_CODE) == 2001
    # a closed session's stored answers stay A's too
    late = await peers.send(peers.b, retransmission(ccr("bind-1", 3, 3, [(10, -1, 0)], b)))
    assert late.get(A.AVP_RESULT_CODE) == UNKNOWN_SESSION
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert (pool.used, pool.reserved) == (600_000, 0)
    await assert_conserved(store, ACME_POOL)


async def test_another_worker_continues_the_session_for_its_peer(
    peers: TwoPeers, store: BalanceStore, catalogue: Catalogue
) -> None:
    """The binding is to the peer's Origin-Host, not to our worker: another process (state
    read from Redis) continues the session for A and refuses B."""
    a, b = CLIENT.origin_host, OTHER.origin_host
    opened = await peers.send(peers.a, ccr("bind-2", 1, 0, [(10, MB, 0)], a))
    assert opened.get(A.AVP_RESULT_CODE) == 2001
    await peers.settled()
    other = make_app(BalanceStore(store.redis), catalogue, peers.app.config)
    try:
        refused = await other.handle_ccr(ccr("bind-2", 2, 1, [(10, MB, 1)], b.upper()), None)
        assert refused.get(A.AVP_RESULT_CODE) == UNKNOWN_SESSION
        # Origin-Host is a DiameterIdentity (an FQDN): compared case-insensitively
        answer = await other.handle_ccr(ccr("bind-2", 2, 1, [(10, MB, 250_000)], a.upper()), None)
        assert answer.get(A.AVP_RESULT_CODE) == 2001
    finally:
        await other.store.batch.close()
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert pool.used == 250_000


async def test_a_session_stored_before_the_binding_keeps_working(
    peers: TwoPeers, store: BalanceStore, redis: RedisClient, catalogue: Catalogue
) -> None:
    """A session hash without the ``peer`` field (written by an older version) is continued,
    and bound to the peer that continues it."""
    a, b = CLIENT.origin_host, OTHER.origin_host
    opened = await peers.send(peers.a, ccr("bind-3", 1, 0, [(10, MB, 0)], a))
    assert opened.get(A.AVP_RESULT_CODE) == 2001
    await peers.settled()
    key = session_key("bind-3")
    assert await redis.hget(key, "peer") == a.encode()
    await redis.hdel(key, "peer")  # as an older version stored it
    other = make_app(BalanceStore(store.redis), catalogue, peers.app.config)
    try:
        answer = await other.handle_ccr(ccr("bind-3", 2, 1, [(10, MB, 100_000)], a), None)
        assert answer.get(A.AVP_RESULT_CODE) == 2001
        await other.store.batch.close()  # its session write has reached Redis
        assert await redis.hget(key, "peer") == a.encode()
        refused = await other.handle_ccr(ccr("bind-3", 2, 2, [(10, MB, 1)], b), None)
        assert refused.get(A.AVP_RESULT_CODE) == UNKNOWN_SESSION
    finally:
        await other.store.batch.close()


async def test_another_peer_cannot_reopen_a_live_session(
    peers: TwoPeers, store: BalanceStore, redis: RedisClient
) -> None:
    """A CCR-Initial (no T flag) from B with the Session-Id of A's live session is refused
    (5002) before anything is charged: the session is not re-bound to B, A's state and stored
    answers stay, and A's session goes on."""
    a, b = CLIENT.origin_host, OTHER.origin_host
    sid = f"{a};bind-4"  # in A's own namespace (RFC 6733 8.8): A's CCR-I claims nothing
    opened = await peers.send(peers.a, ccr(sid, 1, 0, [(10, MB, 0)], a))
    assert opened.get(A.AVP_RESULT_CODE) == 2001
    await peers.settled()
    before = await dump_all(redis)

    for n in (0, 7):  # A's own number, and a fresh one
        hijack = await peers.send(peers.b, ccr(sid, 1, n, [(10, MB, 0)], b, imsi=BOB_IMSI))
        assert hijack.get(A.AVP_RESULT_CODE) == UNKNOWN_SESSION
        assert not msccs(hijack)
    await peers.settled()
    assert await dump_all(redis) == before
    assert await redis.hget(session_key(sid), "peer") == a.encode()

    update = await peers.send(peers.a, ccr(sid, 2, 1, [(10, MB, 400_000)], a))
    assert update.get(A.AVP_RESULT_CODE) == 2001
    final = await peers.send(peers.a, ccr(sid, 3, 2, [(10, -1, 100_000)], a))
    assert final.get(A.AVP_RESULT_CODE) == 2001
    # the closed session keeps its binding while its answers are kept: B cannot reopen it
    reopen = await peers.send(peers.b, ccr(sid, 1, 0, [(10, MB, 0)], b))
    assert reopen.get(A.AVP_RESULT_CODE) == UNKNOWN_SESSION
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert (pool.used, pool.reserved) == (500_000, 0)
    await assert_conserved(store, ACME_POOL)
    # and A may open a new session of its own under a new Session-Id as always
    again = await peers.send(peers.a, ccr("bind-5", 1, 0, [(10, MB, 0)], a))
    assert again.get(A.AVP_RESULT_CODE) == 2001
