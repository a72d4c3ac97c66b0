"""Benchmark the BER CDR decoder and the usage/revenue reports.

* BER: ``--ber-records`` PGW records (two rating groups each), encoded once with asn1tools
  from ``ocs/offline/asn1/gprs_subset.asn`` (distinct charging ids), decoded with
  ``ocs.offline.asn1.records.decode_file``: records/s and CPU us per record (process time).
* reports: a database of its own (``--url``, dropped and re-created), ``--usage-records``
  usage records of one tenant over 100 accounts and 3 months loaded with ``COPY``; then
  ``make_report`` usage by period,account,plan,zone and by group,service: wall time (the
  work is PostgreSQL's; this process's CPU is reported too).

    .venv/bin/python tools/bench_reports.py --ber-records 20000 --usage-records 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asn1tools
import asyncpg

from ocs.config import Settings
from ocs.offline.asn1.records import decode_file
from ocs.offline.db import connect
from ocs.offline.reports import make_report

MODULE = Path(__file__).resolve().parents[1] / "ocs" / "offline" / "asn1" / "gprs_subset.asn"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/ocs_bench_reports"
TENANT = "bench"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ber_file(count: int) -> bytes:
    spec = asn1tools.compile_files(str(MODULE), "ber")
    ts = bytes.fromhex("250315110000") + b"+" + bytes.fromhex("0100")
    v4 = ("iPBinV4Address", b"\x0a\x00\x00\x01")
    out = []
    for i in range(count):
        container = {
            "timeOfFirstUsage": ts, "timeOfLastUsage": ts, "timeOfReport": ts,
            "serviceConditionChange": (b"\x00\x00\x00\x00", 32),
            "datavolumeFBCUplink": 1000 + i, "datavolumeFBCDownlink": 5000,
        }  # fmt: skip
        body = {
            "recordType": 85, "servedIMSI": bytes.fromhex("62100900000010f0"),
            "p-GWAddress": v4, "chargingID": i, "servingNodeAddress": [v4],
            "accessPointNameNI": "iot.demo", "recordOpeningTime": ts, "duration": 600,
            "causeForRecClosing": 0, "chargingCharacteristics": b"\x08\x00",
            "servingNodePLMNIdentifier": bytes.fromhex("62f210"), "rATType": 6,
            "servingNodeType": ["gTPSGW"],
            "listOfServiceData": [{"ratingGroup": rg, **container} for rg in (10, 20)],
        }  # fmt: skip
        out.append(bytes(spec.encode("GPRSRecord", ("pGWRecord", body))))
    return b"".join(out)


def bench_ber(count: int) -> dict[str, Any]:
    data = ber_file(count)
    cpu0, wall0 = _cpu(), time.perf_counter()
    decoded = decode_file(data, "bench.ber")
    cpu, wall = _cpu() - cpu0, time.perf_counter() - wall0
    assert not decoded.errors and len(decoded.rows) == 2 * count
    return {
        "records": count, "bytes": len(data), "rows": len(decoded.rows),
        "records_per_s": round(count / wall), "cpu_us_per_record": round(cpu / count * 1e6, 1),
    }  # fmt: skip


def _rows(count: int) -> Any:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for i in range(count):
        account = f"acc-{i % 100:03d}"
        plan = "iot-flat" if i % 3 else "iot-tiered"
        zone = "home" if i % 10 else "eu"
        level = {"plan": plan, "zone": zone, "currency": "EUR", "amount": i % 7}
        ctx = {"levels": [level]}
        yield (
            TENANT, f"usage:r{i}", "0-0", "usage", f"{TENANT}:postpaid_pool:{account}",
            start + timedelta(seconds=i * 7_776_000 // count), "bytes", 1000 + i % 5000,
            account, "data", json.dumps(ctx),
        )  # fmt: skip


async def bench_reports(url: str, count: int) -> dict[str, Any]:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    db = await connect(Settings(database_url=url), max_size=2)
    try:
        async with db.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO tenants (tenant_id, time_zone) VALUES ($1, 'UTC')", TENANT
            )
            await conn.executemany(
                "INSERT INTO accounts (tenant_id, account_id, currency, bill_day, accounting_group)"
                " VALUES ($1, $2, 'EUR', 1, $3)",
                [(TENANT, f"acc-{i:03d}", f"g{i % 4}") for i in range(100)],
            )
            await conn.copy_records_to_table(
                "usage_records", records=_rows(count),
                columns=["tenant_id", "record_key", "stream_id", "kind", "payer", "ts", "unit",
                         "units", "account_id", "service", "ctx"],
            )  # fmt: skip
            await conn.execute("VACUUM ANALYZE usage_records")
        out: dict[str, Any] = {"usage_records": count}
        for by in ("period,account,plan,zone", "group,service"):
            cpu0, wall0 = _cpu(), time.perf_counter()
            report = await make_report(db, TENANT, "usage", by=by)
            out[by] = {
                "rows": len(report.rows), "seconds": round(time.perf_counter() - wall0, 3),
                "client_cpu_s": round(_cpu() - cpu0, 3),
            }  # fmt: skip
        return out
    finally:
        await db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--ber-records", type=int, default=20_000)
    ap.add_argument("--usage-records", type=int, default=1_000_000)
    args = ap.parse_args()
    result = {"ber": bench_ber(args.ber_records)}
    result["reports"] = asyncio.run(bench_reports(args.url, args.usage_records))
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
