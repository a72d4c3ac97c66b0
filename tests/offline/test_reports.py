"""Usage and revenue reports on the hand-checked billing scenario (tests/offline/
billing_fixture.py): numbers worked out by hand, each format, option errors, tenant
isolation."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date
from pathlib import Path

import pytest
from redis.asyncio import Redis

from ocs.cli import main
from ocs.config import Settings
from ocs.errors import UsageError
from ocs.offline.adjust import adjust_invoice
from ocs.offline.billrun import bill_run
from ocs.offline.cli import main_billrun, main_report
from ocs.offline.crypto import TenantCipher
from ocs.offline.db import Database
from ocs.offline.reports import ReportError, make_report, report_csv, report_json
from ocs.rating.catalogue import Catalogue
from tests.offline.billing_fixture import billing_catalogue, scenario

MB = 1_000_000


@pytest.fixture
def cat(tmp_path: Path, tenant: str) -> Catalogue:
    return billing_catalogue(tmp_path / "cat", tenant)


@pytest.fixture
async def cipher(redis: Redis, db: Database, cat: Catalogue) -> TenantCipher:
    return await scenario(redis, db, cat)


def _rows(report_rows: list[dict[str, object]], *cols: str) -> list[tuple[object, ...]]:
    return [tuple(r[c] for c in cols) for r in report_rows]


async def test_usage_by_account_plan_zone_service(
    db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    rep = await make_report(
        db, cat.tenant.id, "usage", by="account,plan,zone,service", start=date(2025, 3, 10)
    )
    cols = ("account", "plan", "zone", "service", "unit", "records", "units", "currency")
    assert _rows(rep.rows, *cols, "amount") == [
        # 5 + 20 + 100 + 7 MB; online amounts with empty counters (10 MB free, 10 ct/MB):
        # 0 + 10 x 10 + 90 x 10 + 0 = 1000
        ("cust", "biz", "home", "data", "bytes", 4, 132 * MB, "EUR", 1000),
        # 150 events: 100 x 1 + 50 x 0.5 = 125
        ("cust", "biz", "home", "event", "events", 1, 150, "EUR", 125),
        # 10 MB at agri-retail 4 ct/MB (the SIM owner's level)
        ("farm-co", "agri-retail", "home", "data", "bytes", 1, 10 * MB, "EUR", 40),
        # 30 MB: 10 free, 20 x 10 = 200
        ("ngo", "biz", "home", "data", "bytes", 1, 30 * MB, "EUR", 200),
    ]
    assert rep.totals() == [
        {"unit": "bytes", "currency": "EUR", "records": 6, "units": 172 * MB, "amount": 1240},
        {"unit": "events", "currency": "EUR", "records": 1, "units": 150, "amount": 125},
    ]


async def test_usage_by_day_and_group_in_range(
    db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    rep = await make_report(
        db,
        cat.tenant.id,
        "usage",
        by="period,group",
        start=date(2025, 3, 15),
        end=date(2025, 4, 10),  # the 7 MB of 04-10 00:00 is outside
        granularity="day",
    )
    assert _rows(rep.rows, "period", "group", "unit", "records", "units", "amount") == [
        ("2025-03-15", "b2b", "bytes", 2, 35 * MB, 200),  # cust 5 MB (free), ngo 30 MB
        ("2025-03-16", "b2b", "bytes", 1, 20 * MB, 100),
        ("2025-03-17", "b2b", "bytes", 1, 100 * MB, 900),
        ("2025-03-20", "reseller-customers", "bytes", 1, 10 * MB, 40),  # farm-co
        ("2025-03-21", "b2b", "events", 1, 150, 125),
    ]


async def test_revenue_invoices_minus_credits_plus_debits(
    db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    t = cat.tenant.id
    await bill_run(db, cat, cipher, bill_day=10, on=date(2025, 4, 10))
    # invoices: 1 cust EUR 6911 / 1284, 2 cust USD 1000 / 190, 3 ngo EUR 1200 / 0
    await adjust_invoice(db, t, 1, kind="credit", net=1000, reason="goodwill")  # tax -186
    await adjust_invoice(db, t, 3, kind="debit", net=50, reason="late fee")  # exempt
    by_group = await make_report(db, t, "revenue", by="group")
    cols = ("group", "currency", "documents", "invoiced", "credited", "debited", "net", "tax")
    assert _rows(by_group.rows, *cols, "gross") == [
        # 6911 + 1200 - 1000 + 50 = 7161; 1284 - 186 = 1098; 8259
        ("b2b", "EUR", 4, 8111, 1000, 50, 7161, 1098, 8259),
        ("b2b", "USD", 1, 1000, 0, 0, 1000, 190, 1190),
    ]
    by_account = await make_report(db, t, "revenue", by="account,class")
    assert _rows(by_account.rows, "account", "class", "currency", "net", "tax") == [
        ("cust", "adjustment", "EUR", -1000, -186),
        ("cust", "goods", "EUR", 250, 18),
        ("cust", "service", "EUR", 500, 95),
        ("cust", "service", "USD", 1000, 190),
        ("cust", "subscription", "EUR", 2161, 411),
        # pool 2000 + overage 300 + data 1075 + events 125 + top-off 500
        ("cust", "telecom", "EUR", 4000, 760),
        ("ngo", "adjustment", "EUR", 50, 0),
        ("ngo", "subscription", "EUR", 1000, 0),
        ("ngo", "telecom", "EUR", 200, 0),
    ]
    async with db.tenant(t) as conn:
        issued = await conn.fetchval("SELECT min(issued_at) FROM invoices")
    by_period = await make_report(db, t, "revenue", by="period")
    assert [r["period"] for r in by_period.rows] == [issued.astimezone(UTC).strftime("%Y-%m")] * 2
    # a range before anything was issued
    empty = await make_report(db, t, "revenue", start=date(2000, 1, 1), end=date(2000, 2, 1))
    assert empty.rows == [] and empty.totals() == []


async def test_formats(db: Database, cat: Catalogue, cipher: TenantCipher) -> None:
    rep = await make_report(
        db, cat.tenant.id, "usage", by="account,service", start=date(2025, 3, 10)
    )
    parsed = list(csv.DictReader(io.StringIO(report_csv(rep))))
    assert [(r["account"], r["service"], r["units"], r["amount"]) for r in parsed] == [
        ("cust", "data", str(132 * MB), "1000"),
        ("cust", "event", "150", "125"),
        ("farm-co", "data", str(10 * MB), "40"),
        ("ngo", "data", str(30 * MB), "200"),
    ]
    body = json.loads(report_json(rep))
    assert body["report"] == "usage" and body["by"] == ["account", "service"]
    assert body["from"] == "2025-03-10T00:00:00+00:00" and body["to"] is None
    assert body["totals"][0]["amount"] == 1240


def test_cli(
    settings: Settings, tmp_path: Path, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cat"
    billing_catalogue(folder, tenant)
    out = tmp_path / "invoices"
    assert main_billrun(settings, cycle=10, on=date(2025, 4, 10), catalog=folder, out_dir=out) == 0
    issued = capsys.readouterr().out
    path = tmp_path / "revenue.json"
    assert main_report(settings, "revenue", by="account", fmt="json", out=path, catalog=folder) == 0
    body = json.loads(path.read_text())
    assert [(r["account"], r["currency"], r["documents"]) for r in body["rows"]] == [
        ("cust", "EUR", 1),
        ("ngo", "EUR", 1),
    ]
    # the report's gross per account is the gross the bill run printed for its invoice
    for row in body["rows"]:
        assert f"{row['gross'] / 100:.2f}" in issued
    assert main_report(settings, "revenue", by="group", fmt="csv", catalog=folder) == 0
    text = capsys.readouterr().out
    assert (
        text.splitlines()[0] == "group,currency,documents,invoiced,credited,debited,net,tax,gross"
    )
    assert main_report(settings, "usage", catalog=folder) == 0  # rich table, no usage: empty
    assert "0 rows" in capsys.readouterr().out
    flags = ["--catalog", str(folder), "--database-url", str(settings.database_url)]
    assert main(["report", "usage", "--by", "imsi", *flags, "--data-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("ocs: error: --by: 'imsi' is not one of")
    with pytest.raises(UsageError, match="report: --format: 'xml' is not table, csv or json"):
        main_report(settings, "usage", fmt="xml", catalog=folder)


async def test_reports_see_only_their_tenant(
    db: Database, cat: Catalogue, cipher: TenantCipher, tmp_path: Path
) -> None:
    other = billing_catalogue(tmp_path / "other", "tother" + cat.tenant.id[1:])
    from tests.offline.conftest import synced

    await synced(db, other)  # known tenant, no records of its own
    for kind in ("usage", "revenue"):
        rep = await make_report(db, other.tenant.id, kind, by="account")
        assert rep.rows == []
    with pytest.raises(ReportError, match="not known to the offline database"):
        await make_report(db, "nobody", "usage")
