"""Bill runs: every charge type with hand-checked totals, B2B2B, idempotence, resumption after
a crash, gapless numbers under concurrent runs, adjustments."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest
from redis.asyncio import Redis

from ocs.config import Settings
from ocs.offline.adjust import AdjustmentError, adjust_invoice
from ocs.offline.billrun import bill_run
from ocs.offline.crypto import TenantCipher
from ocs.offline.db import Database, connect
from ocs.rating.catalogue import Catalogue
from tests.offline.billing_fixture import billing_catalogue, scenario

APRIL_10 = date(2025, 4, 10)
APRIL_5 = date(2025, 4, 5)


@pytest.fixture
def cat(tmp_path: Path, tenant: str) -> Catalogue:
    return billing_catalogue(tmp_path / "cat", tenant)


@pytest.fixture
async def cipher(redis: Redis, db: Database, cat: Catalogue) -> TenantCipher:
    return await scenario(redis, db, cat)


async def _lines(db: Database, tenant: str, number: int) -> dict[str, tuple[int, int]]:
    async with db.tenant(tenant) as conn:
        rows = await conn.fetch(
            "SELECT description, net, tax FROM invoice_lines WHERE number = $1", number
        )
    return {r["description"]: (r["net"], r["tax"]) for r in rows}


async def test_every_charge_type_hand_checked(
    db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    t = cat.tenant.id
    run = await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    # period 2025-03-10 .. 2025-04-10 (UTC), 31 days
    by = {(i.account_id, i.currency): i for i in run.invoices}
    assert sorted(by) == [("cust", "EUR"), ("cust", "USD"), ("ngo", "EUR")]
    eur = by["cust", "EUR"]
    numbers = dict(
        zip([(i.account_id, i.currency) for i in run.invoices], run.numbers, strict=True)
    )
    lines = await _lines(db, t, numbers["cust", "EUR"])
    assert lines == {
        # SIM 1 full month 1000; SIM 2 from 03-20: 1000*21/31 = 677.4 -> 677;
        # SIM 3 suspended 03-25: 1000*15/31 = 483.9 -> 484; 2161, VAT 19% 410.59 -> 411
        "Monthly fee, plan Business data: 3 SIMs (counted per SIM twin: 3)": (2161, 411),
        "Activation fee, plan Business data: 1 SIM (counted per SIM twin: 1)": (
            500,
            95,
        ),  # SIM 2 activated in the period
        "Pool cust-pool: 100,000,000 units included": (2000, 380),
        # pool used 5+20+100 MB = 125 MB; 25 MB over = 3 started 10 MB blocks x 1.00
        "Pool cust-pool: usage beyond the pool": (300, 57),
        # 5 MB: allowance (10 MB) covers it; 20 MB: 5 free + 15 x 10 = 150;
        # 100 MB from counter 15 MB: 85 x 10 + 15 x 5 = 925 -> 1075; VAT 204.25 -> 204
        "Data, zone Home network, plan Business data": (1075, 204),
        "Events, zone Home network, plan Business data": (
            125,
            24,
        ),  # 100 x 1 + 50 x 0.5 = 125; VAT 23.75 -> 24
        "Top-off 1 GB top-off": (500, 95),
        "SIM swap": (250, 18),  # goods in DE: 7 % -> 17.5 -> 18
    }
    assert (eur.net, eur.tax, eur.gross) == (6911, 1284, 8195)
    usd = by["cust", "USD"]
    assert (usd.net, usd.tax, usd.gross) == (1000, 190, 1190)
    ngo = by["ngo", "EUR"]
    # fee 1000 + 30 MB (10 free, 20 x 10 = 200); exempt
    assert (ngo.net, ngo.tax, ngo.notes) == (1200, 0, ["Exempt from VAT."])
    assert run.numbers == [1, 2, 3]


async def test_b2b2b_wholesale_and_retail_from_same_usage(
    db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    run = await bill_run(db, cat, cipher, bill_day=5, on=APRIL_5)
    by = {i.account_id: i for i in run.invoices}
    # retail: connect-reseller charges farm-co 10 MB x 4 ct (agri-retail), Austrian VAT 20 %
    retail = by["farm-co"]
    assert (retail.issuer, retail.level, retail.net, retail.tax) == (
        "connect-reseller",
        "retail",
        40,
        8,
    )
    # wholesale: the tenant charges connect-reseller 10 MB x 0.8 ct, reverse charge
    whole = by["connect-reseller"]
    assert (whole.issuer, whole.level, whole.net, whole.tax) == (
        f"tenant:{cat.tenant.id}",
        "wholesale",
        8,
        0,
    )
    assert whole.notes == ["Reverse charge: VAT to be accounted for by the recipient."]


async def test_preview_issues_nothing_and_rerun_is_idempotent(
    db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    t = cat.tenant.id
    preview = await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10, preview=True)
    assert len(preview.invoices) == 3 and preview.numbers == []
    async with db.tenant(t) as conn:
        assert await conn.fetchval("SELECT count(*) FROM invoices") == 0
    first = await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    again = await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    assert (again.accounts, again.skipped, again.numbers) == (0, 2, [])
    assert [i.gross for i in preview.invoices] == [i.gross for i in first.invoices]
    async with db.tenant(t) as conn:
        assert await conn.fetchval("SELECT count(*) FROM invoices") == 3


async def test_crash_mid_run_then_resume(
    db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    t = cat.tenant.id

    async def crash(point: str, account: str) -> None:
        if account == "ngo":
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10, hook=crash)
    async with db.tenant(t) as conn:
        assert await conn.fetchval("SELECT array_agg(number ORDER BY number) FROM invoices") == [
            1,
            2,
        ]
        assert await conn.fetchval("SELECT last_number FROM invoice_counters") == 2
    resumed = await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    assert (resumed.accounts, resumed.skipped, resumed.numbers) == (1, 1, [3])
    async with db.tenant(t) as conn:
        rows = await conn.fetch(
            "SELECT account_id, count(*) AS n FROM invoices GROUP BY 1 ORDER BY 1"
        )
        assert [(r["account_id"], r["n"]) for r in rows] == [("cust", 2), ("ngo", 1)]


async def test_gapless_numbers_under_concurrent_runs(
    db: Database, cat: Catalogue, cipher: TenantCipher, pg_url: str, tmp_path: Path
) -> None:
    t = cat.tenant.id
    other = await connect(Settings(database_url=pg_url, data_dir=tmp_path), max_size=4)
    try:
        results = await asyncio.gather(
            bill_run(db, cat, cipher, bill_day=10, on=APRIL_10),
            bill_run(other, cat, cipher, bill_day=10, on=APRIL_10),  # same run, racing
            bill_run(other, cat, cipher, bill_day=5, on=APRIL_5),
            bill_run(db, cat, cipher, account="bob", on=APRIL_10),
        )
    finally:
        await other.close()
    issued = sorted(n for r in results for n in r.numbers)
    async with db.tenant(t) as conn:
        numbers = [r["number"] for r in await conn.fetch("SELECT number FROM invoices ORDER BY 1")]
        last = await conn.fetchval("SELECT last_number FROM invoice_counters")
        dup = await conn.fetchval(
            "SELECT count(*) FROM (SELECT account_id, currency, run_id FROM invoices"
            " GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
        )
    assert numbers == issued == list(range(1, last + 1))
    assert dup == 0
    assert results[0].accounts + results[1].accounts == 2  # each account once


async def test_credit_and_debit_notes(db: Database, cat: Catalogue, cipher: TenantCipher) -> None:
    t = cat.tenant.id
    await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)  # 1 cust EUR, 2 cust USD, 3 ngo
    credit = await adjust_invoice(db, t, 1, kind="credit", net=1000, reason="goodwill")
    # tax in proportion: 1284 * 1000 / 6911 = 185.8 -> 186
    assert (credit.number, credit.net, credit.tax, credit.gross) == (4, -1000, -186, -1186)
    debit = await adjust_invoice(db, t, 3, kind="debit", net=50, reason="late fee")
    assert (debit.number, debit.net, debit.tax) == (5, 50, 0)
    with pytest.raises(AdjustmentError, match="exceeds"):
        await adjust_invoice(db, t, 1, kind="credit", net=5912, reason="too much")
    with pytest.raises(AdjustmentError, match="no such"):
        await adjust_invoice(db, t, 99, kind="credit", net=1, reason="x")
    async with db.tenant(t) as conn:
        row = await conn.fetchrow("SELECT net, gross FROM invoices WHERE number = 1")
        assert (row["net"], row["gross"]) == (6911, 8195)  # the invoice itself is unchanged
        assert await conn.fetchval("SELECT last_number FROM invoice_counters") == 5
