"""TS 32.298 BER CDR import: files encoded by asn1tools (an encoder we did not write) from
the subset module ocs/offline/asn1/gprs_subset.asn; the rows equal the CSV importer's; bad
records are reported one per line and the good ones kept; the BER reader on hand-made bytes
(indefinite lengths, high tag numbers, truncation)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asn1tools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocs.config import Settings as OcsSettings
from ocs.offline.asn1.ber import BerError, read_element, read_elements
from ocs.offline.asn1.fields import plmn_id, timestamp
from ocs.offline.asn1.records import decode_file
from ocs.offline.cdrs import import_file, parse_row
from ocs.offline.cli import main_import
from ocs.offline.crypto import tenant_cipher
from ocs.offline.db import Database
from ocs.offline.sync import upsert_tenant
from tests.offline.billing_fixture import billing_catalogue
from tests.offline.conftest import MASTER

MODULE = Path(__file__).resolve().parents[2] / "ocs" / "offline" / "asn1" / "gprs_subset.asn"
SPEC = asn1tools.compile_files(str(MODULE), "ber")
V4 = ("iPBinV4Address", b"\x0a\x00\x00\x01")


def tbcd(digits: str) -> bytes:
    """Telephony BCD as TS 29.002 writes it (test side: the field content, not BER)."""
    padded = digits + "F" * (len(digits) % 2)
    return bytes(int(padded[i + 1], 16) << 4 | int(padded[i], 16) for i in range(0, len(padded), 2))


def ts(local: str, offset: str) -> bytes:
    """TimeStamp YYMMDDhhmmss + sign + hhmm, BCD (TS 32.298 5.1.2.2.x TimeStamp)."""
    return bytes.fromhex(local) + offset[0].encode() + bytes.fromhex(offset[1:])


def pgw(imsi: str | None, cid: int, opened: bytes, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "recordType": 85, "p-GWAddress": V4, "chargingID": cid, "servingNodeAddress": [V4],
        "recordOpeningTime": opened, "duration": 600, "causeForRecClosing": 0,
        "chargingCharacteristics": b"\x08\x00", "servingNodeType": ["gTPSGW"], **extra,
    }  # fmt: skip
    if imsi is not None:
        body["servedIMSI"] = tbcd(imsi)
    return bytes(SPEC.encode("GPRSRecord", ("pGWRecord", body)))


def service(rg: int, first: bytes, last: bytes, up: int, down: int, **extra: Any) -> dict[str, Any]:
    return {
        "ratingGroup": rg, "timeOfFirstUsage": first, "timeOfLastUsage": last,
        "serviceConditionChange": (b"\x00\x00\x00\x00", 32), "timeOfReport": last,
        "datavolumeFBCUplink": up, "datavolumeFBCDownlink": down, **extra,
    }  # fmt: skip


GOOD_PGW = pgw(
    "262019000000001",
    1001,
    ts("250315110000", "+0100"),  # 10:00 UTC
    accessPointNameNI="iot.demo",
    servedMSISDN=b"\x91" + tbcd("491709000001"),
    servingNodePLMNIdentifier=bytes.fromhex("62f210"),  # 262 01
    rATType=6,  # EUTRAN
    listOfServiceData=[
        service(10, ts("250315110000", "+0100"), ts("250315110500", "+0100"), 1000, 4000),
        service(10, ts("250315110500", "+0100"), ts("250315111000", "+0100"), 500, 500),
        service(20, ts("250315110100", "+0100"), ts("250315110200", "+0100"), 7, 3, rATType=10),
    ],
)
GOOD_SGW = bytes(
    SPEC.encode(
        "GPRSRecord",
        (
            "sGWRecord",
            {
                "recordType": 84, "servedIMSI": tbcd("262019000000002"), "s-GWAddress": V4,
                "chargingID": 1002, "servingNodeAddress": [V4],
                "recordOpeningTime": ts("250316080000", "+0000"), "duration": 3600,
                "causeForRecClosing": 0, "chargingCharacteristics": b"\x08\x00",
                "sGWChange": True,  # [34] in an SGW record: not service data
                "listOfTrafficVolumes": [
                    {"dataVolumeGPRSUplink": 100, "dataVolumeGPRSDownlink": 200,
                     "changeCondition": "tariffTime", "changeTime": ts("250316083000", "+0000")},
                    {"dataVolumeGPRSUplink": 300, "dataVolumeGPRSDownlink": 400,
                     "changeCondition": "recordClosure", "changeTime": ts("250316090000", "+0000")},
                ],
            },
        ),
    )
)  # fmt: skip


def chf(subscriber: dict[str, str] | None, cid: int | None, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "recordType": 200, "recordingNetworkFunctionID": "chf-1",
        "nFunctionConsumerInformation": {"networkFunctionality": "sMF"},
        "recordOpeningTime": ts("250320120000", "+0000"), "duration": 60,
        "causeForRecClosing": 0,
        "pDUSessionChargingInformation": {
            "pDUSessionChargingID": 77, "pDUSessionId": 5, "rATType": 10,
            "dataNetworkNameIdentifier": "iot.demo",
        },
        **extra,
    }  # fmt: skip
    if subscriber is not None:
        body["subscriberIdentifier"] = subscriber
    if cid is not None:
        body["chargingID"] = cid
    return bytes(SPEC.encode("CHFRecord", ("chargingFunctionRecord", body)))


CHF_USAGE = [
    {"ratingGroup": 20, "usedUnitContainers": [{"dataTotalVolume": 5000}]},
    {"ratingGroup": 10, "usedUnitContainers": [
        {"dataVolumeUplink": 100, "dataVolumeDownlink": 200},
        {"dataTotalVolume": 700, "dataVolumeUplink": 1, "dataVolumeDownlink": 1},
    ]},
]  # fmt: skip
IMSI_3 = {"subscriptionIDType": "eND-USER-IMSI", "subscriptionIDData": "imsi-262019000000003"}
GOOD_CHF = chf(IMSI_3, None, listOfMultipleUnitUsage=CHF_USAGE)
CHF_E164 = chf(
    {"subscriptionIDType": "eND-USER-E164", "subscriptionIDData": "491709000001"},
    5,
    listOfMultipleUnitUsage=CHF_USAGE,
)
CHF_EMPTY = chf(IMSI_3, 6)
SGSN = bytes(SPEC.encode("GPRSRecord", ("sgsnPDPRecord", {"recordType": 18})))
BAD_TIME = pgw("262019000000003", 1003, ts("251315110000", "+0100"))  # month 13
NO_IMSI = pgw(None, 1004, ts("250315110000", "+0100"))
LAST = pgw("262019000000003", 1005, ts("250318100000", "-0230"))  # 12:30 UTC


def _file(path: Path, *records: bytes) -> Path:
    path.write_bytes(b"".join(records))
    return path


def test_rows_equal_the_csv_importers(tmp_path: Path) -> None:
    decoded = decode_file(GOOD_PGW + GOOD_SGW, "f.ber")
    assert decoded.errors == [] and decoded.records == 2
    csv_rows = [
        {"record_type": "PGW", "charging_id": "1001", "imsi": "262019000000001",
         "msisdn": "491709000001", "start_time": "2025-03-15T10:00:00+00:00",
         "end_time": "2025-03-15T10:10:00+00:00", "rating_group": "10", "apn": "iot.demo",
         "plmn": "26201", "rat_type": "EUTRAN", "uplink": "1500", "downlink": "4500"},
        {"record_type": "PGW", "charging_id": "1001", "imsi": "262019000000001",
         "msisdn": "491709000001", "start_time": "2025-03-15T10:01:00+00:00",
         "end_time": "2025-03-15T10:02:00+00:00", "rating_group": "20", "apn": "iot.demo",
         "plmn": "26201", "rat_type": "NR", "units": "10"},
        {"record_type": "SGW", "charging_id": "1002", "imsi": "262019000000002",
         "start_time": "2025-03-16T08:00:00+00:00", "end_time": "2025-03-16T09:00:00+00:00",
         "units": "1000"},
    ]  # fmt: skip
    assert [row for _, row in decoded.rows] == [parse_row(r) for r in csv_rows]
    assert [where for where, _ in decoded.rows] == [
        "f.ber:record 1 (byte 0)",
        "f.ber:record 1 (byte 0)",
        f"f.ber:record 2 (byte {len(GOOD_PGW)})",
    ]


def test_bad_records_reported_good_kept() -> None:
    data = GOOD_PGW + SGSN + BAD_TIME + NO_IMSI + LAST
    decoded = decode_file(data, "f.ber")
    at = [0, len(GOOD_PGW)]
    for rec in (SGSN, BAD_TIME, NO_IMSI):
        at.append(at[-1] + len(rec))
    assert decoded.errors == [
        f"f.ber:record 2 (byte {at[1]}): record: sgsnPDPRecord is not read"
        " (only pGWRecord [79], sGWRecord [78], chargingFunctionRecord [200])",
        f"f.ber:record 3 (byte {at[2]}): recordOpeningTime: 2513151100002b0100:"
        " month must be in 1..12",
        f"f.ber:record 4 (byte {at[3]}): servedIMSI: missing",
    ]
    rows = [row for _, row in decoded.rows]
    assert [(r["charging_id"], r["rating_group"]) for r in rows] == [
        ("1001", 10),
        ("1001", 20),
        ("1005", None),
    ]
    assert rows[2]["start_time"] == datetime(2025, 3, 18, 12, 30, tzinfo=UTC)
    # a file cut in its last record: the records before it are kept, the cut one reported
    cut = decode_file(GOOD_PGW + LAST[:-5], "cut.ber")
    assert len(cut.rows) == 2
    assert cut.errors == [
        f"cut.ber:record 2 (byte {len(GOOD_PGW)}): framing: tag [79] length"
        f" {len(LAST) - 3} runs past the end ({len(LAST) - 8} left); rest of file skipped"
    ]


def test_chf_records() -> None:
    decoded = decode_file(GOOD_CHF + CHF_E164 + CHF_EMPTY, "chf.ber")
    at = [0, len(GOOD_CHF), len(GOOD_CHF) + len(CHF_E164)]
    assert decoded.errors == [
        f"chf.ber:record 2 (byte {at[1]}): subscriberIdentifier: '' is not an IMSI of 6-15 digits",
        f"chf.ber:record 3 (byte {at[2]}): listOfMultipleUnitUsage: missing (no usage in the"
        " record)",
    ]
    base = {
        "record_type": "CHF", "charging_id": "77", "imsi": "262019000000003",
        "start_time": "2025-03-20T12:00:00+00:00", "end_time": "2025-03-20T12:01:00+00:00",
        "apn": "iot.demo", "rat_type": "NR",
    }  # fmt: skip
    # rating group 10: 100 + 200, then the total volume 700 (preferred to up + down)
    assert [row for _, row in decoded.rows] == [
        parse_row({**base, "rating_group": "10", "units": "1000"}),
        parse_row({**base, "rating_group": "20", "units": "5000"}),
    ]


def test_field_decoders() -> None:
    assert plmn_id(bytes.fromhex("62f210")) == "26201"
    assert plmn_id(bytes.fromhex("130062")) == "310260"  # 3-digit MNC
    assert timestamp(ts("241231235959", "-0500"), "t") == datetime(
        2025, 1, 1, 4, 59, 59, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="servingNodePLMNIdentifier: 2 octets"):
        plmn_id(b"\x62\xf2")
    with pytest.raises(ValueError, match="t: 25031511000041 is not a 9-octet TimeStamp"):
        timestamp(bytes.fromhex("25031511000041"), "t")


def test_ber_reader_forms() -> None:
    # [79] constructed, indefinite length, holding [5] INTEGER 1 and [34] indefinite empty
    raw = bytes.fromhex("bf4f80" + "850101" + "bf228000 00" + "0000")
    el = read_element(raw)
    assert (el.tag, el.constructed, el.end) == (79, True, len(raw))
    assert [(c.tag, c.offset) for c in el.children()] == [(5, 3), (34, 6)]
    assert el.children()[0].integer() == 1
    # long-form length (0x81 0x03)
    assert read_element(bytes.fromhex("8581030000ff")).integer() == 255
    for bad, reason in (
        ("bf4f80850101", "byte 6: indefinite value is not closed"),
        ("858501", "byte 0: length of 5 octets cannot be read"),
        ("05800000", "byte 0: indefinite length on a primitive element"),
        ("bf", "byte 0: tag number runs past the end"),
        ("8503ff", "byte 0: tag [5] length 3 runs past the end (1 left)"),
    ):
        with pytest.raises(BerError) as info:
            list(read_elements(bytes.fromhex(bad)))
        assert str(info.value) == reason


async def test_import_into_the_database(db: Database, tmp_path: Path, tenant: str) -> None:
    async with db.tenant(tenant) as conn:
        await upsert_tenant(conn, tenant, "", "DE", "UTC", "EUR")
        cipher = await tenant_cipher(conn, tenant, MASTER)
    path = _file(tmp_path / "pgw.ber", GOOD_PGW, GOOD_SGW, NO_IMSI, LAST, GOOD_CHF)
    async with db.tenant(tenant) as conn:
        steps: list[tuple[int, int]] = []
        report = await import_file(
            conn, cipher, path, lambda done, total: steps.append((done, total))
        )
        assert (report.rows, report.imported, report.duplicates) == (5, 6, 0)
        assert steps == [(6, 6)]  # rows stored, rows to store
        assert [e.split(": ", 1)[1] for e in report.errors] == ["servedIMSI: missing"]
        rows = await conn.fetch(
            "SELECT record_type, charging_id, rating_group, units, plmn, rat_type, apn,"
            " imsi_enc, msisdn_enc, source_file FROM network_cdrs ORDER BY cdr_key"
        )
        again = await import_file(conn, cipher, path)
        assert (again.imported, again.duplicates) == (0, 6)
    assert [
        (r["record_type"], r["charging_id"], r["rating_group"], r["units"], r["rat_type"])
        for r in rows
    ] == [
        ("CHF", "77", 10, 1000, "NR"),
        ("CHF", "77", 20, 5000, "NR"),
        ("PGW", "1001", 10, 6000, "EUTRAN"),
        ("PGW", "1001", 20, 10, "NR"),
        ("PGW", "1005", None, 0, None),
        ("SGW", "1002", None, 1000, None),
    ]
    assert cipher.decrypt(rows[2]["imsi_enc"]) == "262019000000001"
    assert cipher.decrypt(rows[2]["msisdn_enc"]) == "491709000001"
    assert (rows[2]["plmn"], rows[2]["apn"], rows[2]["source_file"]) == (
        "26201",
        "iot.demo",
        "pgw.ber",
    )


def test_cli_import_picks_ber(
    settings: OcsSettings, tmp_path: Path, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI picks BER by the first octet and reports the bad record, exit status 1."""
    folder = tmp_path / "cat"
    billing_catalogue(folder, tenant)
    assert main_import(settings, _file(tmp_path / "b.ber", SGSN, LAST), catalog=folder) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().endswith(
        "record 1 (byte 0): record: sgsnPDPRecord is not read (only pGWRecord [79],"
        " sGWRecord [78], chargingFunctionRecord [200])"
    )
    assert "2 rows, 1 imported, 0 already imported, 1 rejected" in " ".join(captured.out.split())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=10_000), st.binary(max_size=8))
def test_any_bytes_give_rows_or_errors_never_a_crash(noise: bytes, at: int, patch: bytes) -> None:
    """Random files, and valid files with bytes overwritten, truncated or extended: every
    record ends as rows or as one error line."""
    valid = GOOD_PGW + GOOD_SGW + GOOD_CHF
    cut = at % (len(valid) + 1)
    for data in (b"\xbf" + noise, valid[:cut] + patch + valid[cut + len(patch) :], valid[:cut]):
        decoded = decode_file(data, "f")
        assert len(decoded.errors) + len({w for w, _ in decoded.rows}) == decoded.records
