"""A bug is never a free grant: only an unreachable store takes the Credit-Control
failure-handling path; any other error (a balance script error, here planted in Redis) is
answered 5012 with no units, logged at ERROR with the Session-Id and counted."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ocs.balance import BalanceStore
from ocs.balance.keys import PayerKeys
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.charging.errors import StoreUnavailable, is_store_outage
from ocs.diameter import avp_codes as A
from ocs.rating.catalogue import Catalogue
from ocs.redis_client import RedisClient
from tests.charging.ccr import build_ccr
from tests.charging.conftest import make_app
from tests.charging.helpers import ACME_IMSI, ACME_POOL, msccs, wire

MB = 1_000_000


def _ccr(sid: str, rtype: int, n: int, used: int = 0):  # type: ignore[no-untyped-def]
    return wire(
        build_ccr(sid, request_type=rtype, number=n, imsi=ACME_IMSI, msccs=[(10, MB, used)])
    )


async def _raw(redis: RedisClient, payer: str) -> dict[bytes, bytes]:
    k = PayerKeys(payer)
    state: dict[bytes, bytes] = {}
    for key in (k.balances, k.reservations):
        for field, value in (await redis.hgetall(key)).items():  # type: ignore[misc]
            state[key.encode() + b"/" + field] = value
    state[b"rsvidx"] = repr(
        await redis.zrange(k.reservation_index, 0, -1, withscores=True)
    ).encode()
    state[b"stream"] = str(await redis.xlen(k.stream)).encode()
    return state


@pytest.mark.parametrize(
    ("exc", "outage"),
    [
        (RedisConnectionError("Connection refused"), True),
        (RedisTimeoutError("Timeout reading from socket"), True),
        (TimeoutError("request deadline passed"), True),
        (ConnectionResetError(104, "reset"), True),
        (StoreUnavailable(), True),
        (BusyLoadingError("Redis is loading the dataset in memory"), True),  # a restart
        (ReadOnlyError("You can't write against a read only replica."), True),  # failover
        (ClusterDownError("The cluster is down"), True),
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'"), False),
        (ResponseError("ERR user_script:105: value is not an integer or out of range"), False),
        (ValueError("a bug"), False),
        (KeyError("a bug"), False),
        (FileNotFoundError("not an outage"), False),
    ],
)
def test_only_an_unreachable_store_is_an_outage(exc: BaseException, outage: bool) -> None:
    assert is_store_outage(exc) is outage


async def test_a_script_error_is_answered_5012_logged_and_counted_never_granted(
    app: ChargingApplication,
    store: BalanceStore,
    redis: RedisClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ok = await app.handle_ccr(_ccr("pgw.test;bug;1", 1, 0))
    assert ok.get(A.AVP_RESULT_CODE) == 2001
    # Plant the error: the pool's bucket definition is no JSON, so charge.lua fails in
    # cjson.decode (a Lua error reply, as "HINCRBY ... -0" was) before its first write.
    await redis.hset(PayerKeys(ACME_POOL).buckets, "acme-pool", "{not json")  # type: ignore[misc]
    before = await _raw(redis, ACME_POOL)
    metrics = app.metrics.registry

    def sample(name: str, labels: dict[str, str]) -> float:
        # the served variant uses the process-wide registry: compare before and after
        return metrics.get_sample_value(name, labels) or 0.0

    errors = ("ocs_charging_errors_total", {"type": "update"})
    grants = ("ocs_failover_grants_total", {"mode": "grant"})
    answered = ("ocs_ccr_total", {"type": "update", "result": "5012"})
    assert metrics.get_sample_value(*errors) is not None  # exported at 0 from the start
    counted = {m[0]: sample(*m) for m in (errors, grants, answered)}

    sid = "pgw.test;bug;1"
    with caplog.at_level(logging.ERROR, logger="ocs.charging.application"):
        answer = await app.handle_ccr(_ccr(sid, 2, 1, used=MB // 2))

    assert answer.get(A.AVP_RESULT_CODE) == 5012
    assert not msccs(answer)  # no MSCC, so no Granted-Service-Unit
    assert answer.find(A.AVP_GRANTED_SERVICE_UNIT) is None
    assert app.journal.entries() == []  # no failover grant was journaled
    assert sample(*errors) == counted[errors[0]] + 1
    assert sample(*grants) == counted[grants[0]]
    assert sample(*answered) == counted[answered[0]] + 1
    assert await _raw(redis, ACME_POOL) == before  # nothing moved
    lines = [r for r in caplog.records if r.name == "ocs.charging.application"]
    assert [r.levelno for r in lines] == [logging.ERROR]
    assert lines[0].__dict__["session_id"] == sid
    assert lines[0].__dict__["result_code"] == 5012
    assert sid in lines[0].getMessage() and "ResponseError" in lines[0].getMessage()


async def test_active_sessions_never_go_below_zero(
    store: BalanceStore, catalogue: Catalogue, config: ChargingConfig
) -> None:
    """Sessions refused at CCR-I that still send CCR-T drove ocs_active_sessions to -3."""
    app = make_app(store, catalogue, config)

    def active() -> float | None:
        return app.metrics.registry.get_sample_value("ocs_active_sessions")

    for i in range(3):  # unknown SIMs: 5030 at CCR-I, then a CCR-T all the same
        sid = f"pgw.test;refused;{i}"
        refused = await app.handle_ccr(
            wire(
                build_ccr(
                    sid, request_type=1, number=0, imsi="999990000000001", msccs=[(10, MB, 0)]
                )
            )
        )
        assert refused.get(A.AVP_RESULT_CODE) == 5030
        await app.handle_ccr(
            wire(
                build_ccr(
                    sid, request_type=3, number=1, imsi="999990000000001", msccs=[(10, -1, 0)]
                )
            )
        )
        assert active() == 0
    opened = await app.handle_ccr(_ccr("pgw.test;ok;1", 1, 0))
    assert opened.get(A.AVP_RESULT_CODE) == 2001 and active() == 1
    await app.handle_ccr(_ccr("pgw.test;ok;1", 2, 1, used=1000))
    assert active() == 1
    await app.handle_ccr(
        wire(
            build_ccr(
                "pgw.test;ok;1", request_type=3, number=2, imsi=ACME_IMSI, msccs=[(10, -1, 10)]
            )
        )
    )
    assert active() == 0
    await app.handle_ccr(
        wire(
            build_ccr(
                "pgw.test;ok;1",
                request_type=3,
                number=2,
                imsi=ACME_IMSI,
                msccs=[(10, -1, 10)],
                retransmit=True,
            )
        )
    )
    assert active() == 0  # a retransmitted CCR-T is answered from the stored answer
