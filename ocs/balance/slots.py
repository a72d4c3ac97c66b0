"""Where a payer's keys live: under its own hash tag, or under its reseller chain's root
(:mod:`ocs.balance.keys`, "Reseller chains share one slot").

The charging path knows a payer's root from the catalogue (``ocs.rating.multilevel``); the
readers that list payers without one (drain, audit, reclaim, lifecycle, the HTTP API) read the
registry :data:`~ocs.balance.keys.PAYER_SLOTS`. :func:`place` is the only writer: provisioning
calls it for every payer before defining its buckets, and when a payer's root changed (a
chain was created above its account, or removed) it moves the payer's keys first.

A move copies each key (``DUMP``/``RESTORE``: hashes, the reservation index, the stream with
its consumer group) and deletes the old one; the keys of two slots cannot be renamed in one
step on a Redis Cluster. A move that stopped half-way is finished by the next one (a key
already at its new place with the same content is only deleted at the old); a key found at
both places with different contents stops the move with :class:`SlotConflict` and changes
nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ocs.balance.keys import PAYER_SLOTS, PayerKeys
from ocs.redis_client import RedisClient


class SlotConflict(RuntimeError):
    """A payer's key exists under both its old and its new hash tag, with other contents."""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def roots(redis: RedisClient) -> dict[str, str]:
    """Every chained payer's root (payers not listed keep their own slot)."""
    raw: dict[Any, Any] = await redis.hgetall(PAYER_SLOTS)
    return {_s(k): _s(v) for k, v in raw.items()}


async def locate(redis: RedisClient, tag: str) -> PayerKeys:
    """The keys of one payer, as the registry places them."""
    root = await redis.hget(PAYER_SLOTS, tag)
    return PayerKeys(tag, _s(root) if root else "")


LOCATE_PAGE = 500  # registry fields read by one HMGET


async def locate_all(redis: RedisClient, tags: Iterable[str]) -> list[PayerKeys]:
    """The keys of many payers: their fields of the registry, read in pages (a command
    bounded by the page, whatever the size of the registry or of ``tags``)."""
    wanted = list(tags)
    out: list[PayerKeys] = []
    for i in range(0, len(wanted), LOCATE_PAGE):
        page = wanted[i : i + LOCATE_PAGE]
        found: list[Any] = await redis.hmget(PAYER_SLOTS, page)
        out += [PayerKeys(t, _s(r) if r else "") for t, r in zip(page, found, strict=True)]
    return out


async def place(redis: RedisClient, tag: str, root: str) -> bool:
    """Put ``tag``'s keys under ``root``'s hash tag (``""`` or ``tag``: its own) and record
    it; True when keys were moved."""
    new = PayerKeys(tag, "" if root == tag else root)
    old = await locate(redis, tag)
    if old.base == new.base:
        return False
    moved = False
    for src, dst in zip(old.moved, new.moved, strict=True):
        data = await redis.dump(src)
        if data is None:
            continue
        there = await redis.dump(dst)
        if there is not None and there != data:
            raise SlotConflict(f"{tag}: {dst} and {src} both exist; move not finished")
        if there is None:
            await redis.restore(dst, 0, data)
        await redis.delete(src)
        moved = True
    if new.root:
        await redis.hset(PAYER_SLOTS, tag, new.root)
    else:
        await redis.hdel(PAYER_SLOTS, tag)
    return moved
