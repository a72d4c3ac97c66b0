"""Session state in Redis, with a TTL refreshed on every CCR, so that a restarted server (or
another worker) continues existing sessions: which payer holds each rating group's
reservation, and the encoded answer of each request for retransmissions."""

from __future__ import annotations

from ocs.balance.keys import answer_key, session_key
from ocs.store import RedisClient

_RG = "rg:"


class SessionStore:
    def __init__(self, redis: RedisClient, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    async def lookup(self, session_id: str, number: int) -> tuple[dict[int, str], bytes | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(session_key(session_id))
            pipe.get(answer_key(session_id, number))
            state, answer = await pipe.execute()
        payers: dict[int, str] = {}
        for field, value in state.items():
            name = field.decode() if isinstance(field, bytes) else str(field)
            if name.startswith(_RG):
                payers[int(name[len(_RG) :])] = (
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
        async with self.redis.pipeline(transaction=False) as pipe:
            if closed:
                pipe.delete(key)
            else:
                if payers:
                    pipe.hset(key, mapping={f"{_RG}{rg}": p for rg, p in payers.items()})
                else:
                    pipe.hset(key, "open", "1")
                if dropped:
                    pipe.hdel(key, *(f"{_RG}{rg}" for rg in dropped))
                pipe.expire(key, self.ttl)
            pipe.set(answer_key(session_id, number), answer, ex=self.ttl)
            await pipe.execute()
