"""Usage lines of a bill run: summed in SQL where that is price-identical, re-rated record by
record in Python (``rerate.rerate_levels``) everywhere else.

Rating rounds **once per priced usage** (docs/rating.md, rule 8), so a sum of records is not
priced by pricing the summed quantity. What PostgreSQL computes instead is, per record, the
exact amount ``ocs.rating.tariffs.price`` gives, and sums those amounts. That needs a price
that does not depend on the period counters, which holds for a (plan version, service, zone,
rating group, band) when

* its rate has **one tier** in that band (a single-tier price never reads the tier counter),
* **no allowance** of the version covers that service and zone (allowances are consumed in
  event order), and
* **no multi-tier tariff** anywhere in the catalogue counts on the same counter name (the
  flat tariff's usage advances that counter, and a tiered tariff reading it would need the
  records in event order).

For such a key the record's amount is, exactly as ``price`` computes it with increment ``I``,
minimum quantity ``M``, minimum charge ``m``, numerator ``n`` over denominator ``d`` and the
version's rounding mode: ``rated = max(ceil(q / I) * I, M)``,
``amount = max(div_round(rated * n, d, mode), m)`` for ``q > 0``, else 0. The SQL below
implements ``div_round`` for the four modes in bigint arithmetic (an overflow raises, it never
wraps). Every (record, level) that matches no such key — tiers, allowances, unknown plans,
zones or bands — is re-rated in Python in event order with the period's counters, as before,
and raises the same ``RerateError`` when the catalogue cannot price it.

Both passes run in one read-only REPEATABLE READ transaction, so they see the same records.

Late records (``ocs.offline.late``): the same scan also picks, per buyer, the records stored
after its last watermark with a time stamp before the period. Flat keys add their per-record
amounts to a "Late usage <period>" line; the others replay that period of the buyer in event
order twice, over everything stored up to the run's watermark and over what its earlier runs
already invoiced, and charge the difference.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final
from zoneinfo import ZoneInfo

from ocs.offline.charges import Line, Period, issuer_of
from ocs.offline.db import Connection
from ocs.offline.late import ALL, Window
from ocs.offline.line_words import words
from ocs.offline.rerate import rerate_levels
from ocs.rating import Quote
from ocs.rating.catalogue import Catalogue, CompiledVersion
from ocs.rating.models import Rounding
from ocs.rating.tariffs import div_round

EXCLUDED_PAYERS: Final = ("wallet", "external_contract")  # paid online / billed elsewhere
OTHER_RG: Final = -1  # a rating group no tariff names
MODE_CODE: Final = {Rounding.DOWN: 0, Rounding.UP: 1, Rounding.HALF_UP: 2, Rounding.HALF_EVEN: 3}
MODES: Final = {code: mode for mode, code in MODE_CODE.items()}
MAX_NUMERATOR: Final = 10**6  # rated units x numerator must stay in bigint
RECORD_PREFETCH: Final = 2000  # rows per round trip of the record path's cursor
SMALL_RUN: Final = 20  # up to this many buyers: find records by the account index
UNITS: Final = {"data": "bytes", "sms": "messages", "voice": "seconds", "event": "events"}
FAR_FUTURE: Final = datetime(9999, 1, 1, tzinfo=UTC)

GroupKey = tuple[str, str, str, str, str, str]  # issuer, currency, plan, service, zone, late


@dataclass(slots=True)
class FlatRates:
    """The counter-free (plan version, service, zone, band, rating group) keys, as the
    column arrays of the ``rk`` relation of the queries."""

    plan: list[str] = field(default_factory=list)
    vfrom: list[datetime] = field(default_factory=list)
    vto: list[datetime] = field(default_factory=list)
    service: list[str] = field(default_factory=list)
    zone: list[str] = field(default_factory=list)
    band: list[str] = field(default_factory=list)
    rg: list[int] = field(default_factory=list)
    numerator: list[int] = field(default_factory=list)
    denominator: list[int] = field(default_factory=list)
    increment: list[int] = field(default_factory=list)
    min_quantity: list[int] = field(default_factory=list)
    min_charge: list[int] = field(default_factory=list)
    mode: list[int] = field(default_factory=list)
    currency: list[str] = field(default_factory=list)
    rating_groups: list[int] = field(default_factory=list)

    def args(self) -> tuple[Any, ...]:
        return (
            self.plan, self.vfrom, self.vto, self.service, self.zone, self.band, self.rg,
            self.numerator, self.denominator, self.increment, self.min_quantity,
            self.min_charge, self.mode, self.currency, self.rating_groups,
        )  # fmt: skip


def _bands(version: CompiledVersion) -> set[str]:
    bands = {"any"}
    if version.bands is not None:
        bands |= version.bands.band_ids
    for tariff in version.tariffs.values():
        bands |= set(tariff.by_band)
    return bands


def flat_rates(catalogue: Catalogue) -> FlatRates:
    """Every key whose price per record does not depend on the period counters."""
    tiered = catalogue.tiered_counters
    groups = sorted(
        {
            rg
            for p in catalogue.plans.values()
            for v in p.versions
            for (_s, _z, rg) in v.tariffs
            if rg is not None
        }
    )
    out = FlatRates(rating_groups=groups)
    for plan in catalogue.plans.values():
        for i, version in enumerate(plan.versions):
            vto = plan.starts[i + 1] if i + 1 < len(plan.starts) else FAR_FUTURE
            zones = set(version.zones.zone_ids) | {z for (_s, z, _r) in version.tariffs}
            services = sorted({s for (s, _z, _r) in version.tariffs})
            for service in services:
                for zone in sorted(zones):
                    if version.allowance_for(service, zone) is not None:
                        continue
                    for rg in (*groups, OTHER_RG):
                        tariff = version.tariff_for(service, zone, None if rg < 0 else rg)
                        if tariff is None or tariff.counter_suffix in tiered:
                            continue
                        for band in sorted(_bands(version)):
                            rate = tariff.by_band.get(band, tariff.fallback)
                            if rate is None or len(rate.starts) > 1:
                                continue
                            if rate.numerators[0] > MAX_NUMERATOR:
                                continue
                            out.plan.append(plan.id)
                            out.vfrom.append(plan.starts[i])
                            out.vto.append(vto)
                            out.service.append(str(service))
                            out.zone.append(zone)
                            out.band.append(band)
                            out.rg.append(rg)
                            out.numerator.append(rate.numerators[0])
                            out.denominator.append(rate.denominator)
                            out.increment.append(rate.increment)
                            out.min_quantity.append(rate.minimum_quantity)
                            out.min_charge.append(rate.minimum_charge)
                            out.mode.append(MODE_CODE[rate.rounding])
                            out.currency.append(version.currency)
    return out


_RK: Final = (
    "rk AS (SELECT * FROM unnest($5::text[], $6::timestamptz[], $7::timestamptz[], $8::text[],"
    " $9::text[], $10::text[], $11::int[], $12::bigint[], $13::bigint[], $14::bigint[],"
    " $15::bigint[], $16::bigint[], $17::int[], $18::text[]) AS rk(plan, vfrom, vto, service,"
    " zone, band, rg, n, d, inc, minq, minc, mode, currency))"
)
# (buyer, account, lo) triples: the records of `account` (a descendant of, or the buyer
# itself) and the buyer's last watermark
_PAIRS: Final = (
    "p AS (SELECT * FROM unnest($1::text[], $2::text[], $20::bigint[]) AS p(buyer, acc, lo))"
)
# records up to the watermark $21: the period's ($3, $4), and the late ones (seq > $22, the
# lowest lo of the run's buyers)
_PERIOD: Final = " AND r.ts >= $3 AND r.ts < $4"
_PERIOD_AND_LATE: Final = " AND (r.ts >= $3 AND r.ts < $4 OR r.ts < $3 AND r.seq > $22)"
# (least: $4 referenced, so every query of the module takes the same parameters)
_ONLY_LATE: Final = " AND r.ts < least($3::timestamptz, $4::timestamptz) AND r.seq > $22"
_LATE_FLAG: Final = "r.ts < $3"  # a boolean: the planner counts 2 groups, hash aggregation
_LATE_DAY: Final = "(r.ts AT TIME ZONE $23)::date"  # $23: the tenant's time zone


def _levels(late: str, where: str) -> str:
    """(record, level) rows; ``late``: the expression of column ``late``."""
    return (
        "SELECT r.ts, r.record_key, r.units, r.rating_group, r.imsi_bidx, r.twin, r.account_id,"
        f" coalesce(r.service, 'data') AS service, l.ord, l.e AS level, r.seq, {late} AS late,"
        " CASE WHEN r.rating_group = ANY($19::int[]) THEN r.rating_group ELSE -1 END AS rgk,"
        " l.e->>'buyer' AS buyer, l.e->>'seller' AS seller,"
        " split_part(l.e->>'payer', ':', 1) AS payer_kind, l.e->>'plan' AS plan,"
        " l.e->>'zone' AS zone, l.e->>'band' AS band"
        " FROM usage_records r,"
        " jsonb_array_elements(r.ctx->'levels') WITH ORDINALITY AS l(e, ord)"
        f" WHERE r.kind = 'usage' AND (r.seq IS NULL OR r.seq <= $21){where}"
    )


_MATCH: Final = (
    "rk.plan = lv.plan AND rk.service = lv.service AND rk.zone = lv.zone"
    " AND rk.band = lv.band AND rk.rg = lv.rgk AND lv.ts >= rk.vfrom AND lv.ts < rk.vto"
)
# div_round(raw, d, mode) of ocs.rating.tariffs for raw = max(ceil(q / inc) * inc, minq) * n
_AMOUNT: Final = (
    "CASE WHEN lv.units <= 0 THEN 0 ELSE greatest(CASE rk.mode"
    " WHEN 0 THEN x.raw / rk.d"
    " WHEN 1 THEN (x.raw + rk.d - 1) / rk.d"
    " WHEN 2 THEN (2 * x.raw + rk.d) / (2 * rk.d)"
    " ELSE CASE WHEN 2 * (x.raw % rk.d) = rk.d THEN x.raw / rk.d + (x.raw / rk.d) % 2"
    " ELSE (2 * x.raw + rk.d) / (2 * rk.d) END END, rk.minc) END"
)
# the record's amount before rounding, times d: what a wholesale line sums exactly
_EXACT: Final = "CASE WHEN lv.units <= 0 THEN 0 ELSE greatest(x.raw, rk.minc * rk.d) END"
_RAW: Final = (
    "LEFT JOIN LATERAL (SELECT greatest((lv.units + rk.inc - 1) / rk.inc * rk.inc, rk.minq)"
    " * rk.n AS raw) x ON rk.plan IS NOT NULL"
)


def _scope(small: bool) -> str:
    if small:  # $2 (the accounts of the pairs) through the account index
        return " AND r.account_id = ANY($2::text[])"
    return ""


def _sum_sql(small: bool, *, late_days: bool = False) -> str:
    """Per (buyer, issuer, payer kind, plan, zone, service, currency, late): records,
    quantity and the sum of the per-record amounts; currency NULL: rows left for the record
    path. A late record counts for a buyer only above the buyer's own watermark. ``late`` is
    a flag (the period's rows and, only to detect them, the late ones), or with
    ``late_days`` the local date of each late row (the late rows alone: a second scan, run
    only when the first found late rows)."""
    lv = _levels(_LATE_DAY, _ONLY_LATE) if late_days else _levels(_LATE_FLAG, _PERIOD_AND_LATE)
    return (
        f"WITH {_PAIRS}, {_RK}, lv AS ({lv}{_scope(small)})"
        " SELECT lv.buyer, lv.seller, lv.payer_kind, lv.plan, lv.zone, lv.service,"
        " rk.currency, lv.late, lv.ord > 1 AS wholesale, rk.d, rk.mode,"
        f" count(*) AS records, sum(lv.units) AS qty, sum({_AMOUNT}) AS amount,"
        f" sum({_EXACT}) AS xraw"
        " FROM lv JOIN p ON p.buyer = lv.buyer AND p.acc = lv.account_id"
        + (" AND lv.seq > p.lo" if late_days else " AND (NOT lv.late OR lv.seq > p.lo)")
        + f" LEFT JOIN rk ON {_MATCH} {_RAW}"
        " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11"
    )


def _record_sql() -> str:
    """One buyer's ($22) (record, level) rows of the period that need the record path, in
    event order."""
    lv = _levels("false", _PERIOD)
    return (
        f"WITH {_PAIRS}, {_RK}, lv AS ({lv} AND r.account_id = ANY($2::text[]))"
        " SELECT lv.ts, lv.units, lv.service, lv.rating_group, lv.imsi_bidx, lv.twin, lv.level,"
        " lv.seq FROM lv LEFT JOIN rk ON " + _MATCH + " WHERE lv.buyer = $22"
        " AND rk.plan IS NULL ORDER BY lv.ts, lv.record_key, lv.ord"
    )


async def descendants(conn: Connection, roots: Sequence[str]) -> list[tuple[str, str]]:
    """(root, account) for every root and each account below it (itself included)."""
    rows = await conn.fetch(
        "WITH RECURSIVE d(root, id) AS (SELECT a, a FROM unnest($1::text[]) AS a"
        " UNION SELECT d.root, x.account_id FROM accounts x JOIN d ON x.parent_id = d.id)"
        " SELECT root, id FROM d",
        list(roots),
    )
    return [(r["root"], r["id"]) for r in rows]


@dataclass(slots=True)
class _Cell:
    """One line: its quantity, the sum of per-record amounts (retail levels), and the exact
    sums of wholesale levels per rounding mode, rounded once for the line (``less``: what an
    earlier invoice already charged of a replayed period, rounded the same way)."""

    quantity: int = 0
    amount: int = 0
    exact: dict[Rounding, Fraction] = field(default_factory=dict)
    less: dict[Rounding, Fraction] = field(default_factory=dict)

    @property
    def net(self) -> int:
        net = self.amount
        for mode, value in self.exact.items():
            net += div_round(value.numerator, value.denominator, mode)
        for mode, value in self.less.items():
            net -= div_round(value.numerator, value.denominator, mode)
        return net


@dataclass(slots=True)
class _Groups:
    by_buyer: dict[str, dict[GroupKey, _Cell]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(_Cell))
    )

    def add(self, buyer: str, key: GroupKey, quantity: int, amount: int) -> None:
        cell = self.by_buyer[buyer][key]
        cell.quantity += quantity
        cell.amount += amount

    def add_exact(
        self, buyer: str, key: GroupKey, quantity: int, exact: Fraction, mode: Rounding
    ) -> None:
        """A wholesale level's usage: summed exactly, rounded once per line."""
        cell = self.by_buyer[buyer][key]
        cell.quantity += quantity
        cell.exact[mode] = cell.exact.get(mode, Fraction(0)) + exact

    def subtract_exact(self, buyer: str, key: GroupKey, exact: Fraction, mode: Rounding) -> None:
        cell = self.by_buyer[buyer][key]
        cell.less[mode] = cell.less.get(mode, Fraction(0)) + exact

    def lines(self, buyer: str, catalogue: Catalogue, lang: str) -> list[Line]:
        return [
            Line(
                issuer,
                cur,
                "usage",
                _usage_words(catalogue, lang, plan, service, zone, late),
                "telecom",
                Decimal(qty),
                UNITS.get(service, ""),
                net,
            )
            for (issuer, cur, plan, service, zone, late), (qty, net) in sorted(
                (key, (cell.quantity, cell.net))
                for key, cell in self.by_buyer.get(buyer, {}).items()
            )
        ]


def _usage_words(
    catalogue: Catalogue, lang: str, plan_id: str, service: str, zone: str, late: str
) -> str:
    """A usage line in words: the service, the zone's and the plan's names (ids where the
    catalogue gives no name)."""
    plan = catalogue.plans.get(plan_id)
    plan_name, zone_name = plan_id, zone
    if plan is not None:
        plan_name = plan.name or plan_id
        zone_name = next(
            (v.zones.names[zone] for v in reversed(plan.versions) if zone in v.zones.names), zone
        )
    kind = service if service in ("data", "sms", "voice", "event") else ""
    text = words(
        "usage",
        lang,
        service=words(kind, lang) if kind else service.capitalize(),
        zone=zone_name,
        plan=plan_name,
    )
    return words("late_usage", lang, period=late, text=text) if late else text


async def usage_lines(
    conn: Connection,
    catalogue: Catalogue,
    buyers: Iterable[str],
    period: Period,
    *,
    rates: FlatRates | None = None,
    window: Window = ALL,
) -> dict[str, list[Line]]:
    """The usage lines of every buyer account, priced at the levels it buys, and its late
    usage lines (``window``). ``conn`` must be in the tenant's transaction (REPEATABLE READ
    for one consistent view)."""
    buyers = list(buyers)
    if not buyers:
        return {}
    rates = flat_rates(catalogue) if rates is None else rates
    pairs = await descendants(conn, buyers)
    los = [window.lo_of(b) for b, _ in pairs]
    pair_args = ([b for b, _ in pairs], [a for _, a in pairs])
    small = len(buyers) <= SMALL_RUN
    base = (*pair_args, period.start, period.end, *rates.args(), los, window.hi, window.lo_min)
    tenant = catalogue.tenant.id
    groups = _Groups()
    needs_records: set[str] = set()
    late_replays: set[tuple[str, Period]] = set()
    await conn.execute("SET LOCAL work_mem = '64MB'")
    rows = await conn.fetch(_sum_sql(small), *base)
    if any(r["late"] for r in rows):
        rows = [r for r in rows if not r["late"]]
        rows += await conn.fetch(_sum_sql(small, late_days=True), *base, window.tz)
    for r in rows:
        late = _day_period(window, r["late"]) if r["late"] else None
        if r["currency"] is None:
            if late is None:
                needs_records.add(r["buyer"])
            else:
                late_replays.add((r["buyer"], late))
            continue
        if r["payer_kind"] in EXCLUDED_PAYERS:
            continue
        label = "" if late is None else window.label(late)
        key = (issuer_of(r["seller"], tenant), r["currency"], r["plan"], r["service"], r["zone"])
        if r["wholesale"]:
            exact = Fraction(int(r["xraw"]), int(r["d"]))
            groups.add_exact(r["buyer"], (*key, label), int(r["qty"]), exact, MODES[r["mode"]])
        else:
            groups.add(r["buyer"], (*key, label), int(r["qty"]), int(r["amount"]))
    for buyer in sorted(needs_records):
        accounts = [a for b, a in pairs if b == buyer]
        await _record_path(conn, catalogue, buyer, accounts, period, rates, groups, window)
    for buyer, late in sorted(late_replays, key=lambda x: (x[0], x[1].start)):
        accounts = [a for b, a in pairs if b == buyer]
        await _record_path(
            conn, catalogue, buyer, accounts, late, rates, groups, window, replay=True
        )
    langs: dict[str, str] = {
        r["account_id"]: r["language"]
        for r in await conn.fetch(
            "SELECT account_id, language FROM accounts WHERE account_id = ANY($1)", buyers
        )
    }
    return {buyer: groups.lines(buyer, catalogue, langs.get(buyer, "en")) for buyer in buyers}


def _day_period(window: Window, day: date) -> Period:
    return window.period_of(datetime.combine(day, time(0), ZoneInfo(window.tz)))


async def _record_path(
    conn: Connection,
    catalogue: Catalogue,
    buyer: str,
    accounts: list[str],
    period: Period,
    rates: FlatRates,
    groups: _Groups,
    window: Window,
    *,
    replay: bool = False,
) -> None:
    """Re-rate one buyer's remaining (record, level) rows of ``period`` in event order.
    ``replay``: ``period`` is an invoiced one with late records; rate it over every record up
    to the watermark and over those already invoiced (up to the buyer's ``lo``), and add the
    difference (and the late records' quantity) to its "Late usage" lines."""
    tenant = catalogue.tenant.id
    counters: dict[str, int] = {}
    invoiced: dict[str, int] = {}  # replay: the counters of the records already invoiced
    memo: dict[tuple[Any, ...], Quote] = {}
    lo = window.lo_of(buyer)
    label = window.label(period) if replay else ""
    cursor = conn.cursor(
        _record_sql(),
        [buyer] * len(accounts),
        accounts,
        period.start,
        period.end,
        *rates.args(),
        [lo] * len(accounts),
        window.hi,
        buyer,
        prefetch=RECORD_PREFETCH,
    )
    async for r in cursor:
        level = json.loads(r["level"])
        owner = f"{bytes(r['imsi_bidx'] or b'').hex()}/{r['twin']}"
        args = (r["service"], r["rating_group"], r["ts"], r["units"], owner)
        old = replay and (r["seq"] is None or r["seq"] <= lo)
        charges = rerate_levels(catalogue, [level], *args, counters, buyer=buyer, memo=memo)
        if old:
            before = rerate_levels(catalogue, [level], *args, invoiced, buyer=buyer, memo=memo)
        for i, ch in enumerate(charges):
            if ch.payer_kind in EXCLUDED_PAYERS:
                continue
            key = (issuer_of(ch.seller, tenant), ch.currency, ch.plan, ch.service, ch.zone)
            if ch.level > 0:  # wholesale: exact, rounded once per line
                groups.add_exact(buyer, (*key, label), 0 if old else ch.quantity, ch.exact,
                                 ch.rounding)  # fmt: skip
                if old:  # invoiced already: the earlier line's part comes off
                    groups.subtract_exact(buyer, (*key, label), before[i].exact, ch.rounding)
            elif old:  # invoiced already: only a changed amount is late
                groups.add(buyer, (*key, label), 0, ch.amount - before[i].amount)
            else:
                groups.add(buyer, (*key, label), ch.quantity, ch.amount)
