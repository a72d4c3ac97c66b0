"""``ocs import accounts|subscriptions`` and ``POST /v1/imports/...`` on a real Redis: rows
validated one by one with file:line: field: reason, create-or-update, re-import changes
nothing, the same state as the equivalent API calls, RAR/ASR to live sessions, bad files and
bodies answered clearly, tenants kept apart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tests.api.conftest as api_fixtures
import tests.balance.fixtures as balance_fixtures
from ocs.api.asgi import build_state
from ocs.api.keys import revision_key, state_key, versions_key
from ocs.api.state import ApiState
from ocs.config import Settings
from ocs.crm import ImportReport, read_rows, run_import
from ocs.crm.importer import KINDS
from ocs.crm.readers import Format
from ocs.diameter import avp_codes as A
from ocs.diameter.constants import CcRequestType, Command, ResultCode
from ocs.redis_client import RedisClient
from tests.api.conftest import TENANT, Api, Gateway
from tests.charging.ccr import build_ccr

# the fixtures of tests/api (real HTTP on a free port, Redis DB 10 flushed, a gateway peer)
redis_base_url = balance_fixtures.redis_base_url
redis_url = api_fixtures.redis_url
redis = api_fixtures.redis
settings = api_fixtures.settings
api = api_fixtures.api
demo = api_fixtures.demo
gateway = api_fixtures.gateway
pg_admin_url = api_fixtures.pg_admin_url  # settings has a database for the usage reads
pg_url = api_fixtures.pg_url

ACCOUNTS_CSV = """id,name,parent,kind,payment,currency,tax_profile,bill_day
crm-a,CRM A GmbH,,enterprise,prepaid,EUR,de-vat,3
crm-a1,A's end customer,crm-a,enterprise,prepaid,EUR,,3
crm-bad,Bad day,,enterprise,prepaid,EUR,de-vat,40
crm-orphan,Orphan,nobody,,,,,
crm-b,CRM B,,consumer,prepaid,EUR,no-such-tax,
"""

SUBS_CSV = """imsi,msisdn,account,plan,payer,properties,status
262031000000001,491711000001,crm-a,iot-pool,prepaid_pool:acme-pool,sensors=2,
262031000000002,491711000002,crm-a1,iot-pool,prepaid_pool:acme-pool,,suspended
262031000000003,491711000003,nobody,iot-pool,prepaid_pool:acme-pool,,
262031000000004,491711000004,crm-a,no-plan,prepaid_pool:acme-pool,,
262031000000005,491711000001,crm-a,iot-pool,prepaid_pool:acme-pool,,
262031000000006,491711000006,crm-a,iot-pool,wallet:no-wallet,,
262031000000007,491711000007,crm-a,iot-pool,postpaid_pool:acme-pool,,
262031000000008,491711000008,crm-a,iot-pool,prepaid_pool:acme-pool,sensors=x,
262031000000009,491711000009,crm-a,iot-pool,prepaid_pool:acme-pool,,
262031000000001,491711000010,crm-a,iot-pool,prepaid_pool:acme-pool,,
"""


def _state_api(settings: Settings, redis: RedisClient) -> ApiState:
    return build_state(settings, redis)


async def _import(
    state_api: ApiState, kind: str, text: str, fmt: Format = "csv", **kw: Any
) -> ImportReport:
    rows = read_rows(f"{kind}.{fmt}", text, fmt, KINDS[kind])
    return await run_import(state_api, TENANT, kind, f"{kind}.{fmt}", rows, **kw)


def _reasons(report: ImportReport | dict[str, Any]) -> dict[int, tuple[str, str]]:
    rejected = report["rejected"] if isinstance(report, dict) else report.as_dict()["rejected"]
    return {r["line"]: (r["field"], r["reason"]) for r in rejected}


async def _raw_state(redis: RedisClient) -> tuple[bytes, bytes, int]:
    state = await redis.get(state_key(TENANT))
    rev = await redis.get(revision_key(TENANT))
    return state, rev, int(await redis.llen(versions_key(TENANT)))


async def test_accounts_good_and_bad_rows_update_and_reimport(
    demo: Api, settings: Settings, redis: RedisClient
) -> None:
    r = await demo.request(
        "POST", "/v1/imports/accounts", content=ACCOUNTS_CSV, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["created"], body["updated"], body["unchanged"]) == (2, 0, 0)
    reasons = _reasons(body)
    assert reasons[4] == ("bill_day", "Input should be less than or equal to 28")
    assert reasons[5] == ("parent", "unknown parent account 'nobody'")
    assert reasons[6] == ("tax_profile", "unknown tax profile 'no-such-tax'")
    assert set(reasons) == {4, 5, 6}
    assert body["rejected"][0]["file"] == "body"
    _, state = await _state_api(settings, redis).catalogues.load_state(TENANT)
    assert state["accounts"]["crm-a1"]["parent"] == "crm-a"
    assert state["accounts"]["crm-a"]["bill_day"] == 3

    # an update: only the given columns change, the rest is kept
    update = "id,name,bill_day\ncrm-a,CRM A AG,7\ncrm-a1,A's end customer,3\n"
    before = await _raw_state(redis)
    r = await demo.request(
        "POST", "/v1/imports/accounts", content=update, headers={"Content-Type": "text/csv"}
    )
    body = r.json()
    assert (body["created"], body["updated"], body["unchanged"], body["rejected"]) == (
        0,
        1,
        1,
        [],
    )
    _, state = await _state_api(settings, redis).catalogues.load_state(TENANT)
    a = state["accounts"]["crm-a"]
    assert (a["name"], a["bill_day"], a["tax_profile"], a["payment"]) == (
        "CRM A AG",
        7,
        "de-vat",
        "prepaid",
    )
    assert (await _raw_state(redis))[1] != before[1]

    # the same file again: nothing changes, not even the revision
    before = await _raw_state(redis)
    r = await demo.request(
        "POST", "/v1/imports/accounts", content=update, headers={"Content-Type": "text/csv"}
    )
    assert (r.json()["unchanged"], r.json()["revisions"]) == (2, [])
    assert await _raw_state(redis) == before


async def test_subscriptions_rejections_name_line_field_reason_and_reimport_is_a_no_op(
    demo: Api, settings: Settings, redis: RedisClient
) -> None:
    state_api = _state_api(settings, redis)
    await _import(state_api, "accounts", ACCOUNTS_CSV)
    report = await _import(state_api, "subscriptions", SUBS_CSV)
    assert (report.created, report.updated, report.unchanged) == (3, 0, 0)
    reasons = _reasons(report)
    assert reasons == {
        4: ("account", "unknown account 'nobody'"),
        5: ("plan", "unknown plan 'no-plan'"),
        6: ("msisdn", "MSISDN 491711000001 belongs to IMSI 262031000000001"),
        7: ("payer", "unknown wallet 'no-wallet'"),
        8: ("payer", "pool 'acme-pool' is prepaid, not postpaid_pool"),
        9: ("properties.sensors", "not an integer: 'x'"),
        11: ("imsi", "IMSI 262031000000001 is also on line 2"),
    }
    assert str(min(report.rejected, key=lambda r: r.line)).startswith(
        "subscriptions.csv:4: account: "
    )
    sims = (await state_api.catalogues.compiled(TENANT)).catalogue.sims_by_imsi
    suspended = sims["262031000000002"]
    assert suspended.account == "crm-a1"
    assert suspended.state == "suspended"  # the SIM's lifecycle state (docs/sim-states.md)
    assert [t.spec.status for t in suspended.twins] == ["active"]
    assert dict(sims["262031000000001"].twins[0].spec.properties) == {"sensors": 2}

    before = await _raw_state(redis)
    again = await _import(state_api, "subscriptions", SUBS_CSV)
    assert (again.created, again.updated, again.unchanged, again.revisions) == (0, 0, 3, [])
    assert len(again.rejected) == 7
    assert await _raw_state(redis) == before


async def test_import_leaves_the_state_the_api_calls_leave(
    demo: Api, settings: Settings, redis: RedisClient
) -> None:
    """One SIM through the API (create, change plan, suspend), one through two imports."""
    state_api = _state_api(settings, redis)
    r = await demo.request(
        "POST",
        "/v1/subscriptions",
        json={
            "imsi": "262031000000100",
            "msisdn": "491711000100",
            "account": "acme-iot",
            "plan": "iot-pool",
            "payer": {"kind": "prepaid_pool", "id": "acme-pool"},
            "properties": {"sensors": 3},
        },
    )
    assert r.status_code == 201, r.text
    change_at = "2030-01-01T00:00:00+00:00"
    r = await demo.request(
        "PATCH",
        "/v1/subscriptions/262031000000100",
        json={"plan": "oem-diag", "effective_from": change_at},
    )
    assert r.status_code == 200, r.text
    r = await demo.request("POST", "/v1/subscriptions/262031000000100/suspend")
    assert r.status_code == 200, r.text

    created = [
        {
            "imsi": "262031000000101",
            "msisdn": "491711000101",
            "account": "acme-iot",
            "plan": "iot-pool",
            "payer": "prepaid_pool:acme-pool",
            "properties": {"sensors": 3},
        }
    ]
    report = await _import(state_api, "subscriptions", json.dumps(created), "json")
    assert (report.created, report.rejected) == (1, [])
    changed = {"imsi": "262031000000101", "plan": "oem-diag", "effective_from": change_at}
    report = await _import(
        state_api, "subscriptions", json.dumps({**changed, "status": "suspended"}), "json"
    )
    assert (report.updated, report.rejected) == (1, [])

    _, state = await state_api.catalogues.load_state(TENANT)
    by_api = dict(state["sims"]["262031000000100"])
    by_import = dict(state["sims"]["262031000000101"])
    for item in (by_api, by_import):
        item.pop("imsi")
        item.pop("msisdn")
    assert by_import == by_api
    assert by_import["twins"][0]["plans"][-1] == {"plan": "oem-diag", "from": change_at}
    assert by_import["state"] == "suspended"  # the SIM's state (docs/sim-states.md)


async def test_unknown_references_become_valid_once_the_accounts_are_imported(
    demo: Api, settings: Settings, redis: RedisClient
) -> None:
    state_api = _state_api(settings, redis)
    subs = "imsi,account,plan,payer\n262031000000200,crm-late,iot-pool,prepaid_pool:acme-pool\n"
    report = await _import(state_api, "subscriptions", subs)
    assert _reasons(report) == {2: ("account", "unknown account 'crm-late'")}
    # an end customer before its parent in the same file is fine
    accounts = "id,parent\ncrm-late-child,crm-late\ncrm-late,\n"
    report = await _import(state_api, "accounts", accounts)
    assert (report.created, report.rejected) == (2, [])
    report = await _import(state_api, "subscriptions", subs)
    assert (report.created, report.rejected) == (1, [])


async def test_compile_errors_land_on_their_row_and_the_rest_is_applied(
    demo: Api, settings: Settings, redis: RedisClient
) -> None:
    state_api = _state_api(settings, redis)
    twins_bad = [
        {
            "id": "eu",
            "filter": {"region": ["atlantis"]},
            "payer": {"kind": "prepaid_pool", "id": "acme-pool"},
            "plan": "iot-pool",
        }
    ]
    twins_good = [{**twins_bad[0], "filter": {"apn": ["iot.demo"]}}]
    lines = "\n".join(
        json.dumps({"imsi": imsi, "account": "acme-iot", "twins": twins})
        for imsi, twins in (("262031000000300", twins_bad), ("262031000000301", twins_good))
    )
    lines += "\n{not json\n[1]\n"
    report = await _import(state_api, "subscriptions", lines, "json")
    assert report.created == 1
    reasons = _reasons(report)
    assert reasons == {
        1: ("twins[0].filter.region", "unknown region 'atlantis'"),
        3: ("row", reasons[3][1]),
        4: ("row", "expected a JSON object, got an array"),
    }
    assert reasons[3][1].startswith("not JSON: ")
    _, state = await state_api.catalogues.load_state(TENANT)
    assert state["sims"]["262031000000301"]["twins"][0]["filter"] == {"apn": ["iot.demo"]}
    assert "262031000000300" not in state["sims"]

    # dry run: the report, nothing written
    before = await _raw_state(redis)
    row = {"imsi": "262031000000302", "account": "acme-iot", "twins": twins_good}
    report = await _import(state_api, "subscriptions", json.dumps([row]), "json", dry_run=True)
    assert (report.created, report.dry_run, report.revisions) == (1, True, [])
    assert await _raw_state(redis) == before


async def test_malformed_bodies_and_tenants_over_http(demo: Api, redis: RedisClient) -> None:
    csv = "text/csv"
    cases: list[tuple[str, str, int, str]] = [
        ("imsi,colour\n1,red\n", csv, 400, "body:1: unknown column 'colour'"),
        ('imsi,account\n"2620,x\n', csv, 400, "body:2: malformed CSV"),
        ("", csv, 400, "body: empty file"),
        ('[{"imsi": "1"},\n {"imsi": ', "application/json", 400, "body:2: malformed JSON"),
        ("imsi\n1\n", "text/plain", 415, "send text/csv"),
    ]
    before = await _raw_state(redis)
    for content, media_type, status, detail in cases:
        r = await demo.request(
            "POST",
            "/v1/imports/subscriptions",
            content=content,
            headers={"Content-Type": media_type},
        )
        assert r.status_code == status, (content, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"].startswith(detail), r.json()
    r = await demo.request(
        "POST",
        "/v1/imports/accounts",
        content=b"id\n" + b"x" * (65 << 20),
        headers={"Content-Type": csv},
    )
    assert r.status_code == 413
    # another tenant's admin imports into its own tenant only (none applied there yet)
    r = await demo.request(
        "POST",
        "/v1/imports/accounts",
        who="other",
        content="id\ncrm-other\n",
        headers={"Content-Type": csv},
    )
    assert (r.status_code, r.json()["type"].rsplit("/", 1)[1]) == (404, "no-catalogue")
    r = await demo.request(
        "POST", "/v1/imports/accounts", who="read", content="id\nx\n", headers={"Content-Type": csv}
    )
    assert r.status_code == 403
    assert await _raw_state(redis) == before
    assert not await redis.exists(state_key("other"))


def _ocs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocs.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_exit_status_summary_and_errors(
    demo: Api, settings: Settings, redis: RedisClient, redis_url: str, tmp_path: Path
) -> None:
    store = ["--redis-url", redis_url, "--data-dir", str(tmp_path), "--tenant", TENANT]

    async def ocs(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(_ocs, "import", *args, *store)

    missing = await ocs("accounts", str(tmp_path / "missing.csv"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"ocs: error: {tmp_path / 'missing.csv'}: cannot read: No such file or directory"
    ]
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("id,colour\nx,red\n")
    out = await ocs("accounts", str(bad_header))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"ocs: error: {bad_header}:1: unknown column 'colour'")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "a"}\n{"id": "b"}]')
    out = await ocs("accounts", str(broken))
    assert (out.returncode, "Traceback" in out.stderr) == (2, False)
    assert out.stderr.startswith(f"ocs: error: {broken}:2: malformed JSON")
    unknown = tmp_path / "accounts.txt"
    unknown.write_text("id\nx\n")
    out = await ocs("accounts", str(unknown))
    assert (out.returncode, "--format" in out.stderr) == (2, True)

    accounts = tmp_path / "accounts.csv"
    accounts.write_text(ACCOUNTS_CSV)
    report_file = tmp_path / "report.json"
    out = await ocs("accounts", str(accounts), "--report", str(report_file), "--dry-run")
    assert out.returncode == 1, out.stderr
    assert out.stdout.strip() == (
        f"{accounts}: accounts (dry run, nothing written): "
        "2 created, 0 updated, 0 unchanged, 3 rejected"
    )
    assert out.stderr.splitlines()[0] == (
        f"{accounts}:4: bill_day: Input should be less than or equal to 28"
    )
    assert json.loads(report_file.read_text())["created"] == 2
    _, state = await _state_api(settings, redis).catalogues.load_state(TENANT)
    assert "crm-a" not in state["accounts"]

    out = await ocs("accounts", str(accounts))
    assert out.returncode == 1 and "2 created" in out.stdout
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "crm-a", "name": "CRM A GmbH"}\n')
    out = await ocs("accounts", str(good))
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    assert "0 created, 0 updated, 1 unchanged, 0 rejected (nothing written)" in out.stdout


async def _session(gateway: Gateway, sid: str, imsi: str, msisdn: str) -> None:
    cca = await gateway.send(
        build_ccr(
            sid,
            request_type=CcRequestType.INITIAL_REQUEST,
            number=0,
            imsi=imsi,
            msisdn=msisdn,
            msccs=[(1, 1_000_000, 0)],
        )
    )
    assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS


async def _next(gateway: Gateway, command: int) -> Any:
    while True:
        msg = await asyncio.wait_for(gateway.received.get(), 10)
        if msg.command == command:
            return msg


@pytest.mark.timeout(60)
async def test_changed_live_subscriptions_get_rar_and_suspended_ones_asr(
    gateway: Gateway, demo: Api, settings: Settings, redis: RedisClient
) -> None:
    state_api = _state_api(settings, redis)
    imsi, msisdn = "262031000000400", "491711000400"
    row = f"imsi,msisdn,account,plan,payer\n{imsi},{msisdn},bob,consumer-data,wallet:bob-wallet\n"
    assert (await _import(state_api, "subscriptions", row)).created == 1
    sid = "pgw.test;import;1"
    await _session(gateway, sid, imsi, msisdn)
    for _ in range(50):
        if await state_api.network.sessions("demo", [(imsi, msisdn)]):
            break
        await asyncio.sleep(0.05)

    report = await _import(state_api, "subscriptions", f"imsi,properties\n{imsi},screens=2\n")
    assert (report.updated, report.signalled) == (1, {"rar": 1})
    rar = await _next(gateway, Command.RE_AUTH)
    assert rar.get(A.AVP_SESSION_ID) == sid

    report = await _import(state_api, "subscriptions", f"imsi,status\n{imsi},suspended\n")
    assert (report.updated, report.signalled) == (1, {"asr": 1})
    asr = await _next(gateway, Command.ABORT_SESSION)
    assert asr.get(A.AVP_SESSION_ID) == sid
    report = await _import(state_api, "subscriptions", f"imsi,status\n{imsi},suspended\n")
    assert (report.unchanged, report.signalled) == (1, {})


async def test_rows_of_another_tenants_sims_are_rejected_and_change_nothing(
    demo: Api, redis: RedisClient
) -> None:
    """An IMSI, MSISDN or ICCID belongs to one tenant: the other tenant's import of the same
    SIMs is refused row by row (naming the identity, not its owner), and a tenant's own
    rows go in."""
    documents = api_fixtures.tenant_documents("other")
    r = await demo.request("POST", "/v1/catalogue", who="other", json={"documents": documents})
    assert r.status_code == 200, r.text
    rows = [
        {"imsi": "262031000000500", "account": "acme-iot", "plan": "iot-pool"},
        {"imsi": "262031000000501", "account": "bob", "plan": "consumer-data"},
    ]
    body = [{**row, "payer": "prepaid_pool:acme-pool"} for row in rows]
    body[1]["msisdn"] = "491711000501"
    r = await demo.request(
        "POST",
        "/v1/imports/subscriptions",
        content=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert (r.json()["created"], r.json()["rejected"]) == (2, [])
    demo_before = await redis.get(state_key("demo"))
    other_before = await redis.get(state_key("other"))
    mine = {"imsi": "262032000000502", "account": "bob", "plan": "consumer-data"}
    theirs = [
        {**body[0], "payer": "wallet:bob-wallet", "account": "bob", "plan": "consumer-data"},
        {
            "imsi": "262032000000501",
            "msisdn": "491711000501",
            "account": "bob",
            "plan": "consumer-data",
            "payer": "wallet:bob-wallet",
        },
        {**mine, "payer": "wallet:bob-wallet"},
    ]
    r = await demo.request(
        "POST",
        "/v1/imports/subscriptions",
        who="other",
        content=json.dumps(theirs),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["created"] == 1
    assert [(x["field"], x["reason"]) for x in report["rejected"]] == [
        ("imsi", "IMSI 262031000000500 is held by another tenant"),
        ("msisdn", "MSISDN 491711000501 is held by another tenant"),
    ]
    assert "demo" not in json.dumps(report)
    assert await redis.get(state_key("demo")) == demo_before
    other = json.loads(await redis.get(state_key("other")))["sims"]
    assert set(other) - set(json.loads(other_before)["sims"]) == {"262032000000502"}
    # a status row of the other tenant on demo's SIM is refused too; demo's SIM untouched
    r = await demo.request(
        "POST",
        "/v1/imports/subscriptions",
        who="other",
        content="imsi,status\n262031000000500,suspended\n",
        headers={"Content-Type": "text/csv"},
    )
    assert (r.json()["updated"], len(r.json()["rejected"])) == (0, 1)
    assert await redis.get(state_key("demo")) == demo_before


async def test_batches_write_once_each_and_skip_when_unchanged(
    demo: Api, settings: Settings, redis: RedisClient
) -> None:
    state_api = _state_api(settings, redis)
    header = "imsi,account,plan,payer\n"
    good = "{},acme-iot,iot-pool,prepaid_pool:acme-pool\n"
    imsis = [f"26203100000060{i}" for i in range(5)]
    text = header + "".join(good.format(i) for i in imsis[:3])
    text += f"{imsis[3]},acme-iot,no-plan,prepaid_pool:acme-pool\n" + good.format(imsis[4])
    rev_before = int(await redis.get(revision_key(TENANT)))
    report = await _import(state_api, "subscriptions", text, batch=2)
    assert (report.created, len(report.rejected)) == (4, 1)
    assert report.revisions == [rev_before + 1, rev_before + 2, rev_before + 3]
    # the second batch (one good row unchanged, one new) writes, the first does not
    text = header + good.format(imsis[0]) + good.format(imsis[1]) + good.format("262031000000610")
    report = await _import(state_api, "subscriptions", text, batch=2)
    assert (report.created, report.unchanged, report.revisions) == (1, 2, [rev_before + 4])


async def test_account_json_cells_and_a_hierarchy_loop(
    demo: Api, settings: Settings, redis: RedisClient
) -> None:
    state_api = _state_api(settings, redis)
    plans = '"[{""plan"": ""wholesale-iot"", ""from"": ""2024-01-01T00:00:00+01:00""}]"'
    text = (
        "id,kind,payment,plans,payer,parent\n"
        f"crm-reseller,reseller,postpaid,{plans},postpaid_pool:reseller-postpaid,\n"
        "crm-loop-a,,,,,crm-loop-b\n"
        "crm-loop-b,,,,,crm-loop-a\n"
        f"crm-no-payer,reseller,postpaid,{plans},,\n"
        "crm-bad-payer,,,,pool:x,\n"
    )
    report = await _import(state_api, "accounts", text)
    assert report.created == 1
    reasons = _reasons(report)
    assert reasons[3] == ("parent", "account hierarchy loops at 'crm-loop-a'")
    assert reasons[4] == ("parent", "account hierarchy loops at 'crm-loop-b'")
    assert reasons[5] == ("payer", "account 'crm-no-payer' has plans but no payer")
    assert reasons[6][0] == "payer" and reasons[6][1].startswith("expected KIND:ID")
    _, state = await state_api.catalogues.load_state(TENANT)
    reseller = state["accounts"]["crm-reseller"]
    assert reseller["payer"] == {"kind": "postpaid_pool", "id": "reseller-postpaid"}
    assert reseller["plans"][0]["plan"] == "wholesale-iot"
    assert not {"crm-loop-a", "crm-loop-b", "crm-no-payer"} & set(state["accounts"])


async def test_account_invoice_data_columns(demo: Api, settings: Settings) -> None:
    """The buyer's invoice data (docs/invoices.md) comes in flat columns: a cell given
    replaces that field, the others keep what the account has; a bad VAT ID or country is
    refused on its row, naming the field."""
    text = (
        "id,name,legal_name,street,postcode,city,country,vat_id,buyer_reference,language\n"
        "crm-inv,Inv,Invoice Buyer GmbH,Hauptstr. 1,10115,Berlin,DE,DE999999999,PO-7,de\n"
        "crm-inv-bad,Bad,,,,,Germany,,,\n"
        "crm-inv-vat,Bad VAT,,,,,,12 34,,\n"
    )
    r = await demo.request(
        "POST", "/v1/imports/accounts", content=text, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    reasons = _reasons(r.json())
    assert set(reasons) == {3, 4}
    assert reasons[3][0] == "invoice.country" and "pattern" in reasons[3][1]
    assert reasons[4][0] == "invoice.vat_id"
    r = await demo.request(
        "POST",
        "/v1/imports/accounts",
        content="id,street,vat_id\ncrm-inv,Hauptstr. 2,\n",
        headers={"Content-Type": "text/csv"},
    )
    assert r.json()["updated"] == 1, r.text
    _, state = await _state_api(settings, demo.redis).catalogues.load_state(TENANT)
    assert state["accounts"]["crm-inv"]["invoice"] == {
        "legal_name": "Invoice Buyer GmbH",
        "street": "Hauptstr. 2",
        "postcode": "10115",
        "city": "Berlin",
        "country": "DE",
        "vat_id": "DE999999999",
        "email": "",
        "buyer_reference": "PO-7",
        "language": "de",
        "contact_name": "",
        "phone": "",
        "iban": "",
        "bic": "",
    }


async def test_a_resellers_seller_data_columns(demo: Api, settings: Settings) -> None:
    """A reseller issues its customers' invoices (B2B2B), so its own contact (BG-6, which
    XRechnung asks for) and where its buyers pay it (BG-16) come in columns too; payment data
    on an account that sells nothing is refused on its row, naming the field."""
    text = (
        "id,name,kind,contact_name,phone,iban,bic,payment_days\n"
        "crm-seller,Seller,reseller,Billing desk,+43 1 5123456,AT611904300234573201,"
        "BKAUATWW,30\n"
        "crm-buyer-iban,Buyer,enterprise,,,AT611904300234573201,,\n"
        "crm-seller-days,Days,reseller,,,,,soon\n"
    )
    r = await demo.request(
        "POST", "/v1/imports/accounts", content=text, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    reasons = _reasons(r.json())
    assert set(reasons) == {3, 4}
    assert reasons[3][0] == "invoice" and reasons[3][1].startswith(
        "Value error, iban is where buyers pay a seller, and only a reseller account sells"
    )
    assert reasons[4][0] == "invoice.payment_days"
    _, state = await _state_api(settings, demo.redis).catalogues.load_state(TENANT)
    seller = state["accounts"]["crm-seller"]["invoice"]
    assert (seller["contact_name"], seller["phone"]) == ("Billing desk", "+43 1 5123456")
    assert (seller["iban"], seller["bic"], seller["payment_days"]) == (
        "AT611904300234573201",
        "BKAUATWW",
        30,
    )
    assert "crm-buyer-iban" not in state["accounts"]
