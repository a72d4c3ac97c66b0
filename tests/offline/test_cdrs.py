# ruff: noqa: E501  (CSV rows are kept one per line)
"""Network CDR import with per-row errors, reconciliation against online records, batch rating
of never-online postpaid usage, and the CLI entry points end to end."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from redis.asyncio import Redis

from ocs.cli import main
from ocs.config import Settings
from ocs.errors import UsageError
from ocs.offline.cdrs import import_csv, reconcile
from ocs.offline.cli import (
    main_billrun,
    main_db_migrate,
    main_export,
    main_import,
    main_invoice_adjust,
    main_invoice_export,
    main_reconcile,
)
from ocs.offline.db import Database
from ocs.rating import rate
from tests.offline.billing_fixture import billing_catalogue, scenario, usage

HEADER = "record_type,charging_id,session_id,imsi,msisdn,start_time,end_time,rating_group,apn,plmn,rat_type,service,uplink,downlink,units\n"
ROWS = [
    # matches the online session "a" (125 MB) within 1 %
    "PGW,1001,a,262019000000001,,2025-03-15T09:00:00+00:00,2025-03-17T10:00:00+00:00,10,iot.demo,26201,EUTRAN,data,25000000,100000500,",
    # online saw 150 events, the network 160: a difference
    "CHF,1002,e,262019000000002,,2025-03-21T09:00:00+00:00,2025-03-21T10:00:00+00:00,10,,,,event,,,160",
    # never online, postpaid SIM: rated in batch (15 MB: 10 MB allowance + 5 MB x 10 ct)
    "PGW,1003,,262019000000003,,2025-03-18T09:00:00+00:00,2025-03-18T10:00:00+00:00,10,iot.demo,26201,NR,data,,,15000000",
    # never online, prepaid pool SIM: reported, not rated
    "SGW,1004,,262010000000001,,2025-03-18T09:00:00+00:00,2025-03-18T10:00:00+00:00,10,iot.demo,26201,,data,,,1000",
]
BAD = [
    "PGW,2001,,,,2025-03-18T09:00:00+00:00,2025-03-18T10:00:00+00:00,10,,,,data,,,1",
    "PGW,2002,,262019000000003,,2025-03-18T09:00:00,2025-03-18T10:00:00+00:00,10,,,,data,,,1",
    "XYZ,2003,,262019000000003,,2025-03-18T09:00:00+00:00,2025-03-18T10:00:00+00:00,10,,,,data,,,1",
    "PGW,2004,,262019000000003,,2025-03-18T09:00:00+00:00,2025-03-18T10:00:00+00:00,10,,,,fax,,,1",
    "PGW,2005,,262019000000003,,2025-03-18T09:00:00+00:00,2025-03-18T10:00:00+00:00,10,,,,data,,,-5",
]


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return path


async def test_import_reconcile_and_batch_rating(
    redis: Redis, db: Database, tmp_path: Path, tenant: str
) -> None:
    cat = billing_catalogue(tmp_path / "c", tenant)
    cipher = await scenario(redis, db, cat)
    path = _csv(tmp_path / "pgw.csv", ROWS + BAD)
    async with db.tenant(tenant) as conn:
        report = await import_csv(conn, cipher, path)
        assert (report.rows, report.imported, report.duplicates) == (9, 4, 0)
        assert [e.split(": ", 1)[1] for e in report.errors] == [
            "imsi: missing",
            "start_time: needs a UTC offset",
            "record_type: 'XYZ' is not one of PGW, SGW, CHF",
            "service: 'fax' is not data, sms, voice or event",
            "units: '-5' is not a non-negative integer",
        ]
        assert report.errors[0].startswith(f"{path}:6: ")
        again = await import_csv(conn, cipher, _csv(tmp_path / "pgw.csv", ROWS))
        assert (again.imported, again.duplicates) == (0, 4)
        rep = await reconcile(conn, cat, cipher, tolerance_percent=1.0)
        rated = await conn.fetchrow("SELECT ctx, payer FROM usage_records WHERE source = 'batch'")
    assert (rep.groups, rep.matched, rep.rated) == (4, 1, 1)
    status = {d.key: (d.network, d.online, d.status) for d in rep.differences}
    assert status == {
        "e/rg 10": (160, 150, "mismatch"),
        "cid:1003/rg 10": (15_000_000, 0, "rated"),
        "cid:1004/rg 10": (1000, 0, "unrated"),
    }
    # the batch price is the online rating's price of the same usage
    online = rate(cat, usage(tenant, "262019000000003", "2025-03-18T10:00:00+00:00", 15_000_000))
    assert json.loads(rated["ctx"])["levels"][0]["amount"] == online.amounts[0] == 50
    assert rated["payer"] == f"{tenant}:postpaid_pool:cust-pool"


def test_cli_end_to_end(
    settings: Settings, tmp_path: Path, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cat"
    billing_catalogue(folder, tenant)
    assert main_db_migrate(settings) == 0
    assert main_import(settings, _csv(tmp_path / "in.csv", ROWS[2:] + BAD[:1]), catalog=folder) == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("in.csv:4: imsi: missing")
    assert main_reconcile(settings, catalog=folder) == 0
    assert "1 CDRs rated in batch" in capsys.readouterr().out
    out = tmp_path / "invoices"
    assert main_billrun(settings, cycle=10, on=date(2025, 4, 10), catalog=folder, out_dir=out) == 0
    text = capsys.readouterr().out
    assert "2 accounts invoiced" in text
    assert sorted(p.name for p in out.iterdir()) == [
        f"{tenant}-1.html",
        f"{tenant}-1.pdf",
        f"{tenant}-2.html",
        f"{tenant}-2.pdf",
    ]
    assert main_billrun(settings, cycle=10, on=date(2025, 4, 10), catalog=folder, out_dir=out) == 0
    assert "0 accounts invoiced, 2 already done" in capsys.readouterr().out
    assert (
        main_invoice_adjust(
            settings, number="1", kind="credit", amount=100, reason="x", catalog=folder
        )
        == 0
    )
    said = " ".join(capsys.readouterr().out.split())
    assert (
        "credit note CN-1 against invoice 1: net -1.00 EUR, tax -0.19 EUR, gross -1.19 EUR" in said
    )
    for suffix in (".html", ".pdf", "-ubl.xml", "-cii.xml", "-facturx.pdf"):
        assert (settings.data_dir / "invoices" / f"{tenant}-CN-1{suffix}").is_file(), suffix
    flags = ["--database-url", str(settings.database_url), "--data-dir", str(tmp_path)]
    adjust = ["invoice", "adjust", "--number", "7", "--kind", "credit", "--amount", "100"]
    assert main([*adjust, "--reason", "x", "--catalog", str(folder), *flags]) == 1
    assert capsys.readouterr().err == "ocs: error: invoice 7: not found\n"
    ubl = tmp_path / "cn.xml"
    assert main_invoice_export(settings, number="CN-1", fmt="ubl", out=ubl, catalog=folder) == 0
    assert b"<cbc:ID>CN-1</cbc:ID>" in ubl.read_bytes()
    assert f"note CN-1: ubl written to {ubl}" in " ".join(capsys.readouterr().out.split())
    export = ["invoice", "export", "--number", "99", "--format", "cii", "--out", str(ubl)]
    assert main([*export, "--catalog", str(folder), *flags]) == 1
    assert capsys.readouterr().err == "ocs: error: invoice 99: not found\n"
    with pytest.raises(UsageError, match="--format: 'docx' is not one of html, pdf, ubl, cii"):
        main_invoice_export(settings, number="1", fmt="docx", catalog=folder)
    assert main_export(settings, fmt="json", out=tmp_path / "j.json", catalog=folder) == 0
    totals = json.loads((tmp_path / "j.json").read_text())["totals"]
    assert set(totals) == {"b2b/EUR"}
    with pytest.raises(UsageError, match="--cycle: 31 is not a bill day"):
        main_billrun(settings, cycle=31, catalog=folder)
    assert main(["billrun", "--cycle", "31", "--catalog", str(folder), *flags]) == 2
    assert capsys.readouterr().err == "ocs: error: billrun: --cycle: 31 is not a bill day (1-28)\n"


async def test_unreadable_csv_keeps_the_rows_before(
    db: Database, tmp_path: Path, tenant: str
) -> None:
    """Bytes that are not UTF-8 end the file with one error line, the rows before are
    imported; a NUL character and numbers beyond the columns' range are row errors."""
    from ocs.offline.crypto import tenant_cipher
    from ocs.offline.sync import upsert_tenant
    from tests.offline.conftest import MASTER

    async with db.tenant(tenant) as conn:
        await upsert_tenant(conn, tenant, "", "DE", "UTC", "EUR")
        cipher = await tenant_cipher(conn, tenant, MASTER)
    huge = ROWS[3].replace(",10,iot.demo", ",2147483648,iot.demo").replace("1004", "1005")
    over = ROWS[3].replace(",,1000", ",,9223372036854775808").replace("1004", "1006")
    nul = tmp_path / "nul.csv"
    bad_apn = ROWS[3].replace("iot.demo", "iot\x00demo").replace("1004", "1007")
    nul.write_text(HEADER + "\n".join([ROWS[2], huge, over, bad_apn]) + "\n")
    latin = tmp_path / "latin.csv"
    latin.write_bytes((HEADER + ROWS[3] + "\n").encode() + "PGW,caf\xe9\n".encode("latin-1"))
    async with db.tenant(tenant) as conn:
        first = await import_csv(conn, cipher, nul)
        second = await import_csv(conn, cipher, latin)
    assert (first.rows, first.imported) == (4, 1)
    assert first.errors == [
        f"{nul}:3: rating_group: 2147483648 is above 2147483647",
        f"{nul}:4: units: 9223372036854775808 is above 9223372036854775807",
        f"{nul}:5: apn: contains a NUL character",
    ]
    assert (second.rows, second.imported) == (1, 1)
    assert second.errors == [
        f"{latin}:3: file: invalid continuation byte (not UTF-8); rest of file skipped"
    ]
