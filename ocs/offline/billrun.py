"""Bill runs: select the accounts of a cycle (or one account), compute their charges and
issue invoices, each account in its own transaction.

Idempotent and resumable: a run is identified by ``run_key`` (cycle and period, or one
account and period); an account's invoices, its gapless numbers (the tenant's counter row,
``UPDATE ... RETURNING`` in the same transaction) and its ``bill_run_accounts`` row commit
together. Running again skips the accounts already done; a crash loses at most the account
in progress, whose numbers roll back with it. Two concurrent runs serialise on the counter
row and on the (run, account) key: the loser's transaction rolls back, nothing is issued
twice and no number is skipped.

Late records (``ocs.offline.late``): a run fixes an ingest watermark first, reads only the
records up to it and stores it in each account's ``bill_run_accounts`` row; records stored
after an account's run with a time stamp before its period are charged by its next run on
"Late ..." lines. Runs of one account serialise on an advisory lock and go forward: an
account already billed for this or a later period (by any run key) is skipped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg

from ocs.observability.metrics import offline_metrics
from ocs.offline.charges import (
    AccountRow,
    DraftInvoice,
    Line,
    Period,
    SubRow,
    TaxRule,
    apply_tax,
    assemble,
    fee_lines,
    issuer_of,
)
from ocs.offline.crypto import TenantCipher
from ocs.offline.db import Connection, Database, enter_tenant
from ocs.offline.event_relay import record_document_event
from ocs.offline.late import (
    ALL,
    LOCK_TIMEOUT_S,
    Window,
    last_billed,
    lock_account,
    watermark,
)
from ocs.offline.pool_usage import PoolFacts, account_pool_lines, pool_facts
from ocs.offline.purchases import (
    Purchase,
    PurchaseError,
    drained_purchases,
    manual_topoff_lines,
    purchase_lines,
)
from ocs.offline.usage import EXCLUDED_PAYERS, usage_lines
from ocs.rating.catalogue import Catalogue

Hook = Callable[[str, str], Awaitable[None]]
__all__ = ["EXCLUDED_PAYERS", "bill_run", "compute_account", "prefetch"]


class BillRunError(Exception):
    pass


@dataclass(slots=True)
class RunSummary:
    run_id: int | None
    run_key: str
    period: Period
    accounts: int = 0
    skipped: int = 0
    invoices: list[DraftInvoice] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    preview: bool = False
    watermark: int | None = None  # the highest usage_records.seq this run covers

    def totals(self) -> dict[str, tuple[int, int, int]]:
        out: dict[str, tuple[int, int, int]] = {}
        for inv in self.invoices:
            n, t, g = out.get(inv.currency, (0, 0, 0))
            out[inv.currency] = (n + inv.net, t + inv.tax, g + inv.gross)
        return out


def cycle_period(bill_day: int, on: date, tz: str) -> Period:
    """The month ending at the last bill day on or before ``on`` (local midnight)."""
    zone = ZoneInfo(tz)
    year, month = on.year, on.month
    if on.day < bill_day:
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    end = datetime.combine(date(year, month, bill_day), time(0), zone)
    prev = (year - 1, 12) if month == 1 else (year, month - 1)
    start = datetime.combine(date(prev[0], prev[1], bill_day), time(0), zone)
    return Period(start.astimezone(UTC), end.astimezone(UTC))


async def _account_rows(
    conn: Connection, bill_day: int | None, account: str | None
) -> list[AccountRow]:
    sql = (
        "SELECT account_id, name, parent_id, kind, payment, currency, tax_profile, country,"
        " accounting_group, template, language FROM accounts WHERE "
    )
    if account is not None:
        rows = await conn.fetch(sql + "account_id = $1", account)
    else:
        rows = await conn.fetch(sql + "bill_day = $1 ORDER BY account_id", bill_day)
    return [AccountRow(**dict(r)) for r in rows]


async def _tax_rules(conn: Connection) -> dict[tuple[str, str, str], TaxRule]:
    rows = await conn.fetch(
        "SELECT profile, country, product_class, rate_percent, treatment, note FROM tax_rules"
    )
    return {
        (r["profile"], r["country"], r["product_class"]): TaxRule(
            r["rate_percent"], r["treatment"], r["note"]
        )
        for r in rows
    }


async def _descendants(conn: Connection, account: str) -> list[str]:
    rows = await conn.fetch(
        "WITH RECURSIVE d(id) AS (SELECT $1::text UNION SELECT a.account_id FROM accounts a"
        " JOIN d ON a.parent_id = d.id) SELECT id FROM d",
        account,
    )
    return [r["id"] for r in rows]


async def _subs(conn: Connection, cipher: TenantCipher, account: str) -> list[SubRow]:
    rows = await conn.fetch(
        "SELECT s.sub_id, s.imsi_enc, s.twin, s.account_id, s.activated_at,"
        " array_agg(e.at ORDER BY e.at) AS ats, array_agg(e.status ORDER BY e.at) AS sts,"
        " array_agg(e.account_id ORDER BY e.at) AS accs"
        " FROM subscriptions s JOIN subscription_events e USING (tenant_id, sub_id)"
        " WHERE s.sub_id IN (SELECT sub_id FROM subscription_events WHERE account_id = $1)"
        " GROUP BY s.sub_id, s.imsi_enc, s.twin, s.account_id, s.activated_at",
        account,
    )
    return [
        SubRow(
            r["sub_id"],
            cipher.decrypt(r["imsi_enc"]),
            r["twin"],
            r["account_id"],
            r["activated_at"],
            tuple(zip(r["ats"], r["sts"], r["accs"], strict=True)),
        )
        for r in rows
    ]


@dataclass(slots=True)
class Prefetch:
    """What the run reads once for all its accounts, in one consistent snapshot: usage lines
    per buyer (``usage.usage_lines``), pool facts per payer, drained purchases (top-offs,
    renewals) per buyer; late ones included (``window``)."""

    usage: dict[str, list[Line]]
    pools: PoolFacts
    purchases: dict[str, list[Purchase]] = field(default_factory=dict)
    window: Window = ALL


async def prefetch(
    conn: Connection,
    catalogue: Catalogue,
    accounts: list[str],
    period: Period,
    window: Window = ALL,
) -> Prefetch:
    """Read usage and pool facts of ``accounts`` (``conn`` in the tenant's transaction)."""
    usage = await usage_lines(conn, catalogue, accounts, period, window=window)
    pools = await pool_facts(conn, accounts, period, window)
    try:
        purchases = await drained_purchases(conn, catalogue, accounts, period, window)
    except PurchaseError as exc:
        raise BillRunError(str(exc)) from None
    return Prefetch(usage, pools, purchases, window)


async def prefetch_run(
    db: Database, catalogue: Catalogue, accounts: list[str], period: Period, window: Window = ALL
) -> Prefetch:
    """``prefetch`` in its own read-only REPEATABLE READ transaction."""
    async with (
        db.pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        await enter_tenant(conn, catalogue.tenant.id)
        return await prefetch(conn, catalogue, accounts, period, window)


async def _other_lines(
    conn: Connection, catalogue: Catalogue, account: AccountRow, period: Period
) -> list[Line]:
    issuer = issuer_of(account.parent_id, catalogue.tenant.id)
    out = []
    for r in await conn.fetch(
        "SELECT description, amount, currency, product_class FROM one_time_charges"
        " WHERE account_id = $1 AND at >= $2 AND at < $3 ORDER BY charge_id",
        account.account_id,
        period.start,
        period.end,
    ):
        out.append(
            Line(
                issuer,
                r["currency"],
                "one_time",
                r["description"],
                r["product_class"],
                Decimal(1),
                "each",
                r["amount"],
            )
        )
    return out + await manual_topoff_lines(conn, catalogue, account, period)


async def compute_account(
    conn: Connection,
    catalogue: Catalogue,
    cipher: TenantCipher,
    account: AccountRow,
    period: Period,
    rules: dict[tuple[str, str, str], TaxRule],
    facts: Prefetch | None = None,
) -> list[DraftInvoice]:
    """The draft invoices of ``account``; ``facts`` from ``prefetch`` (read now if None)."""
    if facts is None:
        facts = await prefetch(conn, catalogue, [account.account_id], period)
    subs = await _subs(conn, cipher, account.account_id)
    lines = fee_lines(catalogue, account, subs, period)
    pools = await conn.fetch("SELECT * FROM pool_terms WHERE account_id = $1", account.account_id)
    names = {p.id: p.name for p in catalogue.pools.values() if p.name}
    lines += account_pool_lines(
        pools, account, subs, period, catalogue.tenant.id, facts.pools, facts.window, names
    )
    try:
        lines += await _other_lines(conn, catalogue, account, period)
    except PurchaseError as exc:
        raise BillRunError(str(exc)) from None
    lines += purchase_lines(catalogue, account, facts.purchases.get(account.account_id, []))
    lines += facts.usage.get(account.account_id, [])
    lines = [line for line in lines if line.net != 0]
    apply_tax(lines, rules, account)
    return assemble(account, lines)


async def next_number(conn: Connection, tenant: str) -> int:
    """The tenant's next invoice number; the counter row stays locked until commit."""
    number = await conn.fetchval(
        "UPDATE invoice_counters SET last_number = last_number + 1 WHERE tenant_id = $1"
        " RETURNING last_number",
        tenant,
    )
    if number is None:
        await conn.execute(
            "INSERT INTO invoice_counters (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", tenant
        )
        return await next_number(conn, tenant)
    return int(number)


# Every kind of document has its own gapless series per tenant (invoices, credit notes, debit
# notes: migrations 0010, 0011), taken from the counters row, locked until commit like the
# document number: a document that rolls back leaves no gap.
SERIES = {
    "invoice": "last_invoice",
    "credit_note": "last_credit_note",
    "debit_note": "last_debit_note",
}


async def next_series_number(conn: Connection, tenant: str, kind: str) -> int:
    column = SERIES[kind]
    number = await conn.fetchval(
        f"UPDATE invoice_counters SET {column} = {column} + 1 WHERE tenant_id = $1"
        f" RETURNING {column}",
        tenant,
    )
    return int(number)


# Snapshots of the seller ($7, the issuer: an account or "tenant:<id>") and the buyer ($6)
# as they are at issue (migration 0009): the document keeps them when the account changes.
SELLER_SQL = (
    "CASE WHEN $7 LIKE 'tenant:%' THEN (SELECT party || jsonb_build_object('name', name,"
    " 'country', country, 'account_id', tenant_id) FROM tenants WHERE tenant_id = substr($7, 8))"
    " ELSE (SELECT party || jsonb_build_object('name', name, 'country', country, 'account_id',"
    " account_id) FROM accounts WHERE account_id = $7) END"
)
BUYER_SQL = (
    "(SELECT party || jsonb_build_object('name', name, 'country', country, 'account_id',"
    " account_id, 'language', language) FROM accounts WHERE account_id = $6)"
)


async def insert_invoice(
    conn: Connection,
    tenant: str,
    draft: DraftInvoice,
    *,
    kind: str = "invoice",
    run_id: int | None = None,
    period: Period | None = None,
    refers_to: int | None = None,
    reason: str | None = None,
) -> int:
    number = await next_number(conn, tenant)
    series = await next_series_number(conn, tenant, kind)  # after next_number: the row exists
    await conn.execute(
        "INSERT INTO invoices (tenant_id, number, kind, refers_to, run_id, account_id, issuer,"
        " level, currency, period_start, period_end, net, tax, gross, template, reason, seller,"
        f" buyer, series_number) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,"
        f" {SELLER_SQL}, {BUYER_SQL}, $17)",
        tenant,
        number,
        kind,
        refers_to,
        run_id,
        draft.account_id,
        draft.issuer,
        draft.level,
        draft.currency,
        period.start if period else None,
        period.end if period else None,
        draft.net,
        draft.tax,
        draft.gross,
        draft.template,
        reason,
        series,
    )
    await conn.executemany(
        "INSERT INTO invoice_lines (tenant_id, number, line_no, kind, description,"
        " accounting_group, product_class, quantity, unit, net, tax_rate, tax_treatment, tax,"
        " unit_price, tax_note) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)",
        [
            (
                tenant,
                number,
                i,
                ln.kind,
                ln.description,
                ln.accounting_group,
                ln.product_class,
                ln.quantity,
                ln.unit,
                ln.net,
                ln.tax_rate,
                ln.tax_treatment,
                ln.tax,
                ln.unit_price,
                ln.tax_note,
            )
            for i, ln in enumerate(draft.lines, start=1)
        ],
    )
    await record_document_event(conn, tenant, number)  # its event: committed with it or not
    return number


async def bill_run(
    db: Database,
    catalogue: Catalogue,
    cipher: TenantCipher,
    *,
    bill_day: int | None = None,
    on: date,
    account: str | None = None,
    preview: bool = False,
    hook: Hook | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RunSummary:
    """Run the cycle ``bill_day`` (or the single ``account``) for the period ending on or
    before ``on``. ``hook(point, account)`` is awaited at ``before_commit`` (tests)."""
    tenant = catalogue.tenant.id
    async with db.tenant(tenant) as conn:
        accounts = await _account_rows(conn, bill_day, account)
        rules = await _tax_rules(conn)
    if account is not None and not accounts:
        raise BillRunError(f"account {account!r}: not found")
    if account is not None:
        day = await _bill_day(db, tenant, account)
    elif bill_day is not None:
        day = bill_day
    else:
        raise BillRunError("either a cycle (bill day) or an account is needed")
    period = cycle_period(day, on, catalogue.tenant.time_zone)
    run_key = (f"cycle:{day}" if account is None else f"account:{account}") + (
        f":{period.start.isoformat()}"
    )
    summary = RunSummary(None, run_key, period, preview=preview)
    offline_metrics().billrun_begin(len(accounts))
    if preview:  # no lock: what is committed now; nothing is consumed
        ids = [a.account_id for a in accounts]
        window = await _window(db, tenant, ids, day, catalogue.tenant.time_zone, lock=False)
        summary.watermark = window.hi
        facts = await prefetch_run(db, catalogue, ids, period, window)
        async with db.tenant(tenant) as conn:
            for acc in accounts:
                summary.invoices += await compute_account(
                    conn, catalogue, cipher, acc, period, rules, facts
                )
                summary.accounts += 1
                offline_metrics().billrun_progress(summary.accounts)
        offline_metrics().billrun_finish("preview")
        return summary
    run_id = await _open_run(db, tenant, run_key, day, account, period)
    summary.run_id = run_id
    async with db.tenant(tenant) as conn:
        done_before = {
            r["account_id"]
            for r in await conn.fetch(
                "SELECT account_id FROM bill_run_accounts WHERE run_id = $1", run_id
            )
        }
    todo = [a.account_id for a in accounts if a.account_id not in done_before]
    window = await _window(db, tenant, todo, day, catalogue.tenant.time_zone, lock=True)
    summary.watermark = window.hi
    facts = await prefetch_run(db, catalogue, todo, period, window)
    for i, acc in enumerate(accounts):
        try:
            async with db.tenant(tenant) as conn:
                await lock_account(conn, tenant, acc.account_id)
                done = await conn.fetchval(
                    "SELECT 1 FROM bill_run_accounts WHERE run_id = $1 AND account_id = $2",
                    run_id,
                    acc.account_id,
                )
                prior = (await last_billed(conn, [acc.account_id])).get(acc.account_id)
                if done or (prior is not None and prior.period_start >= period.start):
                    summary.skipped += 1  # done by this run, or billed by another run key
                    continue
                if (0 if prior is None else prior.watermark) != window.lo_of(acc.account_id):
                    raise BillRunError(
                        f"account {acc.account_id!r}: billed by another run meanwhile;"
                        " run again to bill it"
                    )
                drafts = await compute_account(conn, catalogue, cipher, acc, period, rules, facts)
                numbers = [
                    await insert_invoice(conn, tenant, d, run_id=run_id, period=period)
                    for d in drafts
                ]
                await conn.execute(
                    "INSERT INTO bill_run_accounts (tenant_id, run_id, account_id, invoices,"
                    " watermark) VALUES ($1, $2, $3, $4, $5)",
                    tenant,
                    run_id,
                    acc.account_id,
                    len(drafts),
                    window.hi,
                )
                if hook is not None:
                    await hook("before_commit", acc.account_id)
        except asyncpg.UniqueViolationError:
            summary.skipped += 1  # a concurrent run of the same key did this account
            continue
        finally:
            offline_metrics().billrun_progress(i + 1)
            if progress is not None:
                progress(i + 1, len(accounts))
        summary.accounts += 1
        summary.invoices += drafts
        summary.numbers += numbers
    async with db.tenant(tenant) as conn:
        await conn.execute(
            "UPDATE bill_runs SET status = 'done', finished_at = now() WHERE run_id = $1", run_id
        )
    offline_metrics().billrun_finish("issued")
    return summary


async def _window(
    db: Database, tenant: str, accounts: list[str], day: int, tz: str, *, lock: bool
) -> Window:
    """The run's watermark (``lock``: in a transaction of its own, committed at once, so the
    drain waits only for that instant) and the last watermark of each account."""
    try:
        async with db.tenant(tenant) as conn:
            hi = await watermark(conn, lock=lock)
    except asyncpg.LockNotAvailableError:
        raise BillRunError(
            "usage_records: a transaction inserting records did not finish within"
            f" {LOCK_TIMEOUT_S} s; nothing was billed, run again"
        ) from None
    async with db.tenant(tenant) as conn:
        billed = await last_billed(conn, accounts)
    lo = {a: billed[a].watermark if a in billed else 0 for a in accounts}
    return Window(hi, lo, day, tz)


async def _bill_day(db: Database, tenant: str, account: str) -> int:
    async with db.tenant(tenant) as conn:
        day = await conn.fetchval("SELECT bill_day FROM accounts WHERE account_id = $1", account)
    return int(day)


async def _open_run(
    db: Database, tenant: str, run_key: str, day: int, account: str | None, period: Period
) -> int:
    async with db.tenant(tenant) as conn:
        await conn.execute(
            "INSERT INTO bill_runs (tenant_id, run_key, bill_day, account_id, period_start,"
            " period_end) VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (tenant_id, run_key) DO NOTHING",
            tenant,
            run_key,
            day,
            account,
            period.start,
            period.end,
        )
        run_id = await conn.fetchval("SELECT run_id FROM bill_runs WHERE run_key = $1", run_key)
    return int(run_id)
