"""Late usage and purchases (issue 6): records stored after their period's bill run are charged
exactly once, by the account's next run, on "Late ..." lines at their own period's prices,
tiers, allowances and pool overage (docs/offline.md, "Late usage")."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from ocs.balance.keys import PAYERS, payer_tag
from ocs.balance.store import BalanceStore
from ocs.offline.billrun import BillRunError, RunSummary, bill_run
from ocs.offline.cdrs import import_csv, reconcile
from ocs.offline.crypto import TenantCipher
from ocs.offline.db import Database
from ocs.offline.drain import Drainer
from ocs.offline.late import period_holding, period_label
from ocs.offline.usage import flat_rates
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import load_catalogue
from tests.offline.billing_fixture import EXTRA, record, scenario, usage
from tests.offline.conftest import MASTER, catalogue_folder

APRIL_10 = date(2025, 4, 10)  # period 2025-03-10 .. 04-10 (tenant time zone UTC)
MAY_10 = date(2025, 5, 10)
JUNE_10 = date(2025, 6, 10)
MARCH = "2025-03-10/2025-04-10"
MB = 1_000_000
NGO_SIM = "262019000000004"  # biz: 10 MB allowance, 10 ct/MB, 5 ct/MB from 100 MB (record path)
CUST_SIM = "262019000000001"  # biz, in cust-pool (100 MB static, 1.00 per started 10 MB over)
FLAT_SIM = "262019000000005"  # flat: 2 ct/MB, one tier, no allowance (summed in SQL)

FLAT = """
plans:
  - id: flat
    name: Flat data
    currency: EUR
    versions:
      - effective_from: "2024-01-01T00:00:00+00:00"
        zone_set: retail
        rounding: half_up
        tariffs:
          - {service: data, zone: home, per: 1000000, increment: 1000000, counter: flat,
             rates: {any: {tiers: [{from: 0, price: "2"}]}}}
accounts:
  - {id: flatco, name: Flat Co, kind: enterprise, payment: postpaid, currency: EUR,
     tax_profile: exempt, accounting_group: b2b, bill_day: 10}
pools:
  - {id: flat-pool, account: flatco, kind: static, payment: postpaid, service: data,
     unit: bytes, size: 0}
sims:
  - imsi: "262019000000005"
    account: flatco
    twins:
      - {id: data, payer: {kind: postpaid_pool, id: flat-pool},
         plans: [{plan: flat, from: "2024-01-01T00:00:00+00:00"}]}
"""


def late_catalogue(folder: Path, tenant: str) -> Catalogue:
    """The billing fixture's catalogue plus a flat-priced account (``flatco``)."""
    path = catalogue_folder(folder, tenant, EXTRA)
    (path / "zz-flat.yaml").write_text(FLAT)
    tenant_file = path / "tenant.yaml"
    tenant_file.write_text(tenant_file.read_text().replace("Europe/Berlin", "UTC"))
    return load_catalogue(path)


@pytest.fixture
def cat(tmp_path: Path, tenant: str) -> Catalogue:
    return late_catalogue(tmp_path / "cat", tenant)


@pytest.fixture
async def cipher(redis: Redis, db: Database, cat: Catalogue) -> TenantCipher:
    c = await scenario(redis, db, cat)
    await drained(redis, db, cat, [(FLAT_SIM, "2025-03-14T10:00:00+00:00", 20 * MB, "flat:1")])
    return c


async def drained(
    redis: Redis, db: Database, cat: Catalogue, items: list[tuple[str, str, int, str]]
) -> None:
    """Record (SIM, time, bytes, request id) usages as the online path does, and drain them."""
    t = cat.tenant.id
    await record(redis, cat, [(usage(t, imsi, when, qty), rid) for imsi, when, qty, rid in items])
    await Drainer(redis, db, MASTER).run()


async def lines_of(db: Database, tenant: str, number: int) -> dict[str, tuple[Decimal, int, int]]:
    """description -> (quantity, net, tax) of one issued invoice."""
    async with db.tenant(tenant) as conn:
        rows = await conn.fetch(
            "SELECT description, quantity, net, tax FROM invoice_lines WHERE number = $1", number
        )
    return {r["description"]: (r["quantity"], r["net"], r["tax"]) for r in rows}


def numbers(run: RunSummary) -> dict[str, int]:
    """account -> number of its (single, EUR) invoice in ``run``."""
    return {
        inv.account_id: n
        for inv, n in zip(run.invoices, run.numbers, strict=True)
        if inv.currency == "EUR"
    }


async def late_lines(db: Database, tenant: str) -> list[tuple[str, str, Decimal, int]]:
    """(account, description, quantity, net) of every late line issued, in number order."""
    async with db.tenant(tenant) as conn:
        rows = await conn.fetch(
            "SELECT i.account_id, l.description, l.quantity, l.net FROM invoice_lines l"
            " JOIN invoices i USING (tenant_id, number) WHERE l.description LIKE 'Late %'"
            " ORDER BY i.number, l.line_no"
        )
    return [(r["account_id"], r["description"], r["quantity"], r["net"]) for r in rows]


def test_flat_account_is_summed_in_sql(cat: Catalogue) -> None:
    """The flat plan takes the SQL path and biz the record path: both are covered below."""
    rates = flat_rates(cat)
    assert "flat" in rates.plan and "biz" not in rates.plan


async def test_usage_drained_after_the_run_is_a_late_line_of_the_next_invoice(
    redis: Redis, db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    t = cat.tenant.id
    april = await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    first = numbers(april)
    # ngo: 30 MB in March, 10 free, 20 x 10 ct; flatco: 20 MB x 2 ct
    assert (await lines_of(db, t, first["ngo"]))["Data, zone Home network, plan Business data"][
        1
    ] == 200
    assert (await lines_of(db, t, first["flatco"]))["Data, zone Home network, plan Flat data"][
        1
    ] == 40
    # drain lag: March usage reaches PostgreSQL after the March run
    await drained(redis, db, cat, [
        (NGO_SIM, "2025-03-20T10:00:00+00:00", 50 * MB, "late-n;1:1:10"),
        (FLAT_SIM, "2025-03-30T10:00:00+00:00", 30 * MB, "late-f;1:1:10"),
        (FLAT_SIM, "2025-04-20T10:00:00+00:00", 5 * MB, "may-f;1:1:10"),  # its own period
    ])  # fmt: skip
    may = await bill_run(db, cat, cipher, bill_day=10, on=MAY_10)
    second = numbers(may)
    ngo = await lines_of(db, t, second["ngo"])
    # March again with 80 MB: 10 free + 70 x 10 = 700, 200 invoiced: 500 late
    assert ngo[f"Late usage {MARCH}: Data, zone Home network, plan Business data"] == (
        50 * MB,
        500,
        0,
    )
    assert "Data, zone Home network, plan Business data" not in ngo  # no May usage
    flat = await lines_of(db, t, second["flatco"])
    assert flat[f"Late usage {MARCH}: Data, zone Home network, plan Flat data"] == (30 * MB, 60, 0)
    assert flat["Data, zone Home network, plan Flat data"] == (5 * MB, 10, 0)
    # the June run finds nothing late any more
    june = await bill_run(db, cat, cipher, bill_day=10, on=JUNE_10)
    assert june.accounts == 3
    assert len(await late_lines(db, t)) == 2


async def _two_invoices(redis: Redis, db: Database, cat: Catalogue, cipher: TenantCipher) -> int:
    """cust's EUR net of March + the late lines of its May invoice; the late record (50 MB,
    03-12) is stored after the March run and is earlier than every March record."""
    t = cat.tenant.id
    april = await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    march = next(i for i in april.invoices if (i.account_id, i.currency) == ("cust", "EUR"))
    await drained(redis, db, cat, [(CUST_SIM, "2025-03-12T10:00:00+00:00", 50 * MB, "l;1:1:10")])
    may = await bill_run(db, cat, cipher, bill_day=10, on=MAY_10)
    lines = await lines_of(db, t, numbers(may)["cust"])
    late = {d: v for d, v in lines.items() if d.startswith("Late ")}
    # all March usage in event order: 50 MB (10 free, 40 x 10 = 400), 5 MB x 10 = 50,
    # 20 MB x 10 = 200, 100 MB from counter 65 MB: 35 x 10 + 65 x 5 = 675 -> 1325;
    # invoiced 1075 (test_billrun): 250 late, VAT 19 % 47.5 -> 48
    assert late[f"Late usage {MARCH}: Data, zone Home network, plan Business data"] == (
        50 * MB,
        250,
        48,
    )
    # pool: 175 MB used, 75 over = 8 started 10 MB blocks (800); invoiced 300: 500 late
    assert late[f"Late {MARCH}: Pool cust-pool: usage beyond the pool"] == (
        50 * MB,
        500,
        95,
    )
    assert len(late) == 2
    return march.net + sum(net for _, net, _ in late.values())


async def test_tiers_allowance_and_overage_sum_to_the_single_invoice(
    redis: Redis, db: Database, cat: Catalogue, cipher: TenantCipher, tmp_path: Path
) -> None:
    split = await _two_invoices(redis, db, cat, cipher)
    # the same usage, all stored before the run, in another tenant: one invoice
    other = late_catalogue(tmp_path / "single", f"t{uuid.uuid4().hex[:10]}")
    other_cipher = await scenario(redis, db, other)
    await drained(redis, db, other, [(CUST_SIM, "2025-03-12T10:00:00+00:00", 50 * MB, "l;1:2:10")])
    single = await bill_run(db, other, other_cipher, bill_day=10, on=APRIL_10)
    one = next(i for i in single.invoices if (i.account_id, i.currency) == ("cust", "EUR"))
    lines = {line.description: line.net for line in one.lines}
    assert (
        lines["Data, zone Home network, plan Business data"],
        lines["Pool cust-pool: usage beyond the pool"],
    ) == (1325, 800)
    # 6911 (test_billrun) + 250 + 500
    assert split == one.net == 7661


async def test_repeated_and_resumed_runs_charge_late_records_once(
    redis: Redis, db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    t = cat.tenant.id
    await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    await drained(redis, db, cat, [
        (NGO_SIM, "2025-03-20T10:00:00+00:00", 50 * MB, "late-n;1:1:10"),
        (CUST_SIM, "2025-03-12T10:00:00+00:00", 50 * MB, "late-c;1:1:10"),
    ])  # fmt: skip

    async def crash(point: str, account: str) -> None:
        if account == "ngo":
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        await bill_run(db, cat, cipher, bill_day=10, on=MAY_10, hook=crash)
    assert [a for a, *_ in await late_lines(db, t)] == ["cust", "cust"]
    resumed = await bill_run(db, cat, cipher, bill_day=10, on=MAY_10)
    assert (resumed.accounts, resumed.skipped) == (1, 2)  # ngo; cust and flatco were done
    again = await bill_run(db, cat, cipher, bill_day=10, on=MAY_10)
    assert (again.accounts, again.skipped) == (0, 3)
    # an ad-hoc run of an account already billed for the period issues nothing
    adhoc = await bill_run(db, cat, cipher, account="ngo", on=MAY_10)
    assert (adhoc.accounts, adhoc.skipped, adhoc.numbers) == (0, 1, [])
    await bill_run(db, cat, cipher, bill_day=10, on=JUNE_10)
    assert [(a, net) for a, _, _, net in await late_lines(db, t)] == [
        ("cust", 500),  # pool overage (lines in kind order)
        ("cust", 250),
        ("ngo", 500),
    ]


async def test_record_stored_during_the_run_waits_for_the_next_one(
    redis: Redis, db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    """A record stored after the run fixed its watermark is not in that run, even for an
    account the run has not reached yet; the next run charges it as late."""
    t = cat.tenant.id

    async def drain_meanwhile(point: str, account: str) -> None:
        if account == "cust":
            await drained(redis, db, cat, [(NGO_SIM, "2025-04-01T10:00:00+00:00", 15 * MB, "d;1")])

    april = await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10, hook=drain_meanwhile)
    assert (await lines_of(db, t, numbers(april)["ngo"]))[
        "Data, zone Home network, plan Business data"
    ][1] == 200
    may = await bill_run(db, cat, cipher, bill_day=10, on=MAY_10)
    # March with 45 MB: 10 free + 35 x 10 = 350; 200 invoiced
    assert (await lines_of(db, t, numbers(may)["ngo"]))[
        f"Late usage {MARCH}: Data, zone Home network, plan Business data"
    ] == (
        15 * MB,
        150,
        0,
    )


def _ms(when: str) -> int:
    return int(datetime.fromisoformat(when).timestamp() * 1000)


async def _buy(redis: Redis, tag: str, request: str, when: str, ctx: dict[str, Any]) -> None:
    """What the API does for a purchase: one adjust script call defining the bundle's bucket."""
    await redis.sadd(PAYERS, tag)  # type: ignore[misc]
    definition = {"unit": "bytes", "prio": 50, "from": 0, "to": 0, "unlimited": False}
    op = {"op": "define", "id": request, "def": definition, "size": 10**9}
    await BalanceStore(redis).adjust(tag, request, [op], _ms(when), ctx)


async def test_late_purchase_is_charged_once_on_the_next_invoice(
    redis: Redis, db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    t = cat.tenant.id
    await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    tag = payer_tag(t, "postpaid_pool", "cust-pool")
    top = {"api": "auto-top-off", "addon": "acme-topoff-1gb", "price": 450, "currency": "EUR"}
    await _buy(redis, tag, "auto:late", "2025-03-25T10:00:00+00:00", top)
    await Drainer(redis, db, MASTER).run()
    may = await bill_run(db, cat, cipher, bill_day=10, on=MAY_10)
    lines = await lines_of(db, t, numbers(may)["cust"])
    assert lines[f"Late {MARCH}: Auto top-off 1 GB top-off"] == (1, 450, 86)  # VAT 85.5 -> 86
    await bill_run(db, cat, cipher, bill_day=10, on=JUNE_10)
    assert [d for _, d, _, _ in await late_lines(db, t)] == [
        f"Late {MARCH}: Auto top-off 1 GB top-off"
    ]


async def test_preview_shows_late_lines_without_consuming_them(
    redis: Redis, db: Database, cat: Catalogue, cipher: TenantCipher
) -> None:
    t = cat.tenant.id
    await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    await drained(redis, db, cat, [(NGO_SIM, "2025-03-20T10:00:00+00:00", 50 * MB, "p;1:1:10")])
    want = f"Late usage {MARCH}: Data, zone Home network, plan Business data"
    for _ in range(2):  # a preview consumes nothing: the second shows the same
        preview = await bill_run(db, cat, cipher, bill_day=10, on=MAY_10, preview=True)
        ngo = next(i for i in preview.invoices if i.account_id == "ngo")
        assert {ln.description: ln.net for ln in ngo.lines}[want] == 500
        assert preview.numbers == []
    may = await bill_run(db, cat, cipher, bill_day=10, on=MAY_10)
    assert (await lines_of(db, t, numbers(may)["ngo"]))[want][1] == 500
    june = await bill_run(db, cat, cipher, bill_day=10, on=JUNE_10, preview=True)
    assert not [ln for i in june.invoices for ln in i.lines if ln.description.startswith("Late")]


CDR_HEADER = (
    "record_type,charging_id,session_id,imsi,msisdn,start_time,end_time,rating_group,apn,plmn,"
    "rat_type,service,uplink,downlink,units\n"
)


async def test_network_cdr_rated_after_the_run_is_charged_late(
    db: Database, cat: Catalogue, cipher: TenantCipher, tmp_path: Path
) -> None:
    """A never-online CDR imported and rated by reconcile after the March run (batch rating
    stores it in usage_records) follows the same rule."""
    t = cat.tenant.id
    await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    path = tmp_path / "pgw.csv"
    path.write_text(
        CDR_HEADER + f"PGW,9001,,{NGO_SIM},,2025-03-18T09:00:00+00:00,2025-03-18T10:00:00+00:00,"
        "10,iot.demo,26201,EUTRAN,data,,,20000000\n"
    )
    async with db.tenant(t) as conn:
        assert (await import_csv(conn, cipher, path)).imported == 1
        assert (await reconcile(conn, cat, cipher, tolerance_percent=1.0)).rated == 1
    may = await bill_run(db, cat, cipher, bill_day=10, on=MAY_10)
    # March with 50 MB: 10 free + 40 x 10 = 400; 200 invoiced
    lines = await lines_of(db, t, numbers(may)["ngo"])
    assert lines[f"Late usage {MARCH}: Data, zone Home network, plan Business data"] == (
        20 * MB,
        200,
        0,
    )


async def test_watermark_lock_waits_bounded_for_an_inserting_transaction(
    db: Database, cat: Catalogue, cipher: TenantCipher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that keeps its insert transaction open: the run answers with a clear error
    after the lock timeout instead of hanging, and has billed nothing."""
    import ocs.offline.billrun
    import ocs.offline.late

    monkeypatch.setattr(ocs.offline.late, "LOCK_TIMEOUT_S", 1)
    monkeypatch.setattr(ocs.offline.billrun, "LOCK_TIMEOUT_S", 1)
    t = cat.tenant.id
    async with db.tenant(t) as conn:  # open until the run gave up
        await conn.execute(
            "INSERT INTO usage_records (tenant_id, record_key, stream_id, kind, payer, ts)"
            " VALUES ($1, 'usage:open', '0-1', 'usage', 'x', now())",
            t,
        )
        with pytest.raises(BillRunError, match=r"usage_records: .* within 1 s"):
            await bill_run(db, cat, cipher, bill_day=10, on=APRIL_10)
    async with db.tenant(t) as conn:
        assert await conn.fetchval("SELECT count(*) FROM invoices") == 0


def test_period_holding_a_late_record_in_local_time() -> None:
    """Late lines name the period of the account's cycle that holds the record, in the
    tenant's time zone (local midnights, summer time included) and across the year end."""
    berlin = "Europe/Berlin"
    p = period_holding(10, datetime(2025, 3, 9, 23, 0, tzinfo=UTC), berlin)  # 03-10 00:00 CET
    assert (p.start, p.end) == (
        datetime(2025, 3, 9, 23, 0, tzinfo=UTC),
        datetime(2025, 4, 9, 22, 0, tzinfo=UTC),  # 04-10 00:00 CEST
    )
    assert period_label(p, berlin) == "2025-03-10/2025-04-10"
    before = period_holding(10, datetime(2025, 3, 9, 22, 59, 59, tzinfo=UTC), berlin)
    assert period_label(before, berlin) == "2025-02-10/2025-03-10"
    wrap = period_holding(28, datetime(2025, 1, 5, tzinfo=UTC), "UTC")
    assert period_label(wrap, "UTC") == "2024-12-28/2025-01-28"
