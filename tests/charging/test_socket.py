"""What only a real server on a real socket shows: duplicate detection by End-to-End id, a
restart in the middle of a session, per-configuration Final-Unit-Indication, reclaim with a
tiny Validity-Time, and Redis going away under a running server.

Every other behaviour of the charging application (several MSCCs per CCR, thresholds,
exhaustion, events, result codes, application-level retransmissions) runs over TCP too: the
``app`` fixture of ``conftest.py`` is parametrized over ``direct`` and ``socket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest

from ocs.balance import BalanceStore
from ocs.charging.config import ChargingConfig
from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Message, decode
from ocs.diameter.constants import FLAG_RETRANSMIT, FinalUnitAction
from tests.balance.helpers import assert_conserved
from tests.charging.ccr import MsccSpec, build_ccr
from tests.charging.conftest import ServedCharging, served, settings_for
from tests.charging.helpers import ACME_IMSI, ACME_POOL, bucket, granted, msccs

MB = 1_000_000
HANG_GUARD = 10.0  # seconds; an answer that never comes fails the test instead of blocking it


def ccr(sid: str, rtype: int, n: int, specs: list[MsccSpec], imsi: str = ACME_IMSI) -> Message:
    return build_ccr(
        sid,
        request_type=rtype,
        number=n,
        imsi=imsi,
        msccs=specs,
        sgsn_mcc_mnc="26201",
        rat_type=1004,
    )


def retransmission(msg: Message) -> Message:
    """The same request again, as a PGW resends it: same End-to-End id, T flag set."""
    again = decode(msg.encode())
    again.flags |= FLAG_RETRANSMIT
    return again


def same_answer(a: Message, b: Message) -> bool:
    return [x.encode() for x in a.avps] == [x.encode() for x in b.avps]


@pytest.fixture
async def gateway(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> AsyncIterator[ServedCharging]:
    async with served(settings_for(redis_url, config)) as gw:
        yield gw


async def _resize_pool(store: BalanceStore, size: int) -> None:
    await store.adjust(ACME_POOL, "resize", [{"op": "resize", "id": "acme-pool", "size": size}], 0)


async def test_duplicates_by_end_to_end_id_get_one_answer_and_one_charge(
    gateway: ServedCharging, store: BalanceStore
) -> None:
    await gateway.handle_ccr(ccr("dup", 1, 0, [(10, MB, 0), (11, MB, 0)]))
    update = ccr("dup", 2, 1, [(10, MB, 300_000), (11, MB, 200_000)])
    first = await gateway.handle_ccr(update)
    assert first.get(A.AVP_RESULT_CODE) == 2001
    storm = await asyncio.gather(*(gateway.handle_ccr(retransmission(update)) for _ in range(20)))
    assert all(same_answer(a, first) for a in storm)
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert (pool.used, pool.reserved) == (500_000, 2 * MB)
    usage = [r for r in await store.records(ACME_POOL) if r.fields["kind"] == "usage"]
    assert len(usage) == 2  # one record per rating group, not one per copy
    await assert_conserved(store, ACME_POOL)


async def test_a_restarted_server_replays_answers_and_continues_the_session(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    settings = settings_for(redis_url, config)
    initial = ccr("restart", 1, 0, [(10, 2 * MB, 0)])
    async with served(settings) as before:
        answer = await before.handle_ccr(initial)
    assert granted(msccs(answer)[10]) == 2 * MB
    async with served(settings) as after:
        # the gateway never saw the CCA-I (the server went down) and resends the CCR-I
        replay = await after.handle_ccr(retransmission(initial))
        assert same_answer(replay, answer)
        final = await after.handle_ccr(ccr("restart", 3, 1, [(10, -1, 1_500_000)]))
        assert final.get(A.AVP_RESULT_CODE) == 2001
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert (pool.used, pool.reserved) == (1_500_000, 0)
    await assert_conserved(store, ACME_POOL)


@pytest.mark.parametrize("action", list(FinalUnitAction), ids=lambda a: a.name.lower())
async def test_final_unit_indication_follows_the_configured_action(
    store: BalanceStore, config: ChargingConfig, redis_url: str, action: FinalUnitAction
) -> None:
    await _resize_pool(store, 3 * MB // 2)
    settings = settings_for(redis_url, config, fui_action=action.name.lower())
    async with served(settings) as gw:
        last = msccs(await gw.handle_ccr(ccr("fui", 1, 0, [(10, 2 * MB, 0)])))[10]
        exhausted = await gw.handle_ccr(ccr("fui", 2, 1, [(10, 2 * MB, 3 * MB // 2)]))
    assert (last.get(A.AVP_RESULT_CODE), granted(last)) == (2001, 3 * MB // 2)
    fui = last.find(A.AVP_FINAL_UNIT_INDICATION)
    assert fui is not None and fui.get(A.AVP_FINAL_UNIT_ACTION) == action
    if action == FinalUnitAction.REDIRECT:
        server = fui.find(A.AVP_REDIRECT_SERVER)
        assert server is not None
        assert server.get(A.AVP_REDIRECT_SERVER_ADDRESS) == config.fui_redirect_url
    if action == FinalUnitAction.RESTRICT_ACCESS:
        assert fui.find(A.AVP_RESTRICTION_FILTER_RULE) is not None
    assert msccs(exhausted)[10].get(A.AVP_RESULT_CODE) == 4012
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert (pool.available, pool.reserved, pool.used) == (0, 0, 3 * MB // 2)
    await assert_conserved(store, ACME_POOL)


async def test_reservation_not_renewed_within_validity_is_reclaimed(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    settings = settings_for(redis_url, config, validity_time=1, reclaim_grace=0)
    async with served(settings) as gw:
        answer = await gw.handle_ccr(ccr("idle", 1, 0, [(10, MB, 0)]))
        assert msccs(answer)[10].get(A.AVP_VALIDITY_TIME) == 1
        assert (await bucket(store, ACME_POOL, "acme-pool")).reserved == MB
        # the server's clock two seconds on, instead of sleeping: Validity-Time has passed
        await gw.store.reclaim_all(int((time.time() + 2) * 1000))
        pool = await bucket(store, ACME_POOL, "acme-pool")
        assert (pool.reserved, pool.used) == (0, 0)
        # the gateway reports late: what it used is still charged, once
        late = await gw.handle_ccr(ccr("idle", 3, 1, [(10, -1, 400_000)]))
        assert late.get(A.AVP_RESULT_CODE) == 2001
    kinds = [r.fields["kind"] for r in await store.records(ACME_POOL)]
    assert (kinds.count("reclaim"), kinds.count("usage")) == (1, 1)
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert (pool.reserved, pool.used) == (0, 400_000)
    await assert_conserved(store, ACME_POOL)


class RedisProxy:
    """A TCP relay in front of the test Redis that a test can cut (open connections reset, new
    ones refused: Redis unreachable) and restore on the same port."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._unix = parts.path if parts.scheme == "unix" else None
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        path_db = parts.path.strip("/") if self._unix is None else ""
        self._db = parse_qs(parts.query).get("db", [""])[0] or path_db or "0"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self._db}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._unix is not None:
            return await asyncio.open_unix_connection(self._unix)
        return await asyncio.open_connection(*self._target)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await self._open_target()
        except OSError:
            await _close(writer)
            self._writers.discard(writer)
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(
                _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            for w in (writer, up_writer):
                await _close(w)
                self._writers.discard(w)
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


@contextlib.asynccontextmanager
async def proxied(target_url: str) -> AsyncIterator[RedisProxy]:
    proxy = RedisProxy(target_url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.cut()


@pytest.mark.parametrize("redis_backend", ["single"], indirect=True)
@pytest.mark.parametrize(("mode", "code"), [("grant", 2001), ("deny", 5012)])
async def test_redis_going_away_is_answered_by_failure_handling_then_recovers(
    store: BalanceStore, config: ChargingConfig, redis_url: str, mode: str, code: int
) -> None:
    async with proxied(redis_url) as proxy:
        settings = settings_for(
            proxy.url, config, failure_handling=mode, charging_timeout=0.5, shutdown_timeout=1.0
        )
        async with served(settings) as gw:
            ok = await gw.handle_ccr(ccr("up", 1, 0, [(10, MB, 0)]))
            assert ok.get(A.AVP_RESULT_CODE) == 2001
            await proxy.cut()
            down = await asyncio.wait_for(
                gw.handle_ccr(ccr("down", 1, 0, [(10, MB, 0)])), HANG_GUARD
            )
            assert down.get(A.AVP_RESULT_CODE) == code
            if mode == "grant":
                assert granted(msccs(down)[10]) == config.failure_grant_bytes
                [entry] = gw.journal.entries()
                assert entry["n"] == 0 and entry["granted"] == {"10": config.failure_grant_bytes}
            else:
                assert gw.journal.entries() == []
            await proxy.start()  # Redis is back: the next CCR is charged for real
            back = await gw.handle_ccr(ccr("back", 1, 0, [(10, MB, 0)]))
            assert back.get(A.AVP_RESULT_CODE) == 2001
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert pool.reserved == 2 * MB  # "up" and "back"; the failover grant is only journaled
    await assert_conserved(store, ACME_POOL)


@pytest.mark.parametrize(("tenants", "expected"), [(["demo"], 2001), (["other"], 5030)])
async def test_a_peer_charges_only_the_tenants_it_is_configured_for(
    store: BalanceStore, config: ChargingConfig, redis_url: str, tenants: list[str], expected: int
) -> None:
    """The gateway's peer entry names the tenants it may charge for: a CCR for a SIM of
    another tenant is answered as for a SIM we do not know (5030), and charges nothing."""
    peer = {"origin_host": "pgw.test", "addresses": ["127.0.0.1"], "tenants": tenants}
    before = await bucket(store, ACME_POOL, "acme-pool")
    async with served(settings_for(redis_url, config, peers=[peer])) as gw:
        cca = await asyncio.wait_for(
            gw.handle_ccr(ccr(f"tenant-{tenants[0]}", 1, 0, [(10, MB, 0)])), HANG_GUARD
        )
    assert cca.get(A.AVP_RESULT_CODE) == expected
    after = await bucket(store, ACME_POOL, "acme-pool")
    assert (after.reserved - before.reserved) == (MB if expected == 2001 else 0)
