"""A payer's balance thresholds (docs/webhooks.md), which ``charge.lua`` checks after each
call and turns into ``balance.threshold`` events: the field ``alerts`` of the payer's
lifecycle hash (from the catalogue, rewritten by each apply) and ``alerts_api`` (set over
the HTTP API, kept by applies, overriding the catalogue's)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from ocs.balance.slots import locate, locate_all
from ocs.redis_client import RedisClient

CATALOGUE: Final = "alerts"
API: Final = "alerts_api"


@dataclass(frozen=True, slots=True)
class PayerThresholds:
    """``unit``: the buckets they watch; ``base``: the allowance the percentages are of
    (None: what the buckets were credited); ``percent`` used, ``absolute`` left."""

    unit: str
    base: int | None
    percent: tuple[int, ...] = ()
    absolute: tuple[int, ...] = ()

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "u": self.unit,
            "p": sorted(set(self.percent)),
            "a": sorted(set(self.absolute)),
        }
        if self.base is not None:
            doc["b"] = self.base
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> PayerThresholds:
        d = json.loads(raw)
        base = d.get("b")
        return cls(
            unit=str(d["u"]),
            base=None if base is None else int(base),
            percent=tuple(int(p) for p in d.get("p", ())),
            absolute=tuple(int(a) for a in d.get("a", ())),
        )

    @property
    def empty(self) -> bool:
        return not self.percent and not self.absolute


async def put_catalogue_thresholds(
    redis: RedisClient, thresholds: dict[str, PayerThresholds | None]
) -> None:
    """The catalogue's thresholds of each payer (None: none), one pipeline."""
    if not thresholds:
        return
    placed = await locate_all(redis, thresholds)  # a chained payer: in its root's slot
    async with redis.pipeline(transaction=False) as pipe:
        for keys, t in zip(placed, thresholds.values(), strict=True):
            life = keys.lifecycle
            if t is None or t.empty:
                pipe.hdel(life, CATALOGUE)
            else:
                pipe.hset(life, CATALOGUE, t.to_json())
        await pipe.execute()


async def put_api_thresholds(redis: RedisClient, tag: str, t: PayerThresholds) -> None:
    """Thresholds set over the API; they override the catalogue's (empty lists: none at
    all, the catalogue's included)."""
    await redis.hset((await locate(redis, tag)).lifecycle, API, t.to_json())


async def thresholds_in_force(redis: RedisClient, tag: str) -> tuple[PayerThresholds | None, str]:
    """The thresholds ``charge.lua`` applies and where they come from (api, catalogue)."""
    api, cat = await redis.hmget((await locate(redis, tag)).lifecycle, [API, CATALOGUE])
    if api is not None:
        return PayerThresholds.from_json(api), "api"
    if cat is not None:
        return PayerThresholds.from_json(cat), "catalogue"
    return None, "none"
