"""Data minimisation (issue 14): once drained, a usage record lives in PostgreSQL only. Real
sessions are charged through `ocs serve`'s Diameter server, the drain runs, then every key
of Redis and every entry of every stream is read: the charged SIMs' IMSI and MSISDN are
left only where the catalogue keeps its subscribers (what charging needs to find them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from ocs.balance.keys import PAYERS, PayerKeys
from ocs.balance.slots import locate_all
from ocs.charging import apply_catalog
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.diameter.constants import CcRequestType, ResultCode
from ocs.offline.db import Database
from ocs.offline.drain import Drainer
from ocs.rating.catalogue import Catalogue
from tests.charging.ccr import build_ccr
from tests.charging.conftest import CLIENT, served
from tests.offline.conftest import MASTER, catalogue_folder, synced
from tests.offline.helpers import add_usage

SIMS = [(f"26201000000{i:04d}", f"49170000{i:04d}") for i in (11, 12, 13)]  # demo's pool SIMs


async def everything(redis: Redis) -> dict[str, str]:
    """Every key with its whole value as text (stream entries included)."""
    out: dict[str, str] = {}
    async for raw in redis.scan_iter(count=1000):
        key = raw.decode()
        kind = (await redis.type(key)).decode()
        value: Any
        if kind == "string":
            value = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "set":
            value = await redis.smembers(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "stream":
            value = await redis.xrange(key)
        else:
            value = kind
        out[key] = repr(value)
    return out


def holding(keys: dict[str, str], needles: list[str]) -> set[str]:
    return {k for k, v in keys.items() if any(n in k or n in v for n in needles)}


async def charge_sessions(settings: Settings) -> None:
    async with served(settings) as gw:
        for n, (imsi, msisdn) in enumerate(SIMS):
            sid = f"{CLIENT.origin_host};trim;{n}"
            for number, rtype, used, want in (
                (0, CcRequestType.INITIAL_REQUEST, 0, 100_000),
                (1, CcRequestType.UPDATE_REQUEST, 60_000, 100_000),
                (2, CcRequestType.TERMINATION_REQUEST, 30_000, 0),
            ):
                cca = await gw.handle_ccr(
                    build_ccr(
                        sid,
                        request_type=rtype,
                        number=number,
                        imsi=imsi,
                        msisdn=msisdn,
                        msccs=[(10, want, used)],
                        sgsn_mcc_mnc="26201",
                    )
                )
                assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS


async def test_after_a_drain_no_identifier_of_drained_usage_is_left_in_redis(
    redis: Redis,
    redis_url_offline: str,
    db: Database,
    catalogue: Catalogue,
    tenant: str,
    tmp_path: Path,
) -> None:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        origin_host="ocs.test",
        origin_realm="test",
        redis_url=redis_url_offline,
        data_dir=tmp_path / "data",
        http_port=0,
        metrics_port=0,
        peers=[{"origin_host": CLIENT.origin_host, "addresses": ["127.0.0.1"]}],
    )
    await apply_catalog(str(catalogue_folder(tmp_path / "cat", tenant)), settings)
    await synced(db, catalogue)
    before = holding(await everything(redis), [i for sim in SIMS for i in sim])
    await charge_sessions(settings)
    # a chained payer's keys are under its chain's root (ocs.balance.slots)
    placed = await locate_all(redis, [t.decode() for t in await redis.smembers(PAYERS)])
    streams = [k.stream for k in placed]
    charged = await everything(redis)
    assert any("262010000000011" in charged.get(s, "") for s in streams)  # the records hold them

    stats = await Drainer(redis, db, MASTER).run()
    assert stats.inserted >= len(SIMS) * 2 and stats.acked == stats.read

    after = await everything(redis)
    for stream in streams:
        assert await redis.xlen(stream) == 0, stream
    for imsi, msisdn in SIMS:
        for key in holding(after, [imsi, msisdn]):
            assert key in before, f"{key} holds {imsi}/{msisdn} after the drain: {after[key]}"
    async with db.tenant(tenant) as conn:
        stored = await conn.fetchval("SELECT count(*) FROM usage_records")
    assert stored == stats.inserted


async def test_trim_off_keeps_the_entries_acknowledged(
    redis: Redis, db: Database, tenant: str
) -> None:
    tag = f"{tenant}:wallet:w"
    await add_usage(redis, tag, 30)
    stats = await Drainer(redis, db, MASTER, trim=False).run()
    assert stats.acked == 30
    assert await redis.xlen(PayerKeys(tag).stream) == 30
    assert (await redis.xpending(PayerKeys(tag).stream, "offline"))["pending"] == 0
