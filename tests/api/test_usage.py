"""Usage and balance reads (issue 16) on a real Redis and PostgreSQL: usage charged through the
real charging path (CCRs into the charging application), part of it drained, read back over
HTTP, summing exactly to what the balances moved; pages walk every row once; another
tenant's token never reads it; the export's totals are the API's."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from ocs.api.auth import Scope, create_token
from ocs.balance import BalanceStore
from ocs.charging import create_charging
from ocs.charging.application import ChargingApplication
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.diameter.constants import CcRequestType
from ocs.offline.crypto import master_key, tenant_cipher
from ocs.offline.db import connect, enter_tenant
from ocs.offline.drain import Drainer
from ocs.offline.sync import sync_catalogue
from ocs.offline.terms import DEMO_TERMS, load_terms
from ocs.offline.usage_export import COLUMNS
from ocs.offline.usage_reader import OpenBacklog, Subject, UsageReader, snapshot
from tests.api.conftest import Api, demo_documents
from tests.charging.ccr import build_ccr
from tests.charging.helpers import wire

TZ = ZoneInfo("Europe/Berlin")  # the demo tenant's zone
ROAMING = "20801"  # France: zone eu, priced in money on a wallet (no allowance)


def documents(tenant: str, imsi_prefix: str, msisdn_prefix: str) -> dict[str, Any]:
    """The demo catalogue as ``tenant``'s, with SIM identities of its own."""
    docs = demo_documents()
    docs["tenant.yaml"]["tenant"]["id"] = tenant
    for doc in docs.values():
        for section in ("sims", "sim_ranges"):
            for item in (doc or {}).get(section) or []:
                for key in ("imsi", "imsi_first"):
                    if key in item:
                        item[key] = imsi_prefix + item[key][5:]
                for key in ("msisdn", "msisdn_first"):
                    if key in item:
                        item[key] = msisdn_prefix + item[key][4:]
    return docs


@dataclass
class Tenant:
    id: str
    token: str
    bob: str  # IMSI of the wallet SIM (bob-wallet)
    fleet: str  # IMSI of a range SIM on acme-pool
    iccid: str  # of a SIM created over the API, on bob-wallet
    iccid_imsi: str

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class World:
    api: Api
    a: Tenant
    b: Tenant
    app: ChargingApplication
    settings: Settings
    now: list[float]

    async def get(self, who: Tenant, path: str, **params: Any) -> Any:
        return await self.api.client.get(path, headers=who.auth(), params=params)

    async def session(self, imsi: str, used: list[int], *, rg: int = 1) -> None:
        """A Gy session of ``imsi``: CCR-I, a CCR-U per ``used[:-1]``, CCR-T with the last."""
        sid = f"pgw.test;usage;{uuid.uuid4().hex}"
        when = datetime.fromtimestamp(self.now[0], UTC)
        steps = [(CcRequestType.INITIAL_REQUEST, (rg, 200_000, 0))]
        steps += [(CcRequestType.UPDATE_REQUEST, (rg, 200_000, u)) for u in used[:-1]]
        steps.append((CcRequestType.TERMINATION_REQUEST, (rg, -1, used[-1])))
        for number, (kind, mscc) in enumerate(steps):
            ccr = build_ccr(
                sid, request_type=kind, number=number, imsi=imsi, msccs=[mscc], when=when,
                sgsn_mcc_mnc=ROAMING,
            )  # fmt: skip
            answer = await self.app.handle_ccr(wire(ccr), None)
            assert answer.get(A.AVP_RESULT_CODE) == 2001, (imsi, number)

    async def sync(self, tenant: str) -> None:
        """Sync the tenant's catalogue to PostgreSQL (what a bill run does first)."""
        found = self.app.catalogue.tenants().get(tenant)
        assert found is not None
        db = await connect(self.settings)
        try:
            async with db.pool.acquire() as conn, conn.transaction():
                await enter_tenant(conn, tenant)
                cipher = await tenant_cipher(conn, tenant, master_key(self.settings))
                await sync_catalogue(conn, found, cipher, load_terms(DEMO_TERMS))
        finally:
            await db.close()

    async def drain(self, *, trim: bool = True) -> int:
        db = await connect(self.settings)
        try:
            stats = await Drainer(self.api.redis, db, master_key(self.settings), trim=trim).run()
        finally:
            await db.close()
        return stats.inserted


async def _tenant(api: Api, tenant: str, imsi: str, msisdn: str, iccid: str) -> Tenant:
    token = await create_token(api.redis, tenant, Scope.ADMIN)
    headers = {"Authorization": f"Bearer {token}"}
    r = await api.client.post(
        "/v1/catalogue", headers=headers, json={"documents": documents(tenant, imsi, msisdn)}
    )
    assert r.status_code == 200, r.text
    sim_imsi = f"{imsi}7777770001"
    r = await api.client.post(
        "/v1/subscriptions",
        headers=headers,
        json={
            "imsi": sim_imsi,
            "iccid": iccid,
            "account": "bob",
            "plan": "consumer-data",
            "payer": {"kind": "wallet", "id": "bob-wallet"},
        },
    )
    assert r.status_code == 201, r.text
    return Tenant(tenant, token, f"{imsi}9999999999", f"{imsi}0000000007", iccid, sim_imsi)


@pytest.fixture
async def world(api: Api, settings: Settings) -> AsyncIterator[World]:
    a = await _tenant(api, f"ua{uuid.uuid4().hex[:8]}", "26202", "4915", "8949020000000000011")
    b = await _tenant(api, f"ub{uuid.uuid4().hex[:8]}", "26203", "4916", "8949030000000000011")
    runtime = await create_charging(settings, start=False)
    now = [datetime.now(UTC).timestamp()]
    runtime.application.clock = lambda: now[0]
    try:
        yield World(api, a, b, runtime.application, settings, now)
    finally:
        await runtime.close()


def _sum(items: list[dict[str, Any]], field: str, unit: str | None = None) -> int:
    return sum(i[field] for i in items if unit is None or i["unit"] == unit)


async def _wallet_used(world: World, tenant: str) -> int:
    buckets = await BalanceStore(world.api.redis).buckets(f"{tenant}:wallet:bob-wallet")
    return sum(b.used for b in buckets if b.unit == "money")


async def _pool_used(world: World, tenant: str) -> int:
    buckets = await BalanceStore(world.api.redis).buckets(f"{tenant}:prepaid_pool:acme-pool")
    return sum(b.used for b in buckets if b.unit == "bytes")


async def test_usage_spanning_drained_and_open_records_sums_to_what_was_charged(
    world: World,
) -> None:
    a = world.a
    money_before = await _wallet_used(world, a.id)
    pool_before = await _pool_used(world, a.id)
    await world.session(a.bob, [30_000, 20_000])
    await world.session(a.fleet, [100_000, 50_000, 7])
    # drained and trimmed: these records are in PostgreSQL only
    assert await world.drain() >= 5
    await world.session(a.bob, [11_000])
    await world.session(a.fleet, [40_000])
    # drained but kept in the stream (trim off): in both stores, to be counted once
    assert await world.drain(trim=False) == 2
    await world.session(a.bob, [12_345])  # open: in Redis only
    await world.session(a.fleet, [1_234])
    charged = await _wallet_used(world, a.id) - money_before
    assert charged > 0

    r = await world.get(a, f"/v1/usage/sims/{a.bob}")
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["subject"] == {
        "type": "sim", "id": a.bob, "imsi": a.bob, "msisdn": "491509999999", "iccid": None,
    }  # fmt: skip
    assert page["timeZone"] == "Europe/Berlin"
    assert _sum(page["items"], "quantity", "bytes") == 30_000 + 20_000 + 11_000 + 12_345
    assert _sum(page["items"], "records") == 4
    assert _sum(page["items"], "charged") == charged  # exactly what the wallet moved

    wallet = (await world.get(a, "/v1/usage/wallets/bob-wallet", by="month")).json()
    assert _sum(wallet["items"], "charged") == charged
    fleet = (await world.get(a, f"/v1/usage/sims/{a.fleet}")).json()
    expected_bytes = 100_000 + 50_000 + 7 + 40_000 + 1_234
    assert _sum(fleet["items"], "quantity") == expected_bytes
    pool = (await world.get(a, "/v1/usage/pools/acme-pool", by="month")).json()
    assert _sum(pool["items"], "quantity") == expected_bytes
    assert await _pool_used(world, a.id) - pool_before == expected_bytes
    # the SIM by MSISDN, the account of its SIMs
    by_msisdn = (await world.get(a, "/v1/usage/sims/491509999999", id_type="msisdn")).json()
    assert by_msisdn["items"] == page["items"]
    account = (await world.get(a, "/v1/usage/accounts/acme-iot", by="month")).json()
    assert _sum(account["items"], "quantity", "bytes") == expected_bytes

    # the wallet's transactions: drained and open, newest first, each once
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = await world.get(a, "/v1/wallets/bob-wallet/transactions", **params)
        assert r.status_code == 200, r.text
        seen += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    usage = [t for t in seen if t["kind"] == "usage"]
    assert len(usage) == 4
    assert len({(t["ts"], t["request_id"]) for t in seen}) == len(seen)
    assert -sum(t["amount"] for t in usage) == charged
    assert [t["ts"] for t in seen] == sorted((t["ts"] for t in seen), reverse=True)


async def test_a_reseller_chain_usage_is_the_sims_once_and_each_payers_own(world: World) -> None:
    """B2B2B: farm-co's SIM is paid by farm-pool (level 0) and, wholesale, by the reseller's
    postpaid pool (a ``level`` record). The SIM used it once; each payer shows what it paid."""
    a = world.a
    farm = f"{a.bob[:5]}0000100000"
    await world.session(farm, [5_000, 2_000])
    await world.drain()
    await world.session(farm, [1_000])
    sim = (await world.get(a, f"/v1/usage/sims/{farm}")).json()
    assert _sum(sim["items"], "quantity") == 8_000
    assert _sum(sim["items"], "records") == 3
    for pool in ("farm-pool", "reseller-postpaid"):
        r = await world.get(a, f"/v1/usage/pools/{pool}", by="month")
        assert r.status_code == 200, r.text
        assert _sum(r.json()["items"], "quantity") == 8_000, (pool, r.json())
    day = datetime.now(TZ).date()
    window = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
    r = await world.get(a, "/v1/usage/export", format="ndjson", **window)
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert sum(row["units"] for row in rows if row["kind"] == "usage") == 8_000
    levels = [row for row in rows if row["kind"] == "level"]
    assert {row["payer"] for row in levels} == {f"{a.id}:postpaid_pool:reseller-postpaid"}
    assert sum(row["units"] for row in levels) == 8_000


async def test_a_record_drained_between_the_two_reads_is_counted_once(world: World) -> None:
    """The reader reads Redis, then the drain commits and deletes the entries, then the
    reader opens its PostgreSQL snapshot: nothing lost, nothing twice. And the other way: a
    drain that committed and has not trimmed yet (records in both)."""
    a = world.a
    await world.session(a.bob, [10_000, 5_000])
    db = await connect(world.settings)
    drained: list[int] = []

    async def drain_now(point: str) -> None:
        assert point == "after_redis"
        stats = await Drainer(world.api.redis, db, master_key(world.settings)).run()
        drained.append(stats.inserted)

    try:
        reader = UsageReader(world.api.redis, db, master_key(world.settings), hook=drain_now)
        tag = f"{a.id}:wallet:bob-wallet"
        scope = Subject(a.id, (tag,), imsi=a.bob)
        today = datetime.now(TZ).date()
        rows = await reader.by_period(scope, "day", TZ, today - timedelta(days=1), today
                                      + timedelta(days=2))  # fmt: skip
        assert len(drained) == 1 and drained[0] >= 2  # both usage records among them
        assert sum(t.units for _, t in rows) == 15_000
        assert sum(t.records for _, t in rows) == 2
        assert await world.api.redis.xlen(f"ocs:{{{tag}}}:cdr") == 0  # all in PostgreSQL now
        page = await reader.page(Subject(a.id, (tag,), payer=tag), 10)
        assert [r.units for r in page if r.kind == "usage"] == [5_000, 10_000]
    finally:
        await db.close()


async def test_a_backlog_beyond_the_limit_is_refused_not_truncated(world: World) -> None:
    a = world.a
    await world.session(a.bob, [1_000, 2_000, 3_000])
    db = await connect(world.settings)
    try:
        tag = f"{a.id}:wallet:bob-wallet"
        reader = UsageReader(world.api.redis, db, master_key(world.settings), max_open=2)
        today = datetime.now(TZ).date()
        with pytest.raises(OpenBacklog, match="more than 2 undrained records"):
            await reader.by_period(Subject(a.id, (tag,), payer=tag), "day", TZ, today,
                                   today + timedelta(days=1))  # fmt: skip
    finally:
        await db.close()


async def test_reads_run_read_only_in_one_snapshot_with_a_time_limit(world: World) -> None:
    db = await connect(world.settings)
    try:
        async with snapshot(db, world.a.id) as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "30s"
            assert await conn.fetchval("SHOW transaction_isolation") == "repeatable read"
            assert await conn.fetchval("SHOW transaction_read_only") == "on"
            with pytest.raises(asyncpg.QueryCanceledError):
                await conn.execute("SET LOCAL statement_timeout = 50; SELECT pg_sleep(1)")
    finally:
        await db.close()


async def test_pages_walk_every_day_once(world: World) -> None:
    a = world.a
    start = datetime(2026, 3, 1, 12, tzinfo=TZ)
    expected: dict[str, int] = {}
    for day in range(40):
        at = start + timedelta(days=day)
        world.now[0] = at.timestamp()
        await world.session(a.fleet, [1_000 + day])
        expected[at.date().isoformat()] = 1_000 + day
        if day == 20:
            await world.drain()
    items: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"from": "2026-03-01", "to": "2026-04-15", "limit": 7}
        if cursor:
            params["cursor"] = cursor
        r = await world.get(a, f"/v1/usage/sims/{a.fleet}", **params)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        pages += 1
        if cursor is None:
            break
    assert pages == 6  # 40 days, 7 a page
    assert {i["usageDate"][:10]: i["quantity"] for i in items} == expected
    assert len(items) == len(expected)
    assert [i["usageDate"] for i in items] == sorted(i["usageDate"] for i in items)
    months = (await world.get(a, f"/v1/usage/sims/{a.fleet}", by="month", **{"from": "2026-01-01",
              "to": "2026-06-01"})).json()  # fmt: skip
    assert {i["usageDate"][:7]: i["quantity"] for i in months["items"]} == {
        "2026-03": sum(v for k, v in expected.items() if k < "2026-04"),
        "2026-04": sum(v for k, v in expected.items() if k >= "2026-04"),
    }


async def test_another_tenant_never_reads_a_sim_or_payer(world: World) -> None:
    a, b = world.a, world.b
    await world.session(a.bob, [10_000])
    await world.session(a.iccid_imsi, [3_000])
    mine = await world.get(a, f"/v1/usage/sims/{a.iccid}")
    assert mine.status_code == 200, mine.text
    assert mine.json()["subject"]["imsi"] == a.iccid_imsi
    assert _sum(mine.json()["items"], "quantity") == 3_000
    for path in (
        f"/v1/usage/sims/{a.bob}",
        f"/v1/usage/sims/{a.iccid}",
        "/v1/usage/sims/491509999999",
        f"/v1/balances/sims/{a.bob}",
        f"/v1/balances/sims/{a.iccid}",
    ):
        r = await world.get(b, path)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        unknown = await world.get(b, path.replace(path.rsplit("/", 1)[1], "262990000000001"))
        assert r.json()["title"] == unknown.json()["title"]  # same answer as an unknown SIM
    # b's own wallet of the same name: b's usage (none), never a's
    r = await world.get(b, "/v1/usage/wallets/bob-wallet", by="month")
    assert r.status_code == 200
    assert r.json()["items"] == []
    r = await world.get(b, "/v1/wallets/bob-wallet/transactions")
    assert all(t["kind"] != "usage" for t in r.json()["items"])
    # a cursor of a's is refused for b, even on b's own wallet
    r = await world.get(a, "/v1/wallets/bob-wallet/transactions", limit=1)
    cursor = r.json()["next_cursor"]
    assert cursor
    r = await world.get(b, "/v1/wallets/bob-wallet/transactions", limit=1, cursor=cursor)
    assert r.status_code == 400
    assert r.json()["type"].endswith("/invalid-cursor")


async def test_inputs_are_validated_with_problem_documents(world: World) -> None:
    a = world.a
    path = f"/v1/usage/sims/{a.bob}"
    for params, status in (
        ({"from": "2026-02-30"}, 422),
        ({"from": "2026-03-02", "to": "2026-03-01"}, 422),
        ({"from": "2024-01-01", "to": "2026-01-01"}, 422),  # longer than 366 days by day
        ({"from": "1900-01-01", "to": "1900-02-01"}, 422),
        ({"limit": 0}, 422),
        ({"limit": 501}, 422),
        ({"by": "week"}, 422),
        ({"by": "month", "from": "2026-01-15"}, 422),
        ({"from": "0001-01-01"}, 422),
        ({"to": "0001-01-01"}, 422),
        ({"by": "month", "to": "9999-12-31"}, 422),
        ({"cursor": "abc"}, 400),
        ({"cursor": "x" * 2000}, 422),
        ({"id_type": "email"}, 422),
    ):
        r = await world.get(a, path, **params)
        assert r.status_code == status, (params, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    for day in range(3):
        world.now[0] = datetime(2026, 5, 1 + day, 12, tzinfo=TZ).timestamp()
        await world.session(a.bob, [1_000])
    window = {"from": "2026-05-01", "to": "2026-05-10", "limit": 1}
    cursor = (await world.get(a, path, **window)).json()["next_cursor"]
    body, _, sig = cursor.partition(".")
    tampered = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + sig
    for bad in (tampered, cursor + "x"):
        r = await world.get(a, path, **window, cursor=bad)
        assert r.status_code == 400, r.text
    r = await world.get(a, path, **{**window, "to": "2026-05-11"}, cursor=cursor)
    assert r.status_code == 400  # another query's cursor
    assert (await world.get(a, path, **window, cursor=cursor)).status_code == 200
    r = await world.get(a, "/v1/usage/pools/no-such-pool")
    assert r.status_code == 404
    r = await world.get(a, "/v1/usage/export", format="xml")
    assert r.status_code == 422


async def test_balances_show_the_buckets(world: World) -> None:
    a = world.a
    await world.session(a.bob, [10_000])
    r = await world.get(a, f"/v1/balances/sims/{a.bob}")
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert item["id"] == "wallet:bob-wallet"
    assert item["currency"] == "EUR"
    wallet = (await world.get(a, "/v1/wallets/bob-wallet")).json()
    money = [b for b in item["buckets"] if b["usageType"] == "money"]
    assert sum(b["remainingValue"]["amount"] for b in money) == wallet["available"]
    assert sum(b["usedValue"]["amount"] for b in money) == wallet["used"]
    assert {b["remainingValue"]["units"] for b in money} == {"EUR"}
    assert all(b["status"] == "active" for b in money)
    pool = (await world.get(a, "/v1/balances/pools/acme-pool")).json()
    (bucket,) = pool["items"][0]["buckets"]
    assert bucket["remainingValue"] == {"amount": 10_000_000_000, "units": "bytes"}
    assert bucket["usageType"] == "data"


async def test_the_exports_totals_are_the_apis(world: World, capsys: Any) -> None:
    a = world.a
    day = datetime.now(TZ).date()
    await world.session(a.bob, [10_000, 2_000])
    await world.session(a.fleet, [70_000])
    await world.drain()
    await world.sync(a.id)  # the subscriptions the export finds drained records' IMSIs in
    await world.session(a.bob, [500])
    await world.session(a.fleet, [800])
    await world.session(a.iccid_imsi, [900])
    window = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
    api_totals: dict[str, list[int]] = {}
    for path in (f"/v1/usage/sims/{a.bob}", f"/v1/usage/sims/{a.fleet}",
                 f"/v1/usage/sims/{a.iccid}"):  # fmt: skip
        for item in (await world.get(a, path, **window)).json()["items"]:
            acc = api_totals.setdefault(item["unit"], [0, 0, 0])
            acc[0] += item["records"]
            acc[1] += item["quantity"]
            acc[2] += item["charged"]

    def totals(rows: list[dict[str, Any]]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for row in rows:
            if row["kind"] != "usage":  # the SIMs' usage (level rows: what upper levels paid)
                continue
            acc = out.setdefault(row["unit"], [0, 0, 0])
            acc[0] += 1
            acc[1] += int(row["units"])
            acc[2] += int(row["charged"])
        return out

    r = await world.get(a, "/v1/usage/export", format="ndjson", **window)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert totals(rows) == api_totals
    assert {row["source"] for row in rows} == {"stored", "open"}
    assert len({row["record_key"] for row in rows}) == len(rows)
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
    assert all(stamp.match(row["time"]) for row in rows), rows  # stored and open alike
    assert all(list(row) == list(COLUMNS) for row in rows), rows  # one shape, one order
    bob = [row for row in rows if row["imsi"] == a.bob]
    assert {row["source"] for row in bob} == {"stored", "open"}  # IMSI decrypted when stored
    assert all(row["twin"] == "main" and row["rating_group"] == 1 for row in bob), bob
    assert {row["imsi"] for row in rows if row["source"] == "open"} >= {a.bob}
    r = await world.get(a, "/v1/usage/export", format="csv", **window)
    assert r.status_code == 200
    csv_rows = list(csv.DictReader(io.StringIO(r.text)))
    assert totals(csv_rows) == api_totals
    assert {row["imsi"] for row in csv_rows} >= {a.bob}

    from ocs.cli import main

    out = world.settings.data_dir / "export.ndjson"
    code = await asyncio.to_thread(
        main,
        ["usage", "export", "--tenant", a.id, "--from", window["from"], "--to", window["to"],
         "--format", "ndjson", "--out", str(out),
         "--redis-url", str(world.settings.redis_url),
         "--database-url", str(world.settings.database_url),
         "--data-dir", str(world.settings.data_dir)],
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    cli_rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert totals(cli_rows) == api_totals
    assert f"exported {len(rows)} usage records of {a.id}" in capsys.readouterr().err
