"""A tenant's webhook subscriptions in Redis, with their delivery logs and dead letters."""

from __future__ import annotations

import json
import secrets
from typing import Any, Final

from ocs.events.keys import (
    TENANTS,
    cursor_key,
    dead_key,
    log_key,
    redeliver_key,
    retry_key,
    subscriptions_key,
)
from ocs.events.model import (
    SECRET_MAX,
    SECRET_MIN,
    Subscription,
    SubscriptionError,
    check_events,
    check_url,
    new_secret,
)
from ocs.redis_client import RedisClient

MAX_SUBSCRIPTIONS: Final = 50  # per tenant
LOG_MAXLEN: Final = 1_000  # delivery log entries kept per subscription (approximately)
DEAD_MAXLEN: Final = 10_000


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Subscriptions:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def create(
        self,
        tenant: str,
        url: str,
        events: list[str],
        *,
        secret: str | None,
        payers: list[str],
        imsis: list[str],
        private_targets: bool,
    ) -> Subscription:
        """Validate and store a subscription; it receives the events written from now on
        (Redis's clock: the outbox entry ids are Redis's time too)."""
        check_url(url, private_targets=private_targets)
        kinds = check_events(events)
        if secret is not None and not SECRET_MIN <= len(secret) <= SECRET_MAX:
            raise SubscriptionError("secret", f"{SECRET_MIN} to {SECRET_MAX} characters")
        if len(payers) + len(imsis) > 1_000:
            raise SubscriptionError("filter", "at most 1000 payers and IMSIs")
        if await self.redis.hlen(subscriptions_key(tenant)) >= MAX_SUBSCRIPTIONS:
            raise SubscriptionError("subscriptions", f"at most {MAX_SUBSCRIPTIONS} per tenant")
        sec, usec = await self.redis.time()
        sub = Subscription(
            id="wh_" + secrets.token_hex(8),
            tenant=tenant,
            url=url,
            events=tuple(kinds),
            secret=secret or new_secret(),
            payers=tuple(sorted(set(payers))),
            imsis=tuple(sorted(set(imsis))),
            created_ms=int(sec) * 1000 + int(usec) // 1000,
        )
        await self.redis.hset(subscriptions_key(tenant), sub.id, sub.to_json())
        await self.redis.sadd(TENANTS, tenant)
        return sub

    async def all(self, tenant: str) -> list[Subscription]:
        raw = await self.redis.hgetall(subscriptions_key(tenant))
        return sorted(
            (Subscription.from_json(v) for v in raw.values()), key=lambda s: (s.created_ms, s.id)
        )

    async def get(self, tenant: str, sub_id: str) -> Subscription | None:
        raw = await self.redis.hget(subscriptions_key(tenant), sub_id)
        return None if raw is None else Subscription.from_json(raw)

    async def delete(self, tenant: str, sub_id: str) -> bool:
        removed = int(await self.redis.hdel(subscriptions_key(tenant), sub_id))
        if removed:
            keys = (cursor_key, retry_key, log_key, dead_key, redeliver_key)
            await self.redis.delete(*[k(tenant, sub_id) for k in keys])
        return removed > 0

    async def deliveries(self, tenant: str, sub_id: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` attempts, newest first."""
        return await _entries(self.redis, log_key(tenant, sub_id), limit)

    async def dead_letters(
        self, tenant: str, sub_id: str, limit: int, before: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; ``before``: only those older than that entry (the next page)."""
        return await _entries(self.redis, dead_key(tenant, sub_id), limit, before)


async def _entries(
    redis: RedisClient, key: str, limit: int, before: str | None = None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    top = f"({before}" if before else "+"
    entries: list[Any] = await redis.xrevrange(key, top, "-", count=limit) or []
    for eid, fields in entries:
        entry: dict[str, Any] = {"entry": _s(eid)}
        for k, v in fields.items():
            name, value = _s(k), _s(v)
            if name in ("attempt", "status", "ms", "at_ms"):
                entry[name] = int(value) if value else None
            elif name == "event_body":
                entry["event"] = json.loads(value)
            else:
                entry[name] = value
        out.append(entry)
    return out
