"""Network CDR import (CSV, or TS 32.298 BER via ``asn1.records``) and reconciliation
against the online usage records.

CSV columns (header row required, order free; docs/offline.md): ``record_type`` (PGW, SGW,
CHF), ``charging_id``, ``session_id`` (optional, the Gy Session-Id when the gateway knows
it), ``imsi``, ``msisdn`` (optional), ``start_time``, ``end_time`` (ISO 8601 with offset),
``rating_group`` (optional), ``apn`` (optional), ``plmn`` (MCC+MNC, optional: home),
``rat_type`` (optional, e.g. EUTRAN, NR), ``service`` (data|sms|voice|event, default data),
``uplink``, ``downlink`` (bytes) or ``units``. Bad rows are reported as
``file:line: field: reason``; good rows are kept (re-importing a file adds nothing).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from ocs.offline.asn1.fields import MAX_BIGINT, MAX_RATING_GROUP
from ocs.offline.asn1.records import decode_file, is_ber
from ocs.offline.crypto import TenantCipher
from ocs.offline.db import Connection
from ocs.rating import RatingError, RatType, ServiceKind, UsageContext, resolve
from ocs.rating.catalogue import Catalogue

RECORD_TYPES: Final = ("PGW", "SGW", "CHF")
REQUIRED: Final = ("record_type", "charging_id", "imsi", "start_time", "end_time")
STORE_CHUNK: Final = 5000  # rows per INSERT round (progress steps)
Progress = Callable[[int, int], None]  # (rows stored, rows to store)


@dataclass(slots=True)
class ImportReport:
    rows: int = 0
    imported: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)


def _time(value: str) -> datetime:
    at = datetime.fromisoformat(value)
    if at.utcoffset() is None:
        raise ValueError("needs a UTC offset")
    return at


def parse_row(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row -> column values; raises ``ValueError("field: reason")``."""

    def get(name: str) -> str:
        return (row.get(name) or "").strip()

    for name, value in row.items():
        if isinstance(value, str) and "\x00" in value:
            raise ValueError(f"{name}: contains a NUL character")
    for name in REQUIRED:
        if not get(name):
            raise ValueError(f"{name}: missing")
    rtype = get("record_type").upper()
    if rtype not in RECORD_TYPES:
        raise ValueError(f"record_type: {rtype!r} is not one of {', '.join(RECORD_TYPES)}")
    imsi = get("imsi")
    if not (imsi.isdigit() and 6 <= len(imsi) <= 15):
        raise ValueError(f"imsi: {imsi!r} is not 6-15 digits")
    out: dict[str, Any] = {"record_type": rtype, "charging_id": get("charging_id"), "imsi": imsi}
    for name in ("start_time", "end_time"):
        try:
            out[name] = _time(get(name))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    if out["end_time"] < out["start_time"]:
        raise ValueError("end_time: before start_time")
    service = get("service") or "data"
    try:
        out["service"] = ServiceKind(service)
    except ValueError:
        raise ValueError(f"service: {service!r} is not data, sms, voice or event") from None
    ints: dict[str, int | None] = {}
    for name in ("rating_group", "uplink", "downlink", "units"):
        text = get(name)
        if not text:
            ints[name] = None
            continue
        if not text.isdigit():
            raise ValueError(f"{name}: {text!r} is not a non-negative integer")
        limit = MAX_RATING_GROUP if name == "rating_group" else MAX_BIGINT
        if int(text) > limit:
            raise ValueError(f"{name}: {text} is above {limit}")
        ints[name] = int(text)
    if ints["units"] is None and ints["uplink"] is None and ints["downlink"] is None:
        raise ValueError("units: missing (give units or uplink/downlink)")
    out["units"] = (
        ints["units"]
        if ints["units"] is not None
        else (ints["uplink"] or 0) + (ints["downlink"] or 0)
    )
    if out["units"] > MAX_BIGINT:
        raise ValueError(f"units: uplink + downlink {out['units']} is above {MAX_BIGINT}")
    out["rating_group"] = ints["rating_group"]
    plmn = get("plmn")
    if plmn and not (plmn.isdigit() and len(plmn) in (5, 6)):
        raise ValueError(f"plmn: {plmn!r} is not MCC+MNC")
    rat = get("rat_type").upper()
    if rat and rat not in RatType.__members__:
        raise ValueError(f"rat_type: {rat!r} is unknown")
    out |= {
        "session_id": get("session_id") or None,
        "msisdn": get("msisdn") or None,
        "apn": get("apn") or None,
        "plmn": plmn or None,
        "rat_type": rat or None,
    }
    return out


async def import_file(
    conn: Connection, cipher: TenantCipher, path: Path, progress: Progress | None = None
) -> ImportReport:
    """Import a CDR file: BER records (TS 32.298, ``asn1.records``) when it starts like one,
    else CSV."""
    with path.open("rb") as fh:
        head = fh.read(1)
    if is_ber(head):
        return await import_ber(conn, cipher, path, progress)
    return await import_csv(conn, cipher, path, progress)


async def import_ber(
    conn: Connection, cipher: TenantCipher, path: Path, progress: Progress | None = None
) -> ImportReport:
    """Import a file of BER-encoded PGW/SGW records in the tenant's transaction ``conn``."""
    decoded = decode_file(await asyncio.to_thread(path.read_bytes), str(path))
    report = ImportReport(rows=decoded.records, errors=decoded.errors)
    await _store(conn, cipher, path, [row for _, row in decoded.rows], report, progress)
    return report


async def import_csv(
    conn: Connection, cipher: TenantCipher, path: Path, progress: Progress | None = None
) -> ImportReport:
    """Import one CSV file in the tenant's transaction ``conn``. Bytes that are not UTF-8
    end the file there (one error line); the rows before are kept."""
    report = ImportReport()
    parsed = []
    data = await asyncio.to_thread(path.read_bytes)
    tail_error = None
    try:
        text = data.decode("utf-8-sig")  # a byte order mark is not part of the header
    except UnicodeDecodeError as exc:
        cut = data.rfind(b"\n", 0, exc.start) + 1
        text = data[:cut].decode("utf-8-sig")
        line = data.count(b"\n", 0, cut) + 1
        tail_error = f"{path}:{line}: file: {exc.reason} (not UTF-8); rest of file skipped"
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            report.errors.append(f"{path}:1: header: missing column(s) {', '.join(missing)}")
            return report
        for raw in reader:
            report.rows += 1
            try:
                parsed.append(parse_row(raw))
            except ValueError as exc:
                report.errors.append(f"{path}:{reader.line_num}: {exc}")
    except csv.Error as exc:
        report.errors.append(f"{path}:{reader.line_num}: file: {exc}; rest of file skipped")
    if tail_error is not None:
        report.errors.append(tail_error)
    await _store(conn, cipher, path, parsed, report, progress)
    return report


async def _store(
    conn: Connection,
    cipher: TenantCipher,
    path: Path,
    parsed: list[dict[str, Any]],
    report: ImportReport,
    progress: Progress | None = None,
) -> None:
    """Insert parsed rows (key ``record_type:charging_id:start:rating_group``, re-imports
    add nothing); counts imported and duplicate rows into ``report``."""
    rows = []
    for r in parsed:
        start = r["start_time"].isoformat()
        key = f"{r['record_type']}:{r['charging_id']}:{start}:{r['rating_group']}"
        rows.append(
            (
                cipher.tenant,
                key,
                path.name,
                r["record_type"],
                r["charging_id"],
                r["session_id"],
                cipher.bidx(r["imsi"]),
                cipher.encrypt(r["imsi"]),
                cipher.encrypt(r["msisdn"]) if r["msisdn"] else None,
                r["start_time"],
                r["end_time"],
                r["rating_group"],
                r["apn"],
                r["plmn"],
                r["rat_type"],
                str(r["service"]),
                r["units"],
            )
        )
    before = await conn.fetchval("SELECT count(*) FROM network_cdrs")
    for i in range(0, len(rows), STORE_CHUNK):
        await conn.executemany(
            "INSERT INTO network_cdrs (tenant_id, cdr_key, source_file, record_type,"
            " charging_id, session_id, imsi_bidx, imsi_enc, msisdn_enc, started_at, ended_at,"
            " rating_group, apn, plmn, rat_type, service, units) VALUES ($1,$2,$3,$4,$5,$6,$7,"
            "$8,$9,$10,$11,$12,$13,$14,$15,$16,$17) ON CONFLICT (tenant_id, cdr_key) DO NOTHING",
            rows[i : i + STORE_CHUNK],
        )
        if progress is not None:
            progress(min(i + STORE_CHUNK, len(rows)), len(rows))
    after = await conn.fetchval("SELECT count(*) FROM network_cdrs")
    report.imported = int(after) - int(before)
    report.duplicates = len(rows) - report.imported


@dataclass(slots=True)
class Difference:
    key: str
    network: int
    online: int
    status: str  # mismatch | missing_online | rated | unrated

    @property
    def diff(self) -> int:
        return self.network - self.online


@dataclass(slots=True)
class ReconcileReport:
    groups: int = 0
    matched: int = 0
    differences: list[Difference] = field(default_factory=list)
    rated: int = 0


async def reconcile(
    conn: Connection,
    catalogue: Catalogue,
    cipher: TenantCipher,
    *,
    tolerance_percent: float = 1.0,
    tolerance_units: int = 0,
    slack: timedelta = timedelta(minutes=5),
) -> ReconcileReport:
    """Compare each CDR group (session or charging id, rating group) with the online usage of
    the same session (or, without a session id, the same SIM and rating group within the
    CDR's time span +- ``slack``). Groups with no online usage on a postpaid payer are rated
    with ``ocs.rating.resolve`` and stored as ``batch`` usage records for the bill run."""
    report = ReconcileReport()
    cdrs = await conn.fetch(
        "SELECT * FROM network_cdrs WHERE rated_record IS NULL ORDER BY started_at"
    )
    groups: dict[tuple[str, int | None], list[Any]] = defaultdict(list)
    for c in cdrs:
        groups[(c["session_id"] or f"cid:{c['charging_id']}", c["rating_group"])].append(c)
    for (sess, rg), items in groups.items():
        report.groups += 1
        network = sum(c["units"] for c in items)
        if not sess.startswith("cid:"):
            online = await conn.fetchval(
                "SELECT coalesce(sum(units), 0) FROM usage_records WHERE session_id = $1"
                " AND rating_group IS NOT DISTINCT FROM $2 AND kind = 'usage'"
                " AND source = 'online'",
                sess,
                rg,
            )
        else:
            first = min(c["started_at"] for c in items) - slack
            last = max(c["ended_at"] for c in items) + slack
            online = await conn.fetchval(
                "SELECT coalesce(sum(units), 0) FROM usage_records WHERE imsi_bidx = $1"
                " AND rating_group IS NOT DISTINCT FROM $2 AND ts BETWEEN $3 AND $4"
                " AND kind = 'usage' AND source = 'online'",
                items[0]["imsi_bidx"],
                rg,
                first,
                last,
            )
        online = int(online)
        key = f"{sess}/rg {rg}"
        if online == 0 and network > 0:
            rated = [await _rate_batch(conn, catalogue, cipher, c) for c in items]
            status = "rated" if all(rated) else "unrated"
            report.rated += sum(rated)
            report.differences.append(Difference(key, network, 0, status))
            continue
        allowed = max(tolerance_units, abs(network) * tolerance_percent / 100)
        if abs(network - online) > allowed:
            report.differences.append(Difference(key, network, online, "mismatch"))
        else:
            report.matched += 1
    return report


async def _rate_batch(conn: Connection, catalogue: Catalogue, cipher: TenantCipher, c: Any) -> bool:
    """Rate one never-online CDR with the online rating code; only postpaid payers."""
    plmn = c["plmn"]
    ctx = UsageContext(
        tenant=catalogue.tenant.id,
        imsi=cipher.decrypt(c["imsi_enc"]),
        event_time=c["ended_at"],
        service=ServiceKind(c["service"]),
        quantity=c["units"],
        apn=c["apn"],
        rating_group=c["rating_group"],
        mcc=plmn[:3] if plmn else None,
        mnc=plmn[3:] if plmn else None,
        rat_type=RatType(c["rat_type"] or "UNKNOWN"),
    )
    try:
        res = resolve(catalogue, ctx)
    except RatingError:
        return False
    if str(res.payer.kind) != "postpaid_pool":
        return False
    levels = [q.level_line(q.price(ctx.quantity).amount) for q in res.quotes]
    key = f"batch:{c['cdr_key']}"
    ctx_json = {
        "session": c["session_id"],
        "rg": c["rating_group"],
        "twin": res.twin,
        "account": res.account,
        "service": str(ctx.service),
        "levels": levels,
        "cdr": c["cdr_key"],
    }
    await conn.execute(
        "INSERT INTO usage_records (tenant_id, record_key, stream_id, kind, payer, ts, unit,"
        " units, session_id, rating_group, imsi_bidx, twin, account_id, service, alloc, ctx,"
        " source) VALUES ($1,$2,$3,'usage',$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,'[]',$14,'batch')"
        " ON CONFLICT (tenant_id, record_key) DO NOTHING",
        catalogue.tenant.id,
        key,
        f"cdr:{c['source_file']}",
        f"{catalogue.tenant.id}:{res.payer.kind}:{res.payer.id}",
        c["ended_at"],
        {"data": "bytes", "sms": "messages", "voice": "seconds", "event": "events"}[c["service"]],
        c["units"],
        c["session_id"],
        c["rating_group"],
        c["imsi_bidx"],
        res.twin,
        res.account,
        str(ctx.service),
        json.dumps(ctx_json),
    )
    await conn.execute(
        "UPDATE network_cdrs SET rated_record = $1 WHERE cdr_key = $2", key, c["cdr_key"]
    )
    return True
