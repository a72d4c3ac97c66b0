"""Pool facts of a bill run (usage per payer, members, adaptive tier reached) and the pool lines
of an account, late pool usage included.

Late usage of a pool (``ocs.offline.late``) changes the overage (or the adaptive tier) of the
invoiced period it belongs to: that period's pool charges are computed again over everything
stored up to the run's watermark and over what was invoiced (up to the owner's last
watermark), and the difference is charged on "Late <period>" lines.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import asyncpg

from ocs.offline.charges import (
    AccountRow,
    Line,
    Period,
    PoolRow,
    SubRow,
    active_seconds,
    issuer_of,
    pool_lines,
)
from ocs.offline.db import Connection
from ocs.offline.late import ALL, Window
from ocs.offline.line_words import words


@dataclass(frozen=True, slots=True)
class LatePool:
    """An invoiced period of a pool with late usage: usage and tier reached over every record
    up to the watermark (``*_all``) and over the records already invoiced (``*_old``)."""

    period: Period
    used_all: int
    used_old: int
    reached_all: int
    reached_old: int


@dataclass(slots=True)
class PoolFacts:
    used: dict[str, int] = field(default_factory=dict)
    members: dict[str, set[int]] = field(default_factory=dict)
    reached: dict[str, int] = field(default_factory=dict)  # adaptive tier size reached
    late: dict[str, list[LatePool]] = field(default_factory=dict)


# the period's usage per payer and (flag late: true) whether it has late usage
_USED = (
    "SELECT payer, ts < $2 AS late, sum(units) AS used FROM usage_records"
    " JOIN unnest($1::text[], $5::bigint[]) AS p(payer, lo) USING (payer)"
    " WHERE kind = 'usage' AND (seq IS NULL OR seq <= $4)"
    " AND (ts >= $2 AND ts < $3 OR ts < $2 AND seq > p.lo) GROUP BY 1, 2"
)
_LATE_DAYS = (  # the local dates of the late usage of the payers that have some
    "SELECT DISTINCT payer, (ts AT TIME ZONE $4)::date AS day FROM usage_records"
    " JOIN unnest($1::text[], $5::bigint[]) AS p(payer, lo) USING (payer)"
    " WHERE kind = 'usage' AND ts < $2 AND seq > p.lo AND seq <= $3"
)
_REACHED = (  # adaptive pools: the tier the lifecycle stepped up to
    "SELECT payer, max((ctx->>'size')::bigint) AS reached FROM usage_records"
    " JOIN unnest($1::text[]) AS p(payer) USING (payer)"
    " WHERE ts >= $2 AND ts < $3 AND kind = 'adjust' AND ctx->>'api' = 'tier-step'"
    " AND (seq IS NULL OR seq <= $4) GROUP BY payer"
)
# every (payer, invoiced period) with late usage in one scan: usage and tier reached over all
# records up to the watermark $5 and over those already invoiced (up to the owner's lo)
_LATE = (
    "SELECT q.i, coalesce(sum(r.units) FILTER (WHERE r.kind = 'usage'), 0) AS used_all,"
    " coalesce(sum(r.units) FILTER (WHERE r.kind = 'usage'"
    " AND (r.seq IS NULL OR r.seq <= q.lo)), 0) AS used_old,"
    " coalesce(max((r.ctx->>'size')::bigint) FILTER (WHERE r.kind = 'adjust'), 0)"
    " AS reached_all,"
    " coalesce(max((r.ctx->>'size')::bigint) FILTER (WHERE r.kind = 'adjust'"
    " AND (r.seq IS NULL OR r.seq <= q.lo)), 0) AS reached_old"
    " FROM usage_records r JOIN unnest($1::int[], $2::text[], $3::timestamptz[],"
    " $4::timestamptz[], $6::bigint[]) AS q(i, payer, pstart, pend, lo)"
    " ON r.payer = q.payer AND r.ts >= q.pstart AND r.ts < q.pend"
    " WHERE (r.seq IS NULL OR r.seq <= $5)"
    " AND (r.kind = 'usage' OR r.kind = 'adjust' AND r.ctx->>'api' = 'tier-step')"
    " GROUP BY q.i"
)


async def pool_facts(
    conn: Connection, accounts: list[str], period: Period, window: Window = ALL
) -> PoolFacts:
    """Usage, members and tier reached of the pools owned by ``accounts`` in ``period``, and
    the invoiced periods of those pools with late usage."""
    owners = {
        r["payer"]: r["account_id"]
        for r in await conn.fetch(
            "SELECT DISTINCT payer, account_id FROM pool_terms"
            " JOIN unnest($1::text[]) AS a(account_id) USING (account_id)",
            accounts,
        )
    }
    payers = sorted(owners)
    facts = PoolFacts(dict.fromkeys(payers, 0), {p: set() for p in payers})
    if not payers:
        return facts
    los = [window.lo_of(owners[p]) if window.late else window.hi for p in payers]
    late_payers: list[str] = []
    for r in await conn.fetch(_USED, payers, period.start, period.end, window.hi, los):
        if r["late"]:
            late_payers.append(r["payer"])
        else:
            facts.used[r["payer"]] = int(r["used"])
    late_days: dict[str, set[date]] = {}
    if late_payers:
        lates = [window.lo_of(owners[p]) for p in late_payers]
        for r in await conn.fetch(
            _LATE_DAYS, late_payers, period.start, window.hi, window.tz, lates
        ):
            late_days.setdefault(r["payer"], set()).add(r["day"])
    for r in await conn.fetch(_REACHED, payers, period.start, period.end, window.hi):
        facts.reached[r["payer"]] = int(r["reached"])
    for r in await conn.fetch(
        "SELECT payer, sub_id FROM subscriptions JOIN unnest($1::text[]) AS p(payer) USING (payer)",
        payers,
    ):
        facts.members[r["payer"]].add(r["sub_id"])
    zone = ZoneInfo(window.tz)
    todo = [
        (payer, late)
        for payer, days in sorted(late_days.items())
        for late in sorted(
            {window.period_of(datetime.combine(d, time(0), zone)) for d in days},
            key=lambda p: p.start,
        )
    ]
    if not todo:
        return facts
    rows = {
        r["i"]: r
        for r in await conn.fetch(
            _LATE,
            list(range(len(todo))),
            [payer for payer, _ in todo],
            [late.start for _, late in todo],
            [late.end for _, late in todo],
            window.hi,
            [window.lo_of(owners[payer]) for payer, _ in todo],
        )
    }
    for i, (payer, late) in enumerate(todo):
        row = rows[i]  # each has its late usage at least
        facts.late.setdefault(payer, []).append(
            LatePool(
                late,
                int(row["used_all"]),
                int(row["used_old"]),
                int(row["reached_all"]),
                int(row["reached_old"]),
            )
        )
    return facts


def _pool_row(r: asyncpg.Record, name: str = "") -> PoolRow:
    ladder = tuple(sorted((s["up_to"], s["fee"]) for s in json.loads(r["ladder"])))
    return PoolRow(
        r["pool_id"],
        r["kind"],
        r["currency"],
        r["fee"],
        r["size"],
        r["per_sim"],
        r["overage_per"],
        r["overage_price"],
        ladder,
        name,
    )


def _fraction(subs: list[SubRow], members: set[int], account: str, period: Period) -> Fraction:
    return sum(
        (
            Fraction(active_seconds(s, account, period), period.seconds)
            for s in subs
            if s.sub_id in members
        ),
        Fraction(0),
    )


def _late_lines(now: list[Line], before: list[Line], label: str, lang: str) -> list[Line]:
    """The lines of ``now`` less the same kind of line in ``before``, labelled late."""
    old = {line.kind: line for line in before}
    out = []
    for line in now:
        prev = old.get(line.kind)
        net = line.net - (prev.net if prev else 0)
        if net == 0:
            continue
        qty = line.quantity - (prev.quantity if prev else Decimal(0))
        desc = words("late", lang, period=label, text=line.description)
        out.append(
            Line(
                line.issuer, line.currency, line.kind, desc, line.product_class, qty, line.unit, net
            )
        )
    return out


def account_pool_lines(
    rows: list[asyncpg.Record],
    account: AccountRow,
    subs: list[SubRow],
    period: Period,
    tenant: str,
    facts: PoolFacts,
    window: Window = ALL,
    names: Mapping[str, str] | None = None,
) -> list[Line]:
    """Fee and overage of each pool of ``account`` (``rows`` of ``pool_terms``) for
    ``period``, and the late differences of its invoiced periods. ``names``: pool id -> the
    catalogue's name (the lines say the id of a pool without one)."""
    out: list[Line] = []
    issuer = issuer_of(account.parent_id, tenant)
    for r in rows:
        payer = r["payer"]
        members = facts.members.get(payer, set())
        pool = _pool_row(r, (names or {}).get(r["pool_id"], ""))
        fraction = _fraction(subs, members, account.account_id, period)
        used, reached = facts.used.get(payer, 0), facts.reached.get(payer, 0)
        out += pool_lines(pool, issuer, used, fraction, reached, account.language)
        for late in facts.late.get(payer, []):
            part = _fraction(subs, members, account.account_id, late.period)
            now = pool_lines(pool, issuer, late.used_all, part, late.reached_all, account.language)
            before = pool_lines(
                pool, issuer, late.used_old, part, late.reached_old, account.language
            )
            out += _late_lines(now, before, window.label(late.period), account.language)
    return out
