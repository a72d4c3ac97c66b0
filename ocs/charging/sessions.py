"""Session state in Redis, with a TTL, so that a restarted server (or another worker)
continues existing sessions: which payer holds each rating group's reservation, and the
encoded answer of each request for retransmissions.

The process also keeps the state of the sessions it answers (bounded). A CCR whose
CC-Request-Number follows the one this process answered last for that session is served from
that copy: nobody else can have changed the session in between, because every request of the
session up to this one went through this process. A CCR-Initial that is not a retransmission
(no T flag) opens a new session (RFC 6733 Session-Ids are unique): it has no state to read and
skips Redis too, so it costs one round trip (its charge) like a CCR-Update. Any other CCR (the
first one seen here after a restart or a move to another worker, or a retransmission) reads
Redis. Even a reused Session-Id is charged once: the charge script keeps its result per
request id.

Writes are write-behind: :meth:`SessionStore.save` queues them on the balance store's
:class:`~ocs.balance.batch.CommandBatcher` (deferred: they go out with the next batch, at
most ``WRITE_BEHIND_DELAY`` later, on the same connection and in order, so a later read by
this process sees them) and the answer is sent without waiting for Redis to confirm. The
balance itself never depends on this: the charge script already stored its result under the
request id, so a retransmission that finds no stored answer (the process died in the
milliseconds between) is answered from those results and charged once. The session hash is
written only when it changes, and its TTL refreshed at most every
``ttl / TTL_REFRESH_DIVISOR`` seconds. ``write_behind=False`` waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ocs.balance.batch import Command, CommandBatcher
from ocs.balance.keys import answer_key, session_key
from ocs.store import RedisClient

log = logging.getLogger(__name__)

_RG = "rg:"
CACHE_SIZE: Final = 200_000  # sessions whose state this process keeps
TTL_REFRESH_DIVISOR: Final = 8


@dataclass(slots=True)
class _Known:
    number: int  # the last CC-Request-Number answered here
    payers: dict[int, str]
    refreshed: float  # monotonic time the session key's TTL was last set


class SessionStore:
    def __init__(
        self,
        redis: RedisClient,
        ttl: int,
        *,
        answer_ttl: int | None = None,
        batch: CommandBatcher | None = None,
        cache_size: int = CACHE_SIZE,
        write_behind: bool = True,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.redis = redis
        self.ttl = ttl
        self.answer_ttl = ttl if answer_ttl is None else answer_ttl
        self.batch = batch if batch is not None else CommandBatcher(redis)
        self.cache_size = cache_size
        self.write_behind = write_behind
        self.on_error = on_error
        self._known: dict[str, _Known] = {}

    async def lookup(
        self, session_id: str, number: int, *, new: bool = False
    ) -> tuple[dict[int, str], bytes | None]:
        """The session's payers by rating group (a copy) and the stored answer of request
        ``number`` if it was answered before (a retransmission). ``new``: the request opens
        the session (a CCR-Initial without the T flag), nothing to read."""
        if new:
            self._known.pop(session_id, None)
            return {}, None
        known = self._known.get(session_id)
        if known is not None and known.number == number - 1:
            return dict(known.payers), None
        self._known.pop(session_id, None)  # Redis is the truth now; save() rewrites the state
        state, answer = await self.batch.execute_many(
            (("HGETALL", session_key(session_id)), ("GET", answer_key(session_id, number)))
        )
        pairs = (
            state.items() if isinstance(state, dict) else zip(state[::2], state[1::2], strict=True)
        )
        payers: dict[int, str] = {}
        for name, value in pairs:
            field = name.decode() if isinstance(name, bytes) else str(name)
            if field.startswith(_RG):
                payers[int(field[len(_RG) :])] = (
                    value.decode() if isinstance(value, bytes) else str(value)
                )
        return payers, answer

    async def save(
        self,
        session_id: str,
        number: int,
        answer: bytes,
        payers: dict[int, str],
        *,
        closed: bool,
        dropped: tuple[int, ...] = (),
    ) -> None:
        key = session_key(session_id)
        known = self._known.get(session_id)
        now = time.monotonic()
        commands: list[Command] = []
        changed = known is None or known.payers != payers or bool(dropped)
        stale = known is None or now - known.refreshed > self.ttl / TTL_REFRESH_DIVISOR
        if closed:
            commands.append(("DEL", key))
        else:
            if changed:
                if payers:
                    fields: list[Any] = []
                    for rg, payer in payers.items():
                        fields += (f"{_RG}{rg}", payer)
                    commands.append(("HSET", key, *fields))
                else:
                    commands.append(("HSET", key, "open", "1"))
                if dropped:
                    commands.append(("HDEL", key, *(f"{_RG}{rg}" for rg in dropped)))
            if changed or stale:
                commands.append(("EXPIRE", key, self.ttl))
        commands.append(("SET", answer_key(session_id, number), answer, "EX", self.answer_ttl))
        if self.write_behind:
            self.batch.submit(commands, defer=True).add_done_callback(self._written)
        else:
            await self.batch.execute_many(commands)
        if closed:
            self._known.pop(session_id, None)
        elif known is not None and not (changed or stale):
            known.number = number
        else:
            self._forget_oldest()
            self._known[session_id] = _Known(number, dict(payers), now)

    def _written(self, fut: asyncio.Future[list[Any]]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            exc = next((r for r in fut.result() if isinstance(r, Exception)), None)
        if exc is not None:
            if self.on_error is not None:  # the owner logs (once per outage) and counts
                self.on_error(exc)
            else:
                log.warning("session state not written: %s", exc)

    def forget(self, session_id: str) -> None:
        self._known.pop(session_id, None)

    def _forget_oldest(self) -> None:
        while len(self._known) >= self.cache_size:
            del self._known[next(iter(self._known))]
