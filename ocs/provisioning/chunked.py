"""Redis writes of a tenant's change in bounded steps: no command a change sends grows with
the tenant's size. Redis runs one command at a time for every client, so one command over a
100,000-SIM tenant (an ``HSET`` of 100,000 fields, a ``DEL`` of such a hash, an
``SMEMBERS`` of its 300,000 identities) holds up the CCRs of every other tenant for its whole
length; :data:`CHUNK` entries a command keeps each step to a few hundred microseconds.

An index is brought to its new content by difference (:func:`sync_hash`): the entries that
did not change are not written at all (a re-apply of the same SIMs writes nothing), stale
entries are deleted, changed ones set. Readers see each entry either as before or as after
(never a missing index), which is what the indexes here need (``ocs balance show`` and the
identity owners read entry by entry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

CHUNK: Final = 1_000  # entries a command (fields of HSET/HDEL, members of a SCAN page)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def scan_hash(redis: Any, key: str) -> dict[str, str]:
    """The whole hash, read in pages (``HSCAN``) instead of one ``HGETALL``."""
    out: dict[str, str] = {}
    cursor: int | bytes = 0
    while True:
        cursor, page = await redis.hscan(key, cursor, count=CHUNK)
        out.update({_s(k): _s(v) for k, v in page.items()})
        if int(cursor) == 0:
            return out


async def scan_set(redis: Any, key: str) -> set[str]:
    """The whole set, read in pages (``SSCAN``) instead of one ``SMEMBERS``."""
    out: set[str] = set()
    cursor: int | bytes = 0
    while True:
        cursor, page = await redis.sscan(key, cursor, count=CHUNK)
        out.update(_s(m) for m in page)
        if int(cursor) == 0:
            return out


async def sync_hash(redis: Any, key: str, wanted: Mapping[str, str]) -> int:
    """Make the hash ``key`` hold exactly ``wanted``, :data:`CHUNK` fields a command,
    writing only what differs; the number of fields written or deleted."""
    current = await scan_hash(redis, key)
    stale = [field for field in current if field not in wanted]
    changed = [(f, v) for f, v in wanted.items() if current.get(f) != v]
    for start in range(0, len(stale), CHUNK):
        await redis.hdel(key, *stale[start : start + CHUNK])
    for start in range(0, len(changed), CHUNK):
        await redis.hset(key, mapping=dict(changed[start : start + CHUNK]))
    return len(stale) + len(changed)
