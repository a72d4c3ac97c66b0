"""Dead letters an operator acts on (docs/webhooks.md, "Dead letters"): list them in pages,
redeliver some or all of them once the receiver is fixed, drop them.

A redelivery does not POST from the API process: it moves the dead letters, atomically, to
the subscription's redelivery queue (:func:`ocs.events.keys.redeliver_key`, a stream in the
outbox entry format), which the dispatcher drains like an outbox, with its own cursor,
retries and backoff, and dead-letters again after the last attempt. The body is the one
that was not delivered: same ``id`` (receivers deduplicate on it), same ``time``; only the
signature is new (its ``t`` must be fresh).

Order: the queue is delivered in the order its letters were dead-lettered (for one subject,
the order the events were written), but **after** the newer events of the same subject that
the dispatcher delivered while they were dead: a dead letter no longer holds back its
subject (that is what dead-lettering means), and redelivering it cannot undo that. Each
redelivery carries ``Ocs-Redelivered: 1`` and its original ``time``, so a receiver that
keeps the latest state per subject compares times instead of trusting arrival order.

The dead letters, the queue, the cursors and retry states of a tenant share the hash tag
``{wh:T}``: the move (delete the letter, queue it) is one script on one slot, and two
operators redelivering at once queue each letter once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from ocs.events.keys import dead_key, redeliver_key
from ocs.redis_client import RedisClient

PAGE: Final = 500  # dead letters moved by one script call (a bounded command)
MAX_SELECT: Final = 1000  # entry ids in one request

# KEYS[1] the dead letters, KEYS[2] the redelivery queue; ARGV: 7 per letter (the dead
# letter's entry id, then the outbox fields id, tenant, type, subject, time, data). A letter
# is queued only if this call deleted it: a concurrent call, or a drop, queues nothing twice.
MOVE_LUA: Final = """
local moved = {}
for i = 1, #ARGV, 7 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[2], '*', 'id', ARGV[i + 1], 'tenant', ARGV[i + 2],
      'type', ARGV[i + 3], 'subject', ARGV[i + 4], 'time', ARGV[i + 5], 'data', ARGV[i + 6],
      'dead', ARGV[i])
    moved[#moved + 1] = ARGV[i]
  end
end
return moved
"""
DROP_ALL_LUA: Final = """
local n = redis.call('XLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
"""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ms(text: str) -> int:
    """RFC 3339 with milliseconds and ``Z`` (``Event.time``) -> epoch ms."""
    at = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return int(at.timestamp() * 1000 + 0.5)


def outbox_fields(body_text: str) -> list[str]:
    """A dead letter's body as the outbox entry it came from: id, tenant, type, subject,
    time (epoch ms), data. Integers in ``subject`` and ``data`` stay exact (Python's json)."""
    body = json.loads(body_text)
    return [
        str(body["id"]),
        str(body["tenant"]),
        str(body["type"]),
        json.dumps(body["subject"], separators=(",", ":")),
        str(_ms(str(body["time"]))),
        json.dumps(body["data"], separators=(",", ":")),
    ]


@dataclass(frozen=True, slots=True)
class Outcome:
    done: int  # letters redelivered (queued) or dropped
    unknown: list[str]  # entry ids asked for that are not dead letters (any more)


class DeadLetters:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._move = redis.register_script(MOVE_LUA)
        self._drop_all = redis.register_script(DROP_ALL_LUA)

    async def summary(self, tenant: str, sub: str) -> dict[str, Any]:
        """How many dead letters, the oldest and newest (epoch ms), and redeliveries queued."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(dead_key(tenant, sub))
            pipe.xrange(dead_key(tenant, sub), count=1)
            pipe.xrevrange(dead_key(tenant, sub), count=1)
            pipe.xlen(redeliver_key(tenant, sub))
            count, first, last, queued = await pipe.execute()
        return {
            "count": int(count),
            "oldest_ms": _entry_ms(first),
            "newest_ms": _entry_ms(last),
            "queue": int(queued),
        }

    async def redeliver(self, tenant: str, sub: str, entries: list[str] | None) -> Outcome:
        """Queue ``entries`` (dead letter entry ids), or every dead letter there is now
        (``None``), for redelivery, :data:`PAGE` letters a script call, oldest first."""
        key = dead_key(tenant, sub)
        if entries is not None:
            found: list[tuple[str, dict[str, str]]] = []
            async with self.redis.pipeline(transaction=False) as pipe:
                for eid in entries:
                    pipe.xrange(key, eid, eid)
                for reply in await pipe.execute():
                    found.extend((_s(e), {_s(k): _s(v) for k, v in f.items()}) for e, f in reply)
            found.sort(key=lambda item: _order(item[0]))  # the order they died in
            moved = await self._queue(tenant, sub, found)
            return Outcome(len(moved), [e for e in entries if e not in moved])
        last: list[Any] = await self.redis.xrevrange(key, count=1) or []
        if not last:
            return Outcome(0, [])
        bound, start, done = _s(last[0][0]), "-", 0
        while True:  # up to the newest letter of now: letters dying meanwhile stay
            raw: list[Any] = await self.redis.xrange(key, start, bound, count=PAGE) or []
            if not raw:
                return Outcome(done, [])
            page = [(_s(e), {_s(k): _s(v) for k, v in f.items()}) for e, f in raw]
            done += len(await self._queue(tenant, sub, page))
            start = f"({page[-1][0]}"

    async def _queue(
        self, tenant: str, sub: str, letters: list[tuple[str, dict[str, str]]]
    ) -> set[str]:
        moved: set[str] = set()
        for at in range(0, len(letters), PAGE):
            args: list[str] = []
            for eid, fields in letters[at : at + PAGE]:
                try:
                    args += [eid, *outbox_fields(fields["event_body"])]
                except (KeyError, ValueError):  # not a letter we wrote: left where it is
                    continue
            if args:
                keys = [dead_key(tenant, sub), redeliver_key(tenant, sub)]
                moved.update(_s(m) for m in await self._move(keys=keys, args=args))
        return moved

    async def drop(self, tenant: str, sub: str, entries: list[str] | None) -> Outcome:
        """Delete ``entries``, or every dead letter (``None``)."""
        key = dead_key(tenant, sub)
        if entries is None:
            return Outcome(int(await self._drop_all(keys=[key])), [])
        async with self.redis.pipeline(transaction=False) as pipe:
            for eid in entries:
                pipe.xdel(key, eid)
            deleted = await pipe.execute()
        unknown = [e for e, n in zip(entries, deleted, strict=True) if not int(n)]
        return Outcome(len(entries) - len(unknown), unknown)


def _order(eid: str) -> tuple[int, int]:
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq or 0)


def _entry_ms(reply: list[Any]) -> int | None:
    return _order(_s(reply[0][0]))[0] if reply else None
