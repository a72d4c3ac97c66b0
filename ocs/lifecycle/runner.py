"""The lifecycle pass: start each pool's first period, then renew (or roll) the periods that
are due, each with one call of ``lifecycle.lua`` keyed by the period it ends, so that several
workers or nodes running the pass at once renew exactly once. Time is a parameter.

A renewal fee charged to a wallet is paid first, on the wallet (its own hash tag, so its own
script call, idempotent by pool and period), then the pool is renewed. A fee the wallet
cannot pay follows the rule's ``on_failure``; each outcome but a plain renewal is published
on :data:`~ocs.balance.keys.LIFECYCLE_EVENTS` and logged (docs/lifecycle.md). The pool's live
sessions get an RAR after a renewal and an ASR after a suspension (:mod:`.signals`)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from redis.commands.core import AsyncScript

from ocs.balance.keys import LIFECYCLE_EVENTS, PAYERS
from ocs.balance.slots import locate, locate_all
from ocs.balance.store import script_text
from ocs.lifecycle.metrics import LifecycleMetrics
from ocs.lifecycle.periods import Period, next_period, period_at, period_from
from ocs.lifecycle.rules import PoolRules
from ocs.lifecycle.signals import ASR, RAR, SessionSignals
from ocs.redis_client import RedisClient

log = logging.getLogger(__name__)
EVENTS_MAXLEN: Final = 100_000


@dataclass(slots=True)
class PassReport:
    """What one pass did: outcome -> count, the events it published, and how many live
    sessions it asked to re-authorise ("rar") or abort ("asr")."""

    outcomes: Counter[str] = field(default_factory=Counter)
    events: list[dict[str, Any]] = field(default_factory=list)
    signals: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcomes": dict(sorted(self.outcomes.items())),
            "events": self.events,
            "signals": dict(sorted(self.signals.items())),
        }


def _json(value: dict[str, Any]) -> str:
    """JSON for the script: None values left out (cjson would turn them into a truthy null)."""
    return json.dumps({k: v for k, v in value.items() if v is not None}, separators=(",", ":"))


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Lifecycle:
    def __init__(
        self,
        redis: RedisClient,
        metrics: LifecycleMetrics | None = None,
        *,
        signal_sessions: bool = True,
    ) -> None:
        """``signal_sessions``: RAR/ASR the live sessions of the pools a pass renews or
        suspends (off only where no gateway can hold a session, e.g. benchmarks)."""
        self.redis = redis
        self.metrics = metrics
        self.signals = SessionSignals(redis) if signal_sessions else None
        self._script: AsyncScript = redis.register_script(script_text("lifecycle.lua"))

    async def _call(self, tag: str, action: str, now_ms: int, args: dict[str, Any]) -> Any:
        k = await locate(self.redis, tag)  # a pool in a reseller chain: its root's slot
        raw = await self._script(
            keys=[k.buckets, k.balances, k.lifecycle, k.stream, k.events],
            args=[action, now_ms, tag, _json(args)],
        )
        return json.loads(raw)

    # -- provisioning ------------------------------------------------------------------------
    async def setup(self, rules: list[PoolRules], now_ms: int) -> None:
        """Store each pool's ladder and auto top-off rule; start its first period (kept when
        the payer has one: re-applying a catalogue does not restart periods)."""
        if not rules:
            return
        # one round trip (per cluster node) for every pool: a catalogue change over the API
        # sets up all pools again; SCRIPT LOAD goes to every primary first
        sha = await self.redis.script_load(self._script.script)
        placed = await locate_all(self.redis, [r.tag for r in rules])
        async with self.redis.pipeline(transaction=False) as pipe:
            for r, k in zip(rules, placed, strict=True):
                first = period_at(now_ms, r.pool.period, r.tz, r.bill_day)
                args = {
                    "ladder": r.ladder,
                    "topoff": r.topoff,
                    "size": r.sizes[0],
                    "own": r.catalogue_buckets,
                    "period": first.as_json(),
                }
                keys = (k.buckets, k.balances, k.lifecycle, k.stream, k.events)
                pipe.execute_command(
                    "EVALSHA", sha, len(keys), *keys, "setup", now_ms, r.tag, _json(args)
                )
                pipe.sadd(PAYERS, r.tag)
            await pipe.execute()

    async def set_api_top_off(self, tag: str, rule: dict[str, Any] | None) -> None:
        """The HTTP API's auto top-off setting of a pool (``PUT .../auto-renewal``): it
        overrides the catalogue's rule, and catalogue re-applies keep it. None: disabled.
        The script also marks the pool's bucket with the rule's threshold, if any."""
        value = rule if rule is not None else {"off": True}
        await self._call(tag, "topoff", 0, {"rule": value})

    # -- reads -------------------------------------------------------------------------------
    async def state(self, tag: str) -> dict[str, Any] | None:
        """The payer's lifecycle as shown by `ocs balance show` and the pool view: period,
        its end, adaptive tier and size, auto top-offs this period, hold; None if it has none."""
        raw = await self.redis.hgetall((await locate(self.redis, tag)).lifecycle)
        life = {_s(k): _s(v) for k, v in raw.items()}
        return lifecycle_view(life)

    # -- the pass ----------------------------------------------------------------------------
    async def run_once(self, rules: list[PoolRules], now_ms: int) -> PassReport:
        """Renew or roll every pool whose period ended (or, ``on: depleted``, whose allowance
        is used up); the gauge of adaptive tiers follows."""
        report = PassReport()
        signals: dict[str, list[tuple[str, str, str | None]]] = {}  # op -> SIMs, at the end
        reads = []
        placed = await locate_all(self.redis, [r.tag for r in rules])
        async with self.redis.pipeline(transaction=False) as pipe:
            for r, k in zip(rules, placed, strict=True):
                pipe.hmget(k.lifecycle, ["period", "pend", "tier"])
                pipe.hget(k.balances, f"{r.pool.id}:a")
            replies = await pipe.execute()
        for i, r in enumerate(rules):
            (period, pend, tier), avail = replies[2 * i], replies[2 * i + 1]
            reads.append((r, period, pend, tier, avail))
        for r, period, pend, tier, avail in reads:
            if period is None:
                continue  # not set up yet (catalogue not applied with lifecycle)
            if self.metrics is not None and r.ladder is not None:
                self.metrics.tier.labels(r.pool.id).set(int(tier or 0))
            renewal = r.renewal
            depleted = renewal is not None and renewal.on == "depleted" and int(avail or 0) <= 0
            if now_ms < int(pend or 0) and not depleted:
                continue
            outcome, op = await self._renew(r, _s(period), int(pend), now_ms, depleted, report)
            report.outcomes[outcome] += 1
            if self.metrics is not None:
                self.metrics.renewals.labels(outcome).inc()
            if op is not None:
                signals.setdefault(op, []).extend((r.tenant, i, m) for i, m in r.sims)
        if self.signals is not None and signals:
            for op, n in (await self.signals.send(signals)).items():
                report.signals[op] += n
                if self.metrics is not None:
                    self.metrics.signals.labels(op).inc(n)
        return report

    async def _renew(
        self,
        r: PoolRules,
        period: str,
        pend: int,
        now_ms: int,
        depleted: bool,
        report: PassReport,
    ) -> tuple[str, str | None]:
        """The outcome, and the signal the pool's sessions get from this call (None: no
        change made by this call, or none that concerns them)."""
        kind = r.pool.period
        due = "depleted" if depleted and now_ms < pend else "end"
        nxt: Period = (
            period_from(now_ms, kind, r.tz)
            if due == "depleted"
            else next_period(pend, now_ms, kind, r.tz, r.bill_day)
        )
        renewal = r.renewal
        base: dict[str, Any] = {
            "period": period,
            "next": nxt.as_json(),
            "due": due,
            "pool": r.pool.id,
            "account": r.pool.account,
        }
        if renewal is None:  # no renewal rule: the period rolls (auto top-off cap restarts)
            return _signal(await self._call(r.tag, "renew", now_ms, base))
        base.update(
            credit={"bucket": r.pool.id, "size": r.sizes[0]},
            fee=renewal.fee,
            currency=r.currency,
            billed="invoice" if renewal.charge_to == "invoice" or not renewal.fee else "wallet",
        )
        if base["billed"] == "wallet" and r.wallet_tag is not None:
            paid = await self._call(
                r.wallet_tag,
                "pay",
                now_ms,
                {
                    "ref": f"{r.tag}:{period}",
                    "fee": renewal.fee,
                    "currency": r.currency,
                    "pool": r.pool.id,
                    "account": r.pool.account,
                    "period": period,
                },
            )
            if paid["status"] != "paid":
                return await self._unpaid(r, base, now_ms, report)
        return _signal(await self._call(r.tag, "renew", now_ms, base))

    async def _unpaid(
        self, r: PoolRules, base: dict[str, Any], now_ms: int, report: PassReport
    ) -> tuple[str, str | None]:
        assert r.renewal is not None
        policy = r.renewal.on_failure
        if policy == "notify":  # renew anyway; the fee goes on the invoice
            result = await self._call(
                r.tag, "renew", now_ms, {**base, "billed": "invoice", "fallback": "unpaid"}
            )
            status, first = str(result["status"]), result["status"] == "renewed"
            outcome = "renewed_unpaid" if status == "renewed" else status
            op = _signal(result)[1]
        else:
            result = await self._call(
                r.tag, "fail", now_ms, {**base, "on_failure": policy, "credit": None}
            )
            status, first = str(result["status"]), bool(result.get("first"))
            outcome = status
            op = ASR if result.get("held") else None
        if first:
            await self._publish(r, base, outcome, now_ms, report)
        return outcome, op

    async def _publish(
        self, r: PoolRules, base: dict[str, Any], outcome: str, now_ms: int, report: PassReport
    ) -> None:
        event = {
            "event": "renewal-unpaid",
            "outcome": outcome,
            "payer": r.tag,
            "pool": r.pool.id,
            "account": r.pool.account,
            "wallet": r.wallet_tag or "",
            "period": base["period"],
            "fee": base.get("fee", 0),
            "currency": r.currency,
            "ts": now_ms,
        }
        fields = {k: str(v) for k, v in event.items()}
        await self.redis.xadd(LIFECYCLE_EVENTS, fields, maxlen=EVENTS_MAXLEN, approximate=True)  # type: ignore[arg-type]
        report.events.append(event)
        log.warning(
            "renewal of pool %s (period %s) not paid from %s: %s",
            r.pool.id,
            base["period"],
            r.wallet_tag,
            outcome,
        )


def _signal(result: dict[str, Any]) -> tuple[str, str | None]:
    """A renew answer's outcome, and RAR when this call credited a new allowance or lifted a
    suspension (a plain roll adds nothing the sessions could use)."""
    status = str(result["status"])
    return status, RAR if status == "renewed" or result.get("lifted") else None


def lifecycle_view(life: dict[str, str]) -> dict[str, Any] | None:
    if "period" not in life:
        return None
    period = life["period"]
    view: dict[str, Any] = {
        "period": period,
        "period_end": int(life.get("pend", "0")),
        "top_offs": int(life.get(f"topoffs:{period}", "0")),
        "suspended": "hold" in life,
    }
    rule, source = life.get("topoff_api"), "api"
    if rule is None:
        rule, source = life.get("topoff"), "catalogue"
    top_off = json.loads(rule) if rule is not None else None
    view["auto_top_off"] = (
        {
            "addon": top_off["addon"],
            "cap": int(top_off["cap"]),
            "threshold_percent": int(top_off.get("pct", 0)),
            "source": source,
        }
        if top_off is not None and not top_off.get("off")
        else None
    )
    if "ladder" in life:
        sizes = json.loads(life["ladder"])["s"]
        tier = int(life.get("tier", "0"))
        view["tier"] = tier
        view["tier_size"] = int(sizes[min(tier, len(sizes) - 1)])
        view["tiers"] = [int(s) for s in sizes]
    return view
