"""What the hot path skips and what it must still do: a new session reads nothing from Redis,
yet a reused Session-Id or a retransmitted CCR-Initial is charged once."""

from __future__ import annotations

from ocs.balance import BalanceStore
from ocs.balance.keys import session_key
from ocs.balance.store import script_text
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.diameter import avp_codes as A
from ocs.rating.catalogue import Catalogue
from tests.balance.helpers import assert_conserved
from tests.charging.conftest import make_app
from tests.charging.helpers import ACME_POOL, bucket, granted, msccs
from tests.charging.test_sessions import MB, ccr


async def _charge_script_loaded(store: BalanceStore) -> None:
    """charge.lua in Redis before counting: another test may have flushed the scripts, and a
    NOSCRIPT costs one more EVALSHA (after one shared load): the count is of the steady
    state, not of the first charge after a restart."""
    await store.redis.script_load(script_text("charge.lua"))


async def test_a_new_session_costs_its_charge_and_its_writes_only(
    store: BalanceStore, catalogue: Catalogue, config: ChargingConfig
) -> None:
    """A CCR-I whose Session-Id begins with its Origin-Host (RFC 6733 8.8; the peer here is
    pgw.test) costs one round trip, its charge: no read, no claim."""
    app = make_app(store, catalogue, config)
    await _charge_script_loaded(store)
    batch = app.sessions.batch
    before = batch.commands
    answer = await app.handle_ccr(ccr("pgw.test;hot1;1", 1, 0, [(10, MB, 0)]), None)
    assert answer.get(A.AVP_RESULT_CODE) == 2001
    await batch.execute("PING")  # queued after the write-behind commands: they went out
    # EVALSHA charge, then HSET + EXPIRE session, SET answer; then the PING. No HGETALL/GET.
    assert batch.commands - before == 5
    before = batch.commands
    await app.handle_ccr(ccr("pgw.test;hot1;1", 2, 1, [(10, MB, 1000)]), None)
    await batch.execute("PING")
    assert batch.commands - before == 3  # EVALSHA, SET answer, PING: the session is known


async def test_a_session_id_outside_the_peers_namespace_is_claimed_first(
    store: BalanceStore, catalogue: Catalogue, config: ChargingConfig
) -> None:
    """A Session-Id that does not begin with the peer's Origin-Host could be another peer's:
    the CCR-I claims it (one EVAL) before its charge (charging.sessions)."""
    app = make_app(store, catalogue, config)
    await _charge_script_loaded(store)
    batch = app.sessions.batch
    before = batch.commands
    answer = await app.handle_ccr(ccr("hot1", 1, 0, [(10, MB, 0)]), None)
    assert answer.get(A.AVP_RESULT_CODE) == 2001
    await batch.execute("PING")
    assert batch.commands - before == 6  # EVAL claim, then as above
    assert await store.redis.hget(session_key("hot1"), "peer") == b"pgw.test"


async def test_a_reused_session_id_is_charged_once_by_a_fresh_process(
    app: ChargingApplication, store: BalanceStore, catalogue: Catalogue, config: ChargingConfig
) -> None:
    first = await app.handle_ccr(ccr("hot2", 1, 0, [(10, MB, 0)]), None)
    # another process (a restart) gets the same CCR-I again, without the T flag
    other = make_app(BalanceStore(store.redis), catalogue, config)
    again = await other.handle_ccr(ccr("hot2", 1, 0, [(10, MB, 0)]), None)
    assert again.get(A.AVP_RESULT_CODE) == 2001
    assert granted(msccs(again)[10]) == granted(msccs(first)[10]) == MB
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert pool.reserved == MB  # one reservation, not two
    await assert_conserved(store, ACME_POOL)
    await other.store.batch.close()


async def test_a_retransmitted_initial_is_answered_from_redis_by_a_fresh_process(
    app: ChargingApplication, store: BalanceStore, catalogue: Catalogue, config: ChargingConfig
) -> None:
    first = await app.handle_ccr(ccr("hot3", 1, 0, [(10, MB, 0)]), None)
    other = make_app(BalanceStore(store.redis), catalogue, config)
    resent = ccr("hot3", 1, 0, [(10, MB, 0)], retransmit=True)
    replay = await other.handle_ccr(resent, None)
    assert [a.encode() for a in replay.avps] == [a.encode() for a in first.avps]
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert pool.reserved == MB
    await assert_conserved(store, ACME_POOL)
    await other.store.batch.close()
