"""The Redis balance store. Every balance change is one Lua script call (EVALSHA, reloaded on
NOSCRIPT by redis-py's ``AsyncScript``) that also appends a record to the payer's stream.

The scripts live next to this module as ``.lua`` files; see ``charge.lua`` for the layout of
a payer's keys and :mod:`ocs.balance.keys` for the hash tag rule.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from ocs.balance.batch import Command, CommandBatcher
from ocs.balance.keys import PAYERS, PayerKeys
from ocs.balance.models import BucketSpec, BucketState, ChargeRequest, ChargeResult
from ocs.balance.slots import locate, locate_all, place
from ocs.redis_client import RedisClient

RESULT_TTL_MS: Final = 3_600_000
"""How long a request's result is kept by default (an hour: far beyond Diameter's Tx). The
charging runtime passes ``answer_ttl``; a caller whose request id outlives that (an HTTP
Idempotency-Key, ``ocs.api.idempotency.RECORD_TTL_MS``) passes ``result_ttl_ms`` per call."""

RECLAIM_BATCH: Final = 500
PRELUDES: Final = ("_shadow.lua", "_events.lua")
EXTRA_PRELUDES: Final = {"charge.lua": ("_levels.lua",)}
"""Preludes of one script only: ``_levels.lua`` holds the upper levels of a multi-level
usage, which only ``charge.lua`` moves."""


def script_text(name: str) -> str:
    """The text Redis runs for ``lua/<name>``: the shared preludes ``_shadow.lua`` (the
    validate-then-write rule every balance script keeps) and ``_events.lua`` (``emit``: an
    event into the payer's outbox, docs/webhooks.md), then the script."""
    lua = resources.files("ocs.balance").joinpath("lua")
    parts = [*PRELUDES, *EXTRA_PRELUDES.get(name, ()), name]
    return "".join(lua.joinpath(p).read_text(encoding="utf-8") for p in parts)


@dataclass(frozen=True, slots=True)
class StreamRecord:
    id: str
    fields: dict[str, str]

    @property
    def alloc(self) -> list[tuple[str, int]]:
        return [(str(b), int(a)) for b, a in json.loads(self.fields.get("alloc", "[]"))]


class BalanceStore:
    """Wallets, pools and reservations of every payer, in one Redis (or Redis Cluster)."""

    def __init__(self, redis: RedisClient, *, result_ttl_ms: int = RESULT_TTL_MS) -> None:
        self.redis = redis
        self.result_ttl_ms = result_ttl_ms
        self.batch = CommandBatcher(redis)  # the real-time path's commands, auto-pipelined
        self._charge: AsyncScript = redis.register_script(script_text("charge.lua"))
        self._reclaim: AsyncScript = redis.register_script(script_text("reclaim.lua"))
        self._adjust: AsyncScript = redis.register_script(script_text("adjust.lua"))
        self._loading: dict[str, asyncio.Future[Any]] = {}  # SCRIPT LOADs in flight, by SHA
        self._loaded: dict[str, int] = {}  # SCRIPT LOADs done, by SHA

    async def _run_script(self, script: AsyncScript, commands: Sequence[Command]) -> list[Any]:
        """``commands`` through the batcher, the first an EVALSHA of ``script``; the replies
        as :meth:`CommandBatcher.submit` gives them. On NOSCRIPT (a restarted, failed-over
        or flushed Redis) the script is loaded, once for every caller that met it at the
        same time, and the commands go through the batcher again. Every CCR in flight
        meets it at once: each loading the script itself and calling it outside the
        batcher took a connection each (on a cluster a permit each, and a burst waited
        past its time limit). Still NOSCRIPT after that (flushed again meanwhile): the
        caller falls back to redis-py's load-and-run."""
        loads = self._loaded.get(script.sha, 0)
        replies = await self.batch.submit(commands)
        if not isinstance(replies[0], NoScriptError):
            return replies
        if self._loaded.get(script.sha, 0) == loads:  # no load came back since we sent
            await self._load(script)
        return await self.batch.submit(commands)

    async def _load(self, script: AsyncScript) -> None:
        """One SCRIPT LOAD of ``script`` (to every master of a cluster) shared by the
        callers that wait for it."""
        loading = self._loading.get(script.sha)
        if loading is None:
            loading = asyncio.ensure_future(self.redis.script_load(script.script))
            self._loading[script.sha] = loading
            loading.add_done_callback(lambda done: self._load_done(script.sha, done))
        await asyncio.shield(loading)  # a cancelled caller leaves the load to the others

    def _load_done(self, sha: str, done: asyncio.Future[Any]) -> None:
        del self._loading[sha]
        if not done.cancelled() and done.exception() is None:
            self._loaded[sha] = self._loaded.get(sha, 0) + 1

    # -- scripts ---------------------------------------------------------------------------
    async def charge(
        self, payer: str, req: ChargeRequest, *, result_ttl_ms: int | None = None
    ) -> ChargeResult:
        """One ``charge.lua`` call; its result is kept ``result_ttl_ms`` (default: the
        store's) under the request id. ``req.root`` places the payer (and the upper
        levels ``req.levels``, reserved or checked in the same call) in its chain's slot."""
        head, done, tail = _charge_keys(payer, req.root)
        keys: tuple[str, ...] = (*head, done + req.request_id, *tail)
        for level in req.levels:
            keys += _level_keys(level.payer, req.root)
        args = (
            req.request_id,
            req.now_ms,
            str(req.unit),
            req.used,
            req.want,
            req.min_grant,
            req.rate.numerator,
            req.rate.denominator,
            req.deadline_ms,
            self.result_ttl_ms if result_ttl_ms is None else result_ttl_ms,
            req.member,
            req.mode,
            req.context_json or json.dumps(req.context, separators=(",", ":"), default=str),
            payer,
            "" if req.price is None else req.price,
            json.dumps(req.counters, separators=(",", ":")) if req.counters else "",
            len(req.limits) // 5 if req.limits else "",
            levels_json(req),
            *req.limits,
        )
        call = ("EVALSHA", self._charge.sha, len(keys), *keys, *args)
        (raw,) = await self._run_script(self._charge, (call,))
        if isinstance(raw, NoScriptError):
            raw = await self._charge(keys=keys, args=args)
        elif isinstance(raw, Exception):
            raise raw
        return ChargeResult.from_json(raw)

    async def adjust(
        self,
        payer: str,
        request_id: str,
        ops: list[dict[str, Any]],
        now_ms: int,
        context: dict[str, Any] | None = None,
        *,
        result_ttl_ms: int | None = None,
    ) -> str:
        """Apply define/resize/credit/refund operations (see ``adjust.lua``); the status."""
        k = await self.locate(payer)
        keys, args = self._adjust_call(k, request_id, ops, now_ms, context, result_ttl_ms)
        raw = await self._adjust(keys=keys, args=args)
        return str(json.loads(raw)["status"])

    def _adjust_call(
        self,
        k: PayerKeys,
        request_id: str,
        ops: list[dict[str, Any]],
        now_ms: int,
        context: dict[str, Any] | None,
        result_ttl_ms: int | None = None,
    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """KEYS and ARGV of ``adjust.lua`` for one request."""
        keys = (k.buckets, k.balances, k.done(request_id), k.stream)
        args = (
            request_id,
            now_ms,
            self.result_ttl_ms if result_ttl_ms is None else result_ttl_ms,
            k.tag,
            json.dumps(ops, separators=(",", ":")),
            json.dumps(context or {}, separators=(",", ":"), default=str),
        )
        return keys, args

    async def adjust_and_read(
        self,
        payer: str,
        request_id: str,
        ops: list[dict[str, Any]],
        now_ms: int,
        context: dict[str, Any] | None = None,
        *,
        result_ttl_ms: int | None = None,
    ) -> tuple[str, list[BucketState]]:
        """:meth:`adjust`, then the payer's buckets, in one round trip: the script call and
        the two reads go in one batch (:attr:`batch`) to the payer's slot, and Redis runs
        them in order, so the reads see the script's effect (a top-up answers with the new
        balance). The owner of the store closes ``batch`` at shutdown."""
        k = await self.locate(payer)
        keys, args = self._adjust_call(k, request_id, ops, now_ms, context, result_ttl_ms)
        raw, defs, bals = await self._run_script(
            self._adjust,
            (
                ("EVALSHA", self._adjust.sha, len(keys), *keys, *args),
                ("HGETALL", k.buckets),
                ("HGETALL", k.balances),
            ),
        )
        if isinstance(raw, NoScriptError):  # flushed again meanwhile: load and run, then read
            raw = await self._adjust(keys=keys, args=args)
            return str(json.loads(raw)["status"]), await self.buckets(payer)
        for reply in (raw, defs, bals):
            if isinstance(reply, Exception):
                raise reply
        return str(json.loads(raw)["status"]), _bucket_states(_hash(defs), _hash(bals))

    async def buckets_batched(self, payer: str) -> list[BucketState]:
        """:meth:`buckets` through the store's command batcher (cheaper under load; the
        owner of the store closes ``batch`` at shutdown)."""
        k = await self.locate(payer)
        defs, bals = await self.batch.execute_many(
            (("HGETALL", k.buckets), ("HGETALL", k.balances))
        )
        return _bucket_states(_hash(defs), _hash(bals))

    async def locate(self, payer: str) -> PayerKeys:
        """The payer's keys as the registry places them (``ocs.balance.slots``): its own
        hash tag, or its reseller chain's root's. The charging path passes the root it
        knows from the catalogue instead (``ChargeRequest.root``)."""
        return await locate(self.redis, payer)

    async def provision(
        self,
        payer: str,
        buckets: list[BucketSpec],
        now_ms: int,
        *,
        resize: bool,
        root: str = "",
    ) -> None:
        """Create missing buckets (credited with their size); with ``resize``, set existing
        buckets' credited total to their size (pools whose size follows the catalogue).
        Wallet balances are never reset here: top-ups move them. ``root``: the payer's
        reseller chain root (its keys are moved there first if they were elsewhere)."""
        await place(self.redis, payer, root)
        ops: list[dict[str, Any]] = []
        for b in buckets:
            ops.append({"op": "define", "id": b.id, "def": b.definition(), "size": b.size})
            if resize:
                ops.append({"op": "resize", "id": b.id, "size": b.size})
        # define and resize are absolute, so a replay is harmless: a fresh id each time.
        await self.adjust(payer, f"provision:{uuid.uuid4().hex}", ops, now_ms)
        await self.redis.sadd(PAYERS, payer)

    async def reclaim(self, payer: str, now_ms: int, limit: int = RECLAIM_BATCH) -> int:
        """Release reservations past their deadline; how many were reclaimed."""
        return await self._reclaim_at(await self.locate(payer), now_ms, limit)

    async def _reclaim_at(self, k: PayerKeys, now_ms: int, limit: int) -> int:
        payer = k.tag
        n = await self._reclaim(
            keys=[k.balances, k.reservations, k.reservation_index, k.stream, k.limits],
            args=[now_ms, limit, payer],
        )
        return int(n)

    async def reclaim_all(self, now_ms: int) -> int:
        """One pass of the periodic reclaim task over every registered payer."""
        total = 0
        tags = [_s(raw) for raw in await self.redis.smembers(PAYERS)]
        for k in await locate_all(self.redis, tags):
            while (n := await self._reclaim_at(k, now_ms, RECLAIM_BATCH)) > 0:
                total += n
                if n < RECLAIM_BATCH:
                    break
        return total

    # -- reads -----------------------------------------------------------------------------
    async def buckets(self, payer: str) -> list[BucketState]:
        k = await self.locate(payer)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.buckets)
            pipe.hgetall(k.balances)
            defs, bals = await pipe.execute()
        return _bucket_states(defs, bals)

    async def live_reservations(self, payer: str) -> int:
        return int(await self.redis.zcard((await self.locate(payer)).reservation_index))

    async def records(self, payer: str, count: int = 100_000) -> list[StreamRecord]:
        """The payer's stream from the start (tests, `balance show`, the offline drain)."""
        stream = (await self.locate(payer)).stream
        entries: list[Any] = await self.redis.xrange(stream, count=count) or []
        return [
            StreamRecord(_s(eid), {_s(f): _s(v) for f, v in (fields or {}).items()})
            for eid, fields in entries
        ]


KEYS_KEPT: Final = 100_000
_CHARGE_KEYS: dict[tuple[str, str], tuple[tuple[str, ...], str, tuple[str, ...]]] = {}
_LEVEL_KEYS: dict[tuple[str, str], tuple[str, ...]] = {}


def _charge_keys(payer: str, root: str) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """``charge.lua`` KEYS[1..10] of ``payer`` (in ``root``'s slot) around the request's own
    ``done`` key: KEYS[1..4], the ``done`` prefix, KEYS[6..10]. Built once per payer: a key
    name is a pure function of (payer, root), and every CCR of a payer sends the same."""
    hit = _CHARGE_KEYS.get((payer, root))
    if hit is None:
        k = PayerKeys(payer, root)
        hit = (
            (k.buckets, k.balances, k.reservations, k.reservation_index),
            k.done(""),
            (k.stream, k.lifecycle, k.counters, k.events, k.limits),
        )
        if len(_CHARGE_KEYS) >= KEYS_KEPT:
            _CHARGE_KEYS.clear()
        _CHARGE_KEYS[(payer, root)] = hit
    return hit


def _level_keys(payer: str, root: str) -> tuple[str, ...]:
    """The five keys of an upper level (``_levels.lua``), built once per payer."""
    hit = _LEVEL_KEYS.get((payer, root))
    if hit is None:
        u = PayerKeys(payer, root)
        hit = (u.buckets, u.balances, u.reservations, u.reservation_index, u.stream)
        if len(_LEVEL_KEYS) >= KEYS_KEPT:
            _LEVEL_KEYS.clear()
        _LEVEL_KEYS[(payer, root)] = hit
    return hit


def levels_json(req: ChargeRequest) -> str:
    """ARGV[17] of ``charge.lua``: the upper levels, level 1 first (``""``: none)."""
    if not req.levels:
        return ""
    return json.dumps(
        [
            {
                "p": lv.payer,
                "k": "reserve" if lv.reserve else "check",
                "n": lv.rate.numerator,
                "d": lv.rate.denominator,
                **({} if lv.price is None else {"x": lv.price}),
                **({"l": lv.level} if lv.level else {}),
            }
            for lv in req.levels
        ],
        separators=(",", ":"),
    )


def _bucket_states(defs: dict[Any, Any], bals: dict[Any, Any]) -> list[BucketState]:
    """A payer's buckets from its definitions and balances hashes (HGETALL replies)."""
    values = {_s(f): int(v) for f, v in bals.items()}
    out: list[BucketState] = []
    for raw_id, raw_def in defs.items():
        bid = _s(raw_id)
        d = json.loads(raw_def)
        out.append(
            BucketState(
                id=bid,
                unit=str(d["unit"]),
                priority=int(d.get("prio", 0)),
                valid_from=int(d.get("from", 0)),
                valid_to=int(d.get("to", 0)),
                unlimited=bool(d.get("unlimited", False)),
                credited=values.get(f"{bid}:i", 0),
                available=values.get(f"{bid}:a", 0),
                reserved=values.get(f"{bid}:r", 0),
                used=values.get(f"{bid}:u", 0),
            )
        )
    out.sort(key=lambda b: (b.priority, b.valid_to or 2**62, b.id))
    return out


def _hash(reply: Any) -> dict[Any, Any]:
    """An HGETALL reply as a dict: the batcher gives raw RESP (a flat list) on a single
    Redis and redis-py's dict through a cluster pipeline."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
