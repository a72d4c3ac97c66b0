"""Session state in Redis, with a TTL, so that a restarted server (or another worker)
continues existing sessions: which payer holds each rating group's reservation, and the
encoded answer of each request for retransmissions.

The process also keeps the state of the sessions it answers (bounded). A CCR whose
CC-Request-Number follows the one this process answered last for that session is served from
that copy: nobody else can have changed the session in between, because every request of the
session up to this one went through this process. A CCR-Initial that is not a retransmission
(no T flag) opens a new session (RFC 6733 Session-Ids are unique): it has no state to read
and skips Redis too, so it costs one round trip (its charge) like a CCR-Update, when its
Session-Id begins with its own Origin-Host, as RFC 6733 8.8 says it MUST ("<DiameterIdentity>;
..."): no other peer can open a session in that namespace, since the Origin-Host is checked
against the connection. A Session-Id that does not (some equipment does not follow 8.8) is
claimed for its peer first (:data:`CLAIM`, one more round trip): one that is live for another
peer is refused, never re-bound. Any other CCR
(the first one seen here after a restart or a move to another worker, or a retransmission)
reads Redis. Even a reused Session-Id is charged once: the charge script keeps its result per
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

A session belongs to the Diameter peer that opened it: the CCR-Initial's Origin-Host (already
checked by ``ocs.diameter.peer`` to be the connected peer's own, or one it relays for) is kept
in the session hash (field ``peer``, lower case). A CCR-Initial outside its peer's own
namespace claims the Session-Id before it is charged: one from another peer with a
Session-Id still bound (live, or closed and keeping its stored answers) gets
:class:`UnknownSession` (5002) and charges nothing. A CCR-Update,
-Terminate or -Event, or a retransmission, whose Origin-Host is another one gets
:class:`UnknownSession` (5002) before anything is charged, returned or written. A closed
session leaves ``peer`` alone in its hash for ``answer_ttl``, so its stored answers stay its
peer's. The binding is to the peer, not to a worker: any worker continues the session. A
session stored before the binding existed (no ``peer`` field) is continued by whoever asks,
and bound to that peer at its next write.
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
from ocs.diameter.constants import ResultCode
from ocs.diameter.errors import DiameterError
from ocs.redis_client import RedisClient

log = logging.getLogger(__name__)

_RG = "rg:"
_PEER = "peer"  # the Origin-Host (lower case) of the peer that opened the session
CACHE_SIZE: Final = 200_000  # sessions whose state this process keeps
TTL_REFRESH_DIVISOR: Final = 8


@dataclass(slots=True)
class _Known:
    number: int  # the last CC-Request-Number answered here
    payers: dict[int, str]
    refreshed: float  # monotonic time the session key's TTL was last set
    peer: str  # the Origin-Host the session is bound to (lower case)


class UnknownSession(DiameterError):
    """A request for a session another peer opened. RFC 6733 7.1.5 / RFC 4006 (5.1, 8):
    DIAMETER_UNKNOWN_SESSION_ID (5002), "the request contained an unknown Session-Id":
    for this peer, the session does not exist. Nothing is charged, answered or changed."""

    result_code = ResultCode.DIAMETER_UNKNOWN_SESSION_ID

    def __init__(self) -> None:
        super().__init__("unknown Session-Id")


# CCR-Initial: bind the session to its peer unless another peer holds it. Returns the holder
# when it is another peer (nothing written), nil when the session is (now) this peer's. The
# key gets the session TTL only when the claim creates it (an existing session keeps its own).
CLAIM: Final = """
local owner = redis.call('HGET', KEYS[1], 'peer')
if owner then
  if owner ~= ARGV[1] then return owner end
  return false
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'peer', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], 'peer', ARGV[1])
end
return false
"""


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
        self, session_id: str, number: int, peer: str, *, new: bool = False
    ) -> tuple[dict[int, str], bytes | None]:
        """The session's payers by rating group (a copy) and the stored answer of request
        ``number`` if it was answered before (a retransmission). ``new``: the request opens
        the session (a CCR-Initial without the T flag): nothing to read, the Session-Id is
        claimed for ``peer``. ``peer``: the request's Origin-Host; raises
        :class:`UnknownSession` when the session is another peer's (nothing is changed, here
        or in Redis)."""
        peer = peer.lower()
        known = self._known.get(session_id)
        if known is not None and known.peer != peer:
            raise UnknownSession()
        if new:
            self._known.pop(session_id, None)
            if session_id.lower().startswith(peer + ";"):  # its own namespace (RFC 6733 8.8)
                return {}, None
            holder = await self.batch.execute(
                "EVAL", CLAIM, 1, session_key(session_id), peer, self.ttl
            )
            if holder is not None:
                raise UnknownSession()
            return {}, None
        if known is not None and known.number == number - 1:
            return dict(known.payers), None
        state, answer = await self.batch.execute_many(
            (("HGETALL", session_key(session_id)), ("GET", answer_key(session_id, number)))
        )
        pairs = (
            state.items() if isinstance(state, dict) else zip(state[::2], state[1::2], strict=True)
        )
        payers: dict[int, str] = {}
        owner: str | None = None  # None: stored before sessions were bound (anyone's)
        for name, value in pairs:
            field = name.decode() if isinstance(name, bytes) else str(name)
            text = value.decode() if isinstance(value, bytes) else str(value)
            if field.startswith(_RG):
                payers[int(field[len(_RG) :])] = text
            elif field == _PEER:
                owner = text
        if owner is not None and owner != peer:
            raise UnknownSession()
        self._known.pop(session_id, None)  # Redis is the truth now; save() rewrites the state
        return payers, answer

    async def save(
        self,
        session_id: str,
        number: int,
        answer: bytes,
        payers: dict[int, str],
        peer: str,
        *,
        closed: bool,
        dropped: tuple[int, ...] = (),
    ) -> None:
        """``peer``: the request's Origin-Host, the session's (``lookup`` checked it)."""
        peer = peer.lower()
        key = session_key(session_id)
        known = self._known.get(session_id)
        now = time.monotonic()
        commands: list[Command] = []
        changed = known is None or known.payers != payers or bool(dropped)
        stale = known is None or now - known.refreshed > self.ttl / TTL_REFRESH_DIVISOR
        if closed:  # only the binding stays, as long as the stored answers
            commands.append(("DEL", key))
            commands.append(("HSET", key, _PEER, peer))
            commands.append(("EXPIRE", key, self.answer_ttl))
        else:
            if changed:
                fields: list[Any] = [_PEER, peer]
                for rg, payer in payers.items():
                    fields += (f"{_RG}{rg}", payer)
                commands.append(("HSET", key, *fields))
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
            self._known[session_id] = _Known(number, dict(payers), now, peer)

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
