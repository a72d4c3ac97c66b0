"""The checks of `ocs audit`: the balance invariants in Redis, and Redis against the drained
usage records in PostgreSQL.

Per payer of a tenant (``ocs:payers``), in Redis:

* every bucket (unlimited ones excepted: they count, they do not hold):
  ``credited = available + reserved + used``;
* the reservation entries (``ocs:{P}:rsv``) sum, per bucket, to its ``reserved``, and every
  entry is in the reclaim index (``rsvidx``) and the other way round;
* no reservation is past its reclaim deadline (Validity-Time + grace, the index's score) by
  more than ``stale_after_ms`` (the reclaim task runs every few seconds).

Across stores, per bucket of every pool and wallet: its ``used`` (units, or money for a money
bucket) equals the sum of the allocations of its usage, refund and level records (``level``:
what a payer paid as an upper level of a reseller chain's usage, docs/charging.md), counted once by
record key over PostgreSQL's ``usage_records`` and the records still in the payer's stream
(not drained yet, or drained and not trimmed). Redis keeps one ``used`` per bucket from its
creation, so the check covers every period of the bucket at once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from ocs.balance.keys import PAYERS, PayerKeys
from ocs.balance.slots import locate
from ocs.offline.db import Database
from ocs.redis_client import RedisClient

USED_KINDS: Final = ("usage", "refund", "level")  # the records that move a bucket's ``used``
AUDITED_KINDS: Final = ("prepaid_pool", "postpaid_pool", "wallet")  # cross-store check
STREAM_PAGE: Final = 10_000


@dataclass(frozen=True, slots=True)
class Discrepancy:
    payer: str  # tenant:kind:id
    field: str
    expected: int | str
    found: int | str

    def line(self) -> str:
        return f"{self.payer}  {self.field}  expected {self.expected}  found {self.found}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "payer": self.payer,
            "field": self.field,
            "expected": self.expected,
            "found": self.found,
        }


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def payers_of(redis: RedisClient, tenant: str | None) -> list[str]:
    """The payer tags in ``ocs:payers`` (of ``tenant``, or of every tenant), sorted."""
    tags = sorted(_s(raw) for raw in await redis.smembers(PAYERS))
    return [t for t in tags if tenant is None or t.split(":", 1)[0] == tenant]


@dataclass(slots=True)
class _Bucket:
    unlimited: bool
    credited: int
    available: int
    reserved: int
    used: int


def _hash(reply: Any) -> dict[str, Any]:
    if isinstance(reply, dict):
        return {_s(k): v for k, v in reply.items()}
    return {_s(k): v for k, v in zip(reply[::2], reply[1::2], strict=True)}


def _buckets(defs: dict[str, Any], bals: dict[str, Any]) -> dict[str, _Bucket]:
    values = {f: int(v) for f, v in bals.items()}
    out: dict[str, _Bucket] = {}
    for bid, raw_def in defs.items():
        d = json.loads(raw_def)
        out[bid] = _Bucket(
            bool(d.get("unlimited", False)),
            values.get(f"{bid}:i", 0),
            values.get(f"{bid}:a", 0),
            values.get(f"{bid}:r", 0),
            values.get(f"{bid}:u", 0),
        )
    return out


async def _snapshot(redis: RedisClient, payer: str) -> list[Any]:
    """One payer's buckets, balances, reservations, reclaim index and the last id its stream
    generated, read in one MULTI/EXEC (every key shares the payer's hash tag): a consistent
    view while charging goes on."""
    k = await locate(redis, payer)  # a payer of a reseller chain: in its root's slot
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(k.buckets)
        pipe.hgetall(k.balances)
        pipe.hgetall(k.reservations)
        pipe.zrange(k.reservation_index, 0, -1, withscores=True)
        pipe.execute_command("XINFO", "STREAM", k.stream)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    if isinstance(replies[4], Exception):  # no stream yet (nothing recorded)
        replies[4] = None
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _stream_id(value: bytes | str) -> tuple[int, int]:
    """A stream entry id (``<ms>-<seq>``; PostgreSQL's ``stream_id`` is ``<stream>/<id>``)."""
    ms, _, seq = _s(value).rpartition("/")[2].partition("-")
    return int(ms), int(seq or 0)


async def audit_redis(
    redis: RedisClient, payers: Iterable[str], now_ms: int, stale_after_ms: int
) -> list[Discrepancy]:
    """The in-Redis invariants of ``payers`` (see the module)."""
    out: list[Discrepancy] = []
    for payer in payers:
        defs, bals, entries_raw, index_raw, _ = await _snapshot(redis, payer)
        buckets = _buckets(_hash(defs), _hash(bals))
        for bid, b in sorted(buckets.items()):
            if not b.unlimited and b.credited != b.available + b.reserved + b.used:
                out.append(
                    Discrepancy(
                        payer,
                        f"{bid}: available+reserved+used",
                        b.credited,
                        b.available + b.reserved + b.used,
                    )
                )
        entries = _hash(entries_raw)
        index = {_s(m): int(score) for m, score in index_raw}
        held: dict[str, int] = defaultdict(int)
        for member, raw in sorted(entries.items()):
            for alloc in json.loads(raw).get("a", []):
                held[str(alloc[0])] += int(alloc[2])
            if member not in index:
                out.append(Discrepancy(payer, f"reservation {member}", "in rsvidx", "missing"))
        for bid in sorted(set(held) | {b for b, v in buckets.items() if v.reserved}):
            found = buckets[bid].reserved if bid in buckets else 0
            if held.get(bid, 0) != found:
                out.append(Discrepancy(payer, f"{bid}: reserved", held.get(bid, 0), found))
        for member, deadline in sorted(index.items()):
            if member not in entries:
                out.append(Discrepancy(payer, f"rsvidx {member}", "a reservation", "missing"))
            elif deadline + stale_after_ms < now_ms:
                out.append(
                    Discrepancy(
                        payer,
                        f"reservation {member}",
                        f"reclaimed by {deadline + stale_after_ms} ms",
                        f"held at {now_ms} ms",
                    )
                )
    return out


def _alloc_sums(rows: Iterable[tuple[str, str, Any]]) -> dict[str, int]:
    """(kind, record key, alloc JSON) rows, each key counted once: per bucket the sum of the
    allocations of the usage and refund records."""
    sums: dict[str, int] = defaultdict(int)
    keys: set[str] = set()
    for kind, key, alloc in rows:
        if kind not in USED_KINDS or key in keys:
            continue
        keys.add(key)
        for bid, amount in json.loads(alloc) if isinstance(alloc, str) else alloc or []:
            sums[str(bid)] += int(amount)
    return sums


async def _stream_records(
    redis: RedisClient, payer: PayerKeys, last: tuple[int, int]
) -> list[tuple[str, str, str]]:
    """(kind, record key, alloc) of the usage and refund records in the stream up to ``last``."""
    out: list[tuple[str, str, str]] = []
    start = "-"
    end = f"{last[0]}-{last[1]}"
    while True:
        page: list[Any] = await redis.xrange(  # type: ignore[assignment]
            payer.stream, min=start, max=end, count=STREAM_PAGE
        )
        for _eid, fields in page:
            f = {_s(k): _s(v) for k, v in (fields or {}).items()}
            kind = f.get("kind", "")
            if kind in USED_KINDS:
                out.append((kind, f"{kind}:{f.get('id', '')}", f.get("alloc", "[]")))
        if len(page) < STREAM_PAGE:
            return out
        start = "(" + _s(page[-1][0])


async def audit_records(
    redis: RedisClient, db: Database, tenant: str, payers: Iterable[str]
) -> list[Discrepancy]:
    """Each pool's and wallet's ``used`` per bucket against its usage records: PostgreSQL's
    and the stream's, once by record key, up to the last stream id at the moment ``used``
    was read (records written later are not in that ``used``)."""
    out: list[Discrepancy] = []
    for payer in payers:
        if payer.split(":")[1] not in AUDITED_KINDS:
            continue
        defs, bals, _, _, info = await _snapshot(redis, payer)
        buckets = _buckets(_hash(defs), _hash(bals))
        last = (2**63, 0)  # no stream (never written, or removed): every stored record
        streamed: list[tuple[str, str, str]] = []
        if info is not None:
            last = _stream_id(_hash(info)["last-generated-id"])
            streamed = await _stream_records(redis, await locate(redis, payer), last)
        async with db.tenant(tenant) as conn:
            rows = await conn.fetch(
                "SELECT kind, record_key, stream_id, alloc::text AS alloc FROM usage_records"
                " WHERE payer = $1 AND kind = ANY($2::text[])",
                payer,
                list(USED_KINDS),
            )
        stored = [
            (r["kind"], r["record_key"], r["alloc"])
            for r in rows
            if _stream_id(r["stream_id"]) <= last
        ]
        sums = _alloc_sums([*stored, *streamed])
        for bid, b in sorted(buckets.items()):
            if b.used != sums.get(bid, 0):
                out.append(
                    Discrepancy(payer, f"{bid}: used vs usage records", sums.get(bid, 0), b.used)
                )
    return out
