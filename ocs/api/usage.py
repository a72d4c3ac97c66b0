"""Usage and balance reads (issue 16): a SIM's or a payer's usage by day or month, the
tenant's usage export (CSV, NDJSON), the balances with their buckets.

Usage is read by :class:`ocs.offline.usage_reader.UsageReader`: the open period from the
Redis Streams, drained records from PostgreSQL, each record once. Every subject is looked up
in the token's tenant catalogue first: another tenant's SIM, wallet or pool is answered 404
exactly as an unknown one. Shapes follow TMF635 and TMF654 (docs/usage-api.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from time import time as time_now
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo

import asyncpg
from cryptography.exceptions import InvalidTag
from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from ocs.api import cursors
from ocs.api.problems import Problem, not_found
from ocs.api.state import Api, ApiState, Reader
from ocs.api.usage_models import (
    BalanceBucket,
    BalancePage,
    PayerBalance,
    Quantity,
    Subject,
    TimePeriod,
    UsagePage,
    UsageSummary,
)
from ocs.balance.keys import payer_tag
from ocs.offline.crypto import master_key
from ocs.offline.db import DatabaseError
from ocs.offline.usage_export import (
    FORMATS,
    MEDIA_TYPES,
    ExportCounts,
    open_export,
)
from ocs.offline.usage_export import (
    MAX_DAYS as MAX_EXPORT_DAYS,
)
from ocs.offline.usage_reader import (
    PAID,
    USAGE,
    OpenBacklog,
    Totals,
    UsageReader,
    tenant_streams,
)
from ocs.offline.usage_reader import Subject as Scope
from ocs.provisioning.catalogues import Compiled
from ocs.rating.catalogue import CompiledSim
from ocs.rating.models import PayerKind

router = APIRouter(tags=["usage"])

MIN_DATE: Final = date(2000, 1, 1)
MAX_DATE: Final = date(2100, 1, 1)
MAX_DAYS: Final = {"day": 366, "month": 3_660}  # longest range per granularity
USAGE_TYPES: Final = {
    "bytes": "data",
    "seconds": "voice",
    "messages": "sms",
    "events": "event",
    "money": "money",
}
By = Literal["day", "month"]
IdType = Literal["imsi", "msisdn", "iccid"]
PayerPath = Literal["wallets", "pools", "contracts", "accounts"]
Limit = Annotated[int, Query(ge=1, le=500, description="items per page (1-500)")]
Cursor = Annotated[
    str | None, Query(max_length=cursors.MAX_CURSOR, description="next_cursor of the last page")
]
FromDate = Annotated[
    date | None,
    Query(alias="from", description="first local day, YYYY-MM-DD (default: see docs)"),
]
ToDate = Annotated[date | None, Query(description="local day after the last, YYYY-MM-DD")]
SimPath = Annotated[
    str, Path(min_length=1, max_length=32, pattern=r"^[0-9]+$", description="ICCID, IMSI, MSISDN")
]
PayerIdPath = Annotated[str, Path(min_length=1, max_length=128)]


@dataclass(frozen=True, slots=True)
class Target:
    subject: Subject
    scope: Scope
    tz: ZoneInfo
    kinds: tuple[str, ...] = USAGE  # a payer's: PAID (its upper-level records too)


# -- looking subjects up in the token's tenant ------------------------------------------------
def _sim(compiled: Compiled, ident: str, id_type: IdType | None) -> CompiledSim | None:
    """The SIM named by ``ident``: as ``id_type`` says, else an ICCID when it has 18 to 22
    digits, else an IMSI, else an MSISDN."""
    catalogue = compiled.catalogue
    if id_type == "iccid" or (id_type is None and 18 <= len(ident) <= 22):
        imsi = compiled.imsi_of_iccid(ident)
        if imsi is not None or id_type == "iccid":
            return None if imsi is None else catalogue.sims_by_imsi.get(imsi)
    if id_type in (None, "imsi") and (sim := catalogue.sims_by_imsi.get(ident)) is not None:
        return sim
    if id_type in (None, "msisdn"):
        return catalogue.sims_by_msisdn.get(ident)
    return None


async def sim_target(api: ApiState, tenant: str, ident: str, id_type: IdType | None) -> Target:
    compiled = await api.catalogues.compiled(tenant)
    sim = _sim(compiled, ident, id_type)
    if sim is None:
        raise not_found("SIM", ident)
    tags = {payer_tag(tenant, str(t.payer.kind), t.payer.id) for t in sim.twins}
    iccid = compiled.iccid_of(sim.imsi)
    subject = Subject(type="sim", id=sim.imsi, imsi=sim.imsi, msisdn=sim.msisdn, iccid=iccid)
    scope = Scope(tenant, tuple(sorted(tags)), imsi=sim.imsi)
    return Target(subject, scope, ZoneInfo(compiled.catalogue.tenant.time_zone))


async def payer_target(api: ApiState, tenant: str, kind: PayerPath, ident: str) -> Target:
    compiled = await api.catalogues.compiled(tenant)
    cat = compiled.catalogue
    tz = ZoneInfo(cat.tenant.time_zone)
    if kind == "accounts":
        if ident not in cat.accounts:
            raise not_found("account", ident)
        tags = tuple(sorted(compiled.account_payers(ident)))
        return Target(Subject(type="account", id=ident), Scope(tenant, tags, account=ident), tz)
    tag: str | None = None
    if kind == "wallets" and ident in cat.wallets:
        tag = payer_tag(tenant, str(PayerKind.WALLET), ident)
    elif kind == "pools" and (pool := cat.pools.get(ident)) is not None:
        prepaid = pool.payment == "prepaid"
        pk = PayerKind.PREPAID_POOL if prepaid else PayerKind.POSTPAID_POOL
        tag = payer_tag(tenant, str(pk), ident)
    elif kind == "contracts" and ident in cat.contracts:
        tag = payer_tag(tenant, str(PayerKind.EXTERNAL_CONTRACT), ident)
    if tag is None:
        raise not_found(kind.removesuffix("s"), ident)
    subject = Subject(type=kind.removesuffix("s"), id=ident)  # type: ignore[arg-type]
    return Target(subject, Scope(tenant, (tag,), payer=tag), tz, PAID)


# -- reading ----------------------------------------------------------------------------------
async def reader(api: ApiState) -> UsageReader:
    assert api.database is not None
    with unavailable():
        db = await api.database.get()
        return UsageReader(api.redis, db, master_key(api.settings))


@contextlib.contextmanager
def unavailable() -> Iterator[None]:
    """What keeps the drained records from being read, as a 503 problem document."""
    try:
        yield
    except OpenBacklog as exc:
        raise Problem(503, "usage-backlog", "Drain behind", str(exc)) from None
    except DatabaseError as exc:
        raise Problem(503, "usage-store-unavailable", "Usage store unavailable", str(exc)) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise Problem(
            503, "usage-store-unavailable", "Usage store unavailable", f"database: {exc}"
        ) from None
    except InvalidTag:
        raise Problem(
            503,
            "usage-store-unavailable",
            "Usage store unavailable",
            "the tenant key does not open with this installation's offline master key",
        ) from None


def _months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def next_period(day: date, by: By) -> date:
    if by == "day":
        return day + timedelta(days=1)
    return _months_before(day, -1)


def date_range(
    by: By, start: date | None, end: date | None, tz: ZoneInfo, max_days: int
) -> tuple[date, date]:
    """``[from, to)`` checked: order, length, bounds. Defaults: ``by=day`` this month up to
    today included, ``by=month`` the last 12 months with this one; ``to`` alone: the period
    (month or 12 months) before it; ``from`` alone: up to today included, at least a day."""
    for name, value in (("from", start), ("to", end)):
        if value is not None and not MIN_DATE <= value <= MAX_DATE:
            raise Problem(
                422,
                "invalid-range",
                "Invalid date range",
                f"{name} {value} is not between {MIN_DATE} and {MAX_DATE}",
            )
    today = datetime.now(tz).date()
    if by == "day":
        first = today.replace(day=1) if end is None else (end - timedelta(days=1)).replace(day=1)
        tomorrow = today + timedelta(days=1)
    else:
        first = _months_before((end - timedelta(days=1)) if end else today, 11).replace(day=1)
        tomorrow = _months_before(today, -1)
    start = first if start is None else start
    end = max(tomorrow, next_period(start, by)) if end is None else end
    if by == "month" and (start.day != 1 or end.day != 1):
        raise Problem(
            422,
            "invalid-range",
            "Invalid date range",
            f"by=month counts whole months: from and to are first days ({start}, {end})",
        )
    if end <= start:
        raise Problem(422, "invalid-range", "Invalid date range", f"to {end} is not after {start}")
    if (end - start).days > max_days:
        raise Problem(
            422,
            "invalid-range",
            "Invalid date range",
            f"{start} to {end} is longer than {max_days} days (by={by})",
        )
    return start, end


def _summary(
    subject: Subject, key: tuple[date, str, str], t: Totals, by: By, tz: ZoneInfo
) -> UsageSummary:
    period, unit, currency = key
    begin = datetime.combine(period, time(0), tz)
    end = datetime.combine(next_period(period, by), time(0), tz)
    ident = f"{subject.type}:{subject.id}:{period.isoformat()}:{unit}"
    return UsageSummary(
        id=f"{ident}:{currency}" if currency else ident,
        usageType=USAGE_TYPES.get(unit, unit or "other"),
        usageDate=begin,
        usagePeriod=TimePeriod(startDateTime=begin, endDateTime=end),
        unit=unit,
        quantity=t.units,
        records=t.records,
        charged=t.money,
        overrun=t.overrun,
        rated=t.rated,
        currency=currency or None,
    )


async def usage_page(
    api: ApiState,
    target: Target,
    path: str,
    by: By,
    start: date | None,
    end: date | None,
    limit: int,
    cursor: str | None,
) -> UsagePage:
    first, last = date_range(by, start, end, target.tz, MAX_DAYS[by])
    query = {"path": path, "tenant": target.scope.tenant, "by": by, "from": str(first),
             "to": str(last), "limit": limit}  # fmt: skip
    after: tuple[str, str, str] | None = None
    begin = first
    if cursor is not None:
        position = await cursors.decode(api, cursor, query)
        if not (isinstance(position, list) and len(position) == 3):
            raise Problem(400, "invalid-cursor", "Invalid cursor", "no position in the cursor")
        after = (str(position[0]), str(position[1]), str(position[2]))
        begin = max(first, date.fromisoformat(after[0]))
    usage = await reader(api)
    with unavailable():
        rows = await usage.by_period(target.scope, by, target.tz, begin, last, target.kinds)
    if after is not None:
        rows = [r for r in rows if (r[0][0].isoformat(), r[0][1], r[0][2]) > after]
    items = [_summary(target.subject, k, t, by, target.tz) for k, t in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        period, unit, currency = rows[limit - 1][0]
        next_cursor = await cursors.encode(api, query, [period.isoformat(), unit, currency])
    return UsagePage.model_validate(
        {
            "subject": target.subject,
            "by": by,
            "from": first,
            "to": last,
            "timeZone": target.tz.key,
            "items": items,
            "next_cursor": next_cursor,
        }
    )


@router.get("/v1/usage/sims/{sim}", response_model=UsagePage, response_model_by_alias=True)
async def sim_usage(
    sim: SimPath,
    who: Reader,
    api: Api,
    id_type: IdType | None = None,
    by: By = "day",
    start: FromDate = None,
    to: ToDate = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> UsagePage:
    """A SIM's usage (every twin) per day or month: ICCID, IMSI or MSISDN (``id_type``)."""
    target = await sim_target(api, who.tenant, sim, id_type)
    path = f"sims/{target.subject.id}"
    return await usage_page(api, target, path, by, start, to, limit, cursor)


@router.get("/v1/usage/{kind}/{payer_id}", response_model=UsagePage, response_model_by_alias=True)
async def payer_usage(
    kind: PayerPath,
    payer_id: PayerIdPath,
    who: Reader,
    api: Api,
    by: By = "day",
    start: FromDate = None,
    to: ToDate = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> UsagePage:
    """A wallet's, pool's or external contract's usage (what it paid for), or an account's
    (the usage of its SIMs), per day or month."""
    target = await payer_target(api, who.tenant, kind, payer_id)
    return await usage_page(api, target, f"{kind}/{payer_id}", by, start, to, limit, cursor)


@router.get(
    "/v1/usage/export",
    response_class=StreamingResponse,
    responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}},
)
async def usage_export(
    who: Reader,
    api: Api,
    format: Literal["csv", "ndjson"] = "csv",
    start: FromDate = None,
    to: ToDate = None,
) -> StreamingResponse:
    """Every usage record of the tenant in local days ``[from, to)`` (at most 366 days; default
    this month so far), one row each, streamed as CSV or NDJSON."""
    assert format in FORMATS
    compiled = await api.catalogues.compiled(who.tenant)
    tz = ZoneInfo(compiled.catalogue.tenant.time_zone)
    first, last = date_range("day", start, to, tz, MAX_EXPORT_DAYS)
    usage = await reader(api)
    scope = Scope(who.tenant, await tenant_streams(api.redis, who.tenant))
    with unavailable():
        export = await open_export(usage, scope, tz, first, last)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in export.chunks(format, ExportCounts()):
            yield chunk

    name = f"usage-{who.tenant}-{first}-{last}.{format}"
    return StreamingResponse(
        body(),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# -- balances ---------------------------------------------------------------------------------
def _status(
    valid_from: int, valid_to: int, now_ms: int
) -> Literal["active", "expired", "notYetValid"]:
    if valid_from and now_ms < valid_from:
        return "notYetValid"
    if valid_to and now_ms >= valid_to:
        return "expired"
    return "active"


def _at(ms_value: int, tz: ZoneInfo) -> datetime | None:
    return datetime.fromtimestamp(ms_value / 1000, tz) if ms_value else None


async def _payer_balance(
    api: ApiState, compiled: Compiled, kind: str, ident: str, tz: ZoneInfo, now_ms: int
) -> PayerBalance:
    cat = compiled.catalogue
    tag = payer_tag(cat.tenant.id, kind, ident)
    currency: str | None = None
    if kind == PayerKind.WALLET and (wallet := cat.wallets.get(ident)) is not None:
        currency = wallet.currency
    elif (pool := cat.pools.get(ident)) is not None and (acct := cat.accounts.get(pool.account)):
        currency = acct.currency
    buckets = []
    for b in await api.store.buckets(tag):
        units = (currency or "money") if b.unit == "money" else b.unit
        buckets.append(
            BalanceBucket(
                id=b.id,
                usageType=USAGE_TYPES.get(b.unit, b.unit),
                priority=b.priority,
                unlimited=b.unlimited,
                remainingValue=Quantity(amount=b.available, units=units),
                reservedValue=Quantity(amount=b.reserved, units=units),
                usedValue=Quantity(amount=b.used, units=units),
                creditedValue=Quantity(amount=b.credited, units=units),
                validFor=TimePeriod(
                    startDateTime=_at(b.valid_from, tz), endDateTime=_at(b.valid_to, tz)
                ),
                status=_status(b.valid_from, b.valid_to, now_ms),
            )
        )
    return PayerBalance(
        id=f"{kind}:{ident}", kind=kind, payer=ident, currency=currency, buckets=buckets
    )


def _now_ms() -> int:
    return int(time_now() * 1000)


@router.get("/v1/balances/sims/{sim}", response_model=BalancePage)
async def sim_balances(
    sim: SimPath,
    who: Reader,
    api: Api,
    id_type: IdType | None = None,
) -> BalancePage:
    """The balances a SIM draws on: the buckets of each payer of its twins."""
    target = await sim_target(api, who.tenant, sim, id_type)
    compiled = await api.catalogues.compiled(who.tenant)
    items = []
    for tag in target.scope.streams:
        _, kind, ident = tag.split(":", 2)
        items.append(await _payer_balance(api, compiled, kind, ident, target.tz, _now_ms()))
    return BalancePage(subject=target.subject, items=items)


@router.get("/v1/balances/{kind}/{payer_id}", response_model=BalancePage)
async def payer_balances(
    kind: Literal["wallets", "pools"],
    payer_id: PayerIdPath,
    who: Reader,
    api: Api,
) -> BalancePage:
    """A wallet's or pool's buckets (unit, remaining, reserved, used, validity, priority)."""
    target = await payer_target(api, who.tenant, kind, payer_id)
    compiled = await api.catalogues.compiled(who.tenant)
    _, pkind, ident = target.scope.streams[0].split(":", 2)
    item = await _payer_balance(api, compiled, pkind, ident, target.tz, _now_ms())
    return BalancePage(subject=target.subject, items=[item])
