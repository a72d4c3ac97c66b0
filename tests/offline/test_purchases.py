"""Top-offs (manual and automatic) and invoice-charged renewals reach the bill run from the
drained balance records: written by the real ``adjust.lua`` (``BalanceStore.adjust``),
drained, priced as recorded, each charged exactly once (repeat, resume, next period)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from ocs.balance.keys import PAYERS, payer_tag
from ocs.balance.store import BalanceStore
from ocs.offline.billrun import BillRunError, bill_run
from ocs.offline.crypto import TenantCipher
from ocs.offline.db import Database
from ocs.offline.drain import Drainer
from ocs.rating.catalogue import Catalogue
from tests.offline.billing_fixture import billing_catalogue, scenario
from tests.offline.conftest import MASTER

APRIL_10 = date(2025, 4, 10)
MAY_10 = date(2025, 5, 10)
ADDON = "acme-topoff-1gb"  # "1 GB top-off", catalogue price 500 EUR


@pytest.fixture
def cat(tmp_path: Path, tenant: str) -> Catalogue:
    return billing_catalogue(tmp_path / "cat", tenant)


@pytest.fixture
async def cipher(redis: Redis, db: Database, cat: Catalogue) -> TenantCipher:
    return await scenario(redis, db, cat)


def _ms(when: str) -> int:
    return int(datetime.fromisoformat(when).timestamp() * 1000)


async def _buy(
    redis: Redis, tag: str, request: str, when: str, ctx: dict[str, Any], *, bucket: str = ""
) -> str:
    """What the API does for a purchase: one adjust script call defining the bundle's bucket."""
    await redis.sadd(PAYERS, tag)  # type: ignore[misc]
    definition = {"unit": "bytes", "prio": 50, "from": 0, "to": 0, "unlimited": False}
    op = {"op": "define", "id": bucket or request, "def": definition, "size": 10**9}
    return await BalanceStore(redis).adjust(tag, request, [op], _ms(when), ctx)


async def _purchases(redis: Redis, db: Database, cat: Catalogue) -> None:
    t = cat.tenant.id
    cust = payer_tag(t, "postpaid_pool", "cust-pool")
    ngo = payer_tag(t, "postpaid_pool", "ngo-pool")
    top = {"api": "top-off", "addon": ADDON, "price": 500, "currency": "EUR"}
    auto = {"api": "auto-top-off", "addon": ADDON, "price": 450, "currency": "EUR"}
    renew = {"api": "renewal", "plan": "biz", "price": 1500, "currency": "EUR", "period": "month"}
    await _buy(redis, cust, "api:topoff:k1", "2025-03-12T08:00:00+00:00", top)
    # the same request again (an HTTP retry): the script answers from its cache, no record
    await _buy(redis, cust, "api:topoff:k1", "2025-03-12T08:00:01+00:00", top)
    # automatic top-offs at the price of their day (450, not today's catalogue 500)
    await _buy(redis, cust, "auto:1", "2025-03-20T10:00:00+00:00", auto)
    await _buy(redis, cust, "auto:2", "2025-03-21T10:00:00+00:00", auto)
    await _buy(redis, cust, "renew:1", "2025-03-30T00:00:00+00:00", renew)
    # exactly at the period end: belongs to the next period
    await _buy(redis, cust, "api:topoff:k2", "2025-04-10T00:00:00+00:00", top)
    await _buy(redis, ngo, "api:topoff:k3", "2025-03-15T00:00:00+00:00", top)
    # paid from a wallet (debited online): never invoiced
    wallet = payer_tag(t, "wallet", "cust-wallet")
    await _buy(redis, wallet, "renew:w", "2025-03-15T00:00:00+00:00", {**renew, "account": "cust"})
    await Drainer(redis, db, MASTER).run()


async def _purchase_lines(db: Database, tenant: str) -> list[tuple[str, str, int, int, int]]:
    """(account, description, quantity, net, tax) of every top-off/renewal line issued."""
    async with db.tenant(tenant) as conn:
        rows = await conn.fetch(
            "SELECT i.account_id, l.description, l.quantity, l.net, l.tax FROM invoice_lines l"
            " JOIN invoices i USING (tenant_id, number) WHERE l.kind IN ('topoff', 'renewal')"
            " ORDER BY i.number, l.line_no"
        )
    return [
        (r["account_id"], r["description"], int(r["quantity"]), r["net"], r["tax"]) for r in rows
    ]


async def test_purchases_priced_as_recorded_once(
    redis: Redis, db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    t = cat.tenant.id
    await _purchases(redis, db, cat)
    run = await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    lines = await _purchase_lines(db, t)
    assert lines == [
        ("cust", "Auto top-off 1 GB top-off", 2, 900, 171),  # 2 x 450; VAT 19 % = 171
        ("cust", "Top-off 1 GB top-off", 1, 500, 95),  # the manual topoff_purchases row
        ("cust", "Top-off 1 GB top-off", 1, 500, 95),  # drained k1, once despite the retry
        ("cust", "Renewal plan Business data (month)", 1, 1500, 285),
        ("ngo", "Top-off 1 GB top-off", 1, 500, 0),  # exempt
    ]
    by = {(i.account_id, i.currency): i for i in run.invoices}
    # test_billrun's hand-checked 6911 / 1284 plus 500 + 900 + 1500 and 95 + 171 + 285
    assert (by["cust", "EUR"].net, by["cust", "EUR"].tax) == (9811, 1835)
    assert by["cust", "EUR"].gross == 11646
    assert (by["ngo", "EUR"].net, by["ngo", "EUR"].tax) == (1700, 0)

    again = await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    assert (again.accounts, again.numbers) == (0, [])
    nxt = await bill_run(db, cat, cipher, bill_day=10, on=MAY_10)
    assert nxt.accounts == 2
    after = await _purchase_lines(db, t)
    # only k2 (bought at 04-10 00:00) is new, on the next period's invoice
    assert after == [*lines, ("cust", "Top-off 1 GB top-off", 1, 500, 95)]


async def test_purchases_once_after_crash_and_resume(
    redis: Redis, db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    t = cat.tenant.id
    await _purchases(redis, db, cat)

    async def crash(point: str, account: str) -> None:
        if account == "ngo":
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10, hook=crash)
    assert [a for a, *_ in await _purchase_lines(db, t)] == ["cust"] * 4
    resumed = await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    assert (resumed.accounts, resumed.skipped) == (1, 1)
    totals = dict.fromkeys(("cust", "ngo"), 0)
    for account, _, _, net, _ in await _purchase_lines(db, t):
        totals[account] += net
    assert totals == {"cust": 3400, "ngo": 500}


async def test_bad_purchase_record_names_record_and_field(
    redis: Redis, db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    tag = payer_tag(cat.tenant.id, "postpaid_pool", "cust-pool")
    ctx = {"api": "auto-top-off", "addon": ADDON, "currency": "EUR"}  # no price
    await _buy(redis, tag, "auto:bad", "2025-03-20T10:00:00+00:00", ctx)
    await Drainer(redis, db, MASTER).run()
    with pytest.raises(BillRunError, match=r"purchase adjust:auto:bad: price: None"):
        await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10, preview=True)
