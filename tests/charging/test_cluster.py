"""Redis Cluster specifics: the slot rule the balance scripts rely on, and the client that
``redis+cluster://`` URLs open. The balance and charging suites themselves run on the cluster
through the ``redis_backend`` parameter (see ``tests/conftest.py``)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from ocs.balance import BalanceStore, BucketSpec, BucketUnit
from ocs.balance.keys import PayerKeys, answer_key, session_key
from ocs.redis_client import RedisClient, client_for_url, is_cluster_url
from tests.balance.helpers import NOW, assert_conserved, charge

PAYERS = ["demo:prepaid_pool:acme-pool", "demo:wallet:bob-wallet", "t:postpaid_pool:{odd}"]
SESSIONS = ["pgw.example;1;2", "smf;{weird}}id;7", ""]


@pytest.mark.parametrize("payer", PAYERS)
def test_every_key_of_a_payer_is_in_one_slot(payer: str) -> None:
    k = PayerKeys(payer)
    keys = [k.buckets, k.balances, k.reservations, k.reservation_index, k.stream, k.done("r:1")]
    assert len({key_slot(key.encode()) for key in keys}) == 1


@pytest.mark.parametrize("payer", PAYERS)
def test_every_key_of_a_reseller_chain_is_in_its_roots_slot(payer: str) -> None:
    """A payer under a reseller chain keeps its keys in the root's slot (charge.lua reserves
    at every level in one call); the root and single-level payers keep their own keys."""
    root = "demo:prepaid_pool:reseller-pool"
    chained = PayerKeys(payer, root)
    keys = [*chained.moved, chained.done("r:1"), *PayerKeys(root).moved]
    assert len({key_slot(key.encode()) for key in keys}) == 1
    assert PayerKeys(payer, payer).base == PayerKeys(payer).base  # a root keeps its own
    assert chained.buckets != PayerKeys(root).buckets


@pytest.mark.parametrize("sid", SESSIONS)
def test_the_keys_of_a_session_share_its_slot(sid: str) -> None:
    slots = {key_slot(session_key(sid).encode())}
    slots |= {key_slot(answer_key(sid, n).encode()) for n in (0, 1, 4_000_000_000)}
    assert len(slots) == 1 or sid == ""  # an empty Session-Id has no tag; harmless


def test_cluster_urls_are_recognised() -> None:
    assert is_cluster_url("redis+cluster://127.0.0.1:7000")
    assert is_cluster_url("rediss+cluster://a:7000,b:7000")
    assert not is_cluster_url("redis://127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="only database 0"):
        client_for_url("redis+cluster://127.0.0.1:7000/3")


@pytest.mark.parametrize("redis_backend", [pytest.param("cluster", marks=pytest.mark.cluster)])
async def test_cluster_client_refuses_a_cross_slot_script_and_runs_ours(
    redis: RedisClient,
) -> None:
    """A script whose keys span slots is refused (so the suites running here prove ours do
    not), and the client waits for a free connection under a burst instead of
    failing with MaxConnectionsError. The burst meets scripts the cluster does not hold (as
    after a restart or a failover), whatever ran before it: the script is loaded once."""
    assert isinstance(redis, RedisCluster)
    with pytest.raises(RedisClusterException, match="same key slot"):
        await redis.eval("return 1", 2, "{a}x", "{b}x")
    store = BalanceStore(redis)
    payer = "t:prepaid_pool:burst"
    await store.provision(payer, [BucketSpec("pool", BucketUnit.BYTES, 10**9)], NOW, resize=True)
    await redis.script_flush()
    results = await asyncio.gather(
        *(charge(store, payer, f"b{i}:0:1", member=f"b{i}|1", want=1_000) for i in range(2_000))
    )
    assert {r.status for r in results} == {"ok"}
    await assert_conserved(store, payer)
