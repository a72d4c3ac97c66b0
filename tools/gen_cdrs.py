"""Generate the offline-billing benchmark tenant.

* a catalogue folder (``--catalogue``): tenant ``bench``, ``--accounts`` enterprise accounts
  on bill day 1, each with a postpaid pool and one SIM range (``--subs`` SIMs in all); a
  reseller above ``--resold-percent`` of them (B2B2B: their usage is rated twice); plans
  ``iot-flat`` (one price per zone: aggregable) and, for ``--tiered-percent`` of the
  accounts, ``iot-tiered`` (graduated tiers and an allowance: re-rated record by record);
* a dedicated database (``--url``, default ``ocs_bench``, dropped and re-created), migrated
  and synced with ``ocs.offline.sync`` like ``ocs catalog sync`` does;
* ``--records`` usage records in March 2025 loaded with one text ``COPY`` fed by a
  generator (secondary indexes and the primary key are rebuilt after the load, then
  ``VACUUM ANALYZE``), shaped exactly like drained online records: the per-level context
  comes from ``ocs.rating.resolve`` on a SIM of the same account and zone;
* ``--stream-records`` records (April 2025, not in the benchmark's bill period) appended to
  the pool payers' Redis streams for the drain benchmark (Redis ``--redis-url``, a database
  number of its own that must be empty or hold a previous benchmark's keys).

    .venv/bin/python tools/gen_cdrs.py            # 100,000 subscriptions, 10,000,000 records
    .venv/bin/python tools/gen_cdrs.py --subs 1000 --records 100000 --stream-records 10000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis.asyncio import Redis

from ocs.balance.keys import PAYERS, PayerKeys, payer_tag
from ocs.offline.crypto import tenant_cipher
from ocs.offline.db import enter_tenant, migrate
from ocs.offline.sync import sync_catalogue, upsert_tenant
from ocs.offline.terms import BillingTerms, PoolTerms
from ocs.rating import ServiceKind, UsageContext, resolve
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import load_catalogue

TENANT: Final = "bench"
DEFAULT_URL: Final = "postgresql://postgres@127.0.0.1:5432/ocs_bench"
DEFAULT_REDIS: Final = "redis://127.0.0.1:6379/15"
DEFAULT_FOLDER: Final = Path("/tmp/ocs-bench-catalogue")
MASTER: Final = hashlib.sha256(b"ocs offline benchmark master key").digest()
PERIOD_START: Final = datetime(2025, 3, 1, tzinfo=UTC)  # cycle 1, run on 2025-04-01
PERIOD_SECONDS: Final = 31 * 86400
STREAM_START: Final = datetime(2025, 4, 2, tzinfo=UTC)  # next period: not billed
RESELLER: Final = "bench-reseller"
# (zone name, MCC, MNC, share in percent)
VISITED: Final = (("home", "262", "01", 80), ("eu", "208", "01", 15), ("world", "310", "260", 5))
CHUNK: Final = 5_000  # rows per COPY chunk

CATALOGUE_HEAD: Final = """
tenant: {id: bench, name: Benchmark IoT, home_network: "26201", time_zone: UTC, currency: EUR}
countries:
  - {code: DE, mcc: ["262"]}
  - {code: FR, mcc: ["208"]}
  - {code: US, mcc: ["310"]}
tax_profiles:
  - {id: de-vat, name: German VAT, rate_percent: "19"}
  - {id: reverse-charge, name: Reverse charge, rate_percent: "0"}
zone_sets:
  - id: retail
    default: world
    zones:
      - {id: home, networks: ["26201"]}
      - {id: eu, countries: [FR]}
      - {id: world}
  - id: wholesale
    default: roam
    zones:
      - {id: domestic, countries: [DE]}
      - {id: roam}
plans:
  - id: iot-flat
    currency: EUR
    versions:
      - effective_from: "2024-01-01T00:00:00+00:00"
        zone_set: retail
        tax_profile: de-vat
        rounding: up
        tariffs:
          - {service: data, zone: home, per: 1000000, increment: 1000,
             rates: {any: {tiers: [{from: 0, price: "0.2"}]}}}
          - {service: data, zone: eu, per: 1000000, increment: 1000, minimum_charge: 1,
             rates: {any: {tiers: [{from: 0, price: "0.5"}]}}}
          - {service: data, zone: world, per: 1000000, increment: 100000,
             rates: {any: {tiers: [{from: 0, price: "5"}]}}}
        recurring_fees: [{id: sim-fee, amount: 100, period: month}]
  - id: iot-tiered
    currency: EUR
    versions:
      - effective_from: "2024-01-01T00:00:00+00:00"
        zone_set: retail
        tax_profile: de-vat
        rounding: half_up
        allowances: [{id: inc, service: data, zones: [home], units: 50000000}]
        tariffs:
          - {service: data, zone: home, per: 1000000, increment: 10000, counter: tiered,
             rates: {any: {tiers: [{from: 0, price: "1"}, {from: 100000000, price: "0.5"}]}}}
          - {service: data, zone: "*", per: 1000000, increment: 10000, counter: tiered,
             rates: {any: {tiers: [{from: 0, price: "3"}, {from: 100000000, price: "2"}]}}}
        recurring_fees: [{id: sim-fee, amount: 150, period: month}]
  - id: wholesale-iot
    currency: EUR
    versions:
      - effective_from: "2024-01-01T00:00:00+00:00"
        zone_set: wholesale
        rounding: up
        tariffs:
          - {service: data, zone: domestic, per: 1000000, increment: 1000,
             rates: {any: {tiers: [{from: 0, price: "0.1"}]}}}
          - {service: data, zone: roam, per: 1000000, increment: 1000,
             rates: {any: {tiers: [{from: 0, price: "0.3"}]}}}
"""


@dataclass(frozen=True, slots=True)
class Layout:
    accounts: int
    subs: int
    tiered_percent: int
    resold_percent: int

    @property
    def per_account(self) -> int:
        return self.subs // self.accounts

    def account(self, i: int) -> str:
        return f"acc-{i:05d}"

    def pool(self, i: int) -> str:
        return f"pool-{i:05d}"

    def tiered(self, i: int) -> bool:
        return i % 100 < self.tiered_percent

    def resold(self, i: int) -> bool:
        return (i + 50) % 100 < self.resold_percent

    def imsi(self, i: int, k: int) -> str:
        return f"26201{i * self.per_account + k:010d}"


def catalogue_yaml(layout: Layout) -> str:
    out = [CATALOGUE_HEAD, "accounts:"]
    out.append(
        f"  - {{id: {RESELLER}, kind: reseller, payment: postpaid, currency: EUR,"
        " tax_profile: reverse-charge, accounting_group: wholesale, bill_day: 1,"
        ' plans: [{plan: wholesale-iot, from: "2024-01-01T00:00:00+00:00"}],'
        " payer: {kind: postpaid_pool, id: reseller-pool}}"
    )
    for i in range(layout.accounts):
        parent = f", parent: {RESELLER}" if layout.resold(i) else ""
        out.append(
            f"  - {{id: {layout.account(i)}, kind: enterprise, payment: postpaid,"
            f" currency: EUR, tax_profile: de-vat, accounting_group: iot, bill_day: 1{parent}}}"
        )
    out.append("pools:")
    out.append(
        f"  - {{id: reseller-pool, account: {RESELLER}, kind: static, payment: postpaid,"
        " service: data, unit: bytes, size: 0}"
    )
    for i in range(layout.accounts):
        out.append(
            f"  - {{id: {layout.pool(i)}, account: {layout.account(i)}, kind: static,"
            " payment: postpaid, service: data, unit: bytes, size: 10000000000}"
        )
    out.append("sim_ranges:")
    for i in range(layout.accounts):
        plan = "iot-tiered" if layout.tiered(i) else "iot-flat"
        out.append(
            f'  - {{id: r{i:05d}, imsi_first: "{layout.imsi(i, 0)}",'
            f" count: {layout.per_account}, account: {layout.account(i)},"
            f" twins: [{{id: data, payer: {{kind: postpaid_pool, id: {layout.pool(i)}}},"
            f' plans: [{{plan: {plan}, from: "2024-01-01T00:00:00+00:00"}}]}}]}}'
        )
    return "\n".join(out) + "\n"


def terms(layout: Layout) -> BillingTerms:
    pools = [
        PoolTerms(
            pool=layout.pool(i),
            kind="static",
            fee=4900,
            size=10_000_000_000,
            overage_per=1_000_000,
            overage_price=50,
        )
        for i in range(layout.accounts)
    ]
    return BillingTerms(pools=pools)


def level_templates(catalogue: Catalogue, layout: Layout) -> list[list[tuple[str, Any]]]:
    """Per account and visited zone: the JSON prefix of the record context's levels and
    the quotes (to price each record's levels like the online path records them)."""
    out = []
    for i in range(layout.accounts):
        per_zone = []
        for _zone, mcc, mnc, _share in VISITED:
            ctx = UsageContext(
                tenant=TENANT,
                imsi=layout.imsi(i, 0),
                event_time=PERIOD_START + timedelta(days=1),
                service=ServiceKind.DATA,
                quantity=1,
                apn="iot.bench",
                rating_group=10,
                mcc=mcc,
                mnc=mnc,
            )
            res = resolve(catalogue, ctx)
            per_zone.append((res.account, res.quotes))
        out.append(per_zone)
    return out


def levels_json(quotes: Any, units: int) -> str:
    return json.dumps(
        [
            {
                "level": q.level, "buyer": q.buyer, "seller": q.seller,
                "payer": f"{q.payer.kind}:{q.payer.id}", "plan": q.plan_id, "zone": q.zone,
                "band": q.band, "currency": q.currency, "amount": q.price(units).amount,
            }
            for q in quotes
        ],
        separators=(",", ":"),
    )  # fmt: skip


def zone_index(rng: random.Random) -> int:
    roll = rng.randrange(100)
    acc = 0
    for n, (_z, _c, _n, share) in enumerate(VISITED):
        acc += share
        if roll < acc:
            return n
    return 0


def usage_lines(
    catalogue: Catalogue, layout: Layout, bidx: list[bytes], first: int, last: int, seed: int
) -> Iterator[bytes]:
    """Text COPY chunks of records ``first`` .. ``last - 1`` (deterministic per seed)."""
    templates = level_templates(catalogue, layout)
    rng = random.Random(seed * 1_000_003 + first)
    tags = [payer_tag(TENANT, "postpaid_pool", layout.pool(i)) for i in range(layout.accounts)]
    bhex = ["\\\\x" + b.hex() for b in bidx]
    days = [(PERIOD_START + timedelta(days=d)).strftime("%Y-%m-%d") for d in range(32)]
    per = layout.per_account
    memo: dict[tuple[int, int, int], str] = {}
    lines: list[str] = []
    for n in range(first, last):
        sub = rng.randrange(layout.subs)
        acc = sub // per
        zone = zone_index(rng)
        account, quotes = templates[acc][zone]
        units = rng.randrange(1, 2_000_000)
        amount = quotes[0].price(units).amount
        levels = memo.get((acc, zone, amount))
        if levels is None:
            levels = memo[(acc, zone, amount)] = levels_json(quotes, units)
        off = rng.randrange(PERIOD_SECONDS * 1_000_000)
        sec, micro = divmod(off, 1_000_000)
        day, sec = divmod(sec, 86400)
        hour, sec = divmod(sec, 3600)
        minute, sec = divmod(sec, 60)
        session = f"b{sub}-{n >> 4}"
        lines.append(
            f"{TENANT}\tusage:{session};1:{n}:10\tgen/{n}\tusage\t{tags[acc]}\t"
            f"{days[day]} {hour:02}:{minute:02}:{sec:02}.{micro:06}+00\tbytes\t{units}\t0\t0\t"
            f"{session}\t10\t{bhex[sub]}\tdata\t{account}\tdata\t[]\t"
            f'{{"session":"{session}","n":1,"rg":10,"twin":"data","account":"{account}",'
            f'"service":"data","levels":{levels}}}\tonline\n'
        )
        if len(lines) == CHUNK:
            yield "".join(lines).encode()
            lines = []
    if lines:
        yield "".join(lines).encode()


def copy_part(url: str, folder: Path, layout: Layout, first: int, last: int, seed: int) -> float:
    """One loader process: generate records ``first .. last - 1`` and COPY them."""
    catalogue = load_catalogue(folder)

    async def run() -> float:
        conn = await asyncpg.connect(url)
        try:
            await enter_tenant_key(conn)
            cipher = await tenant_cipher(conn, TENANT, MASTER)
            bidx = [cipher.bidx(layout.imsi(s // layout.per_account, s % layout.per_account))
                    for s in range(layout.subs)]  # fmt: skip
            started = time.perf_counter()

            async def source() -> AsyncIterator[bytes]:
                for chunk in usage_lines(catalogue, layout, bidx, first, last, seed):
                    yield chunk

            await conn.copy_to_table(
                "usage_records", source=source(), columns=COPIED, format="text"
            )  # seq (migration 0006) from its default
            return time.perf_counter() - started
        finally:
            await conn.close()

    return asyncio.run(run())


async def enter_tenant_key(conn: asyncpg.Connection[Any]) -> None:
    await conn.execute("SELECT set_config('app.tenant', $1, false)", TENANT)


COPIED: Final = (
    "tenant_id", "record_key", "stream_id", "kind", "payer", "ts", "unit", "units", "money",
    "overrun", "session_id", "rating_group", "imsi_bidx", "twin", "account_id", "service",
    "alloc", "ctx", "source",
)  # fmt: skip
INDEXES: Final = (
    "ALTER TABLE usage_records ADD PRIMARY KEY (tenant_id, record_key)",
    "CREATE INDEX usage_records_account_ts ON usage_records (tenant_id, account_id, ts)",
    "CREATE INDEX usage_records_session ON usage_records (tenant_id, session_id)",
)


async def load_database(args: argparse.Namespace, catalogue: Catalogue, layout: Layout) -> None:
    parts = urlsplit(args.url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(args.url)
    try:
        await migrate(conn)
        async with conn.transaction():
            await enter_tenant(conn, TENANT)
            await upsert_tenant(conn, TENANT, "Benchmark IoT", "DE", "UTC", "EUR")
            cipher = await tenant_cipher(conn, TENANT, MASTER)
            summary = await sync_catalogue(
                conn, catalogue, cipher, terms(layout), now=PERIOD_START - timedelta(days=30)
            )
        print(f"synced: {summary}", flush=True)
        await conn.execute("ALTER TABLE usage_records DROP CONSTRAINT usage_records_pkey")
        await conn.execute("DROP INDEX usage_records_account_ts, usage_records_session")
        # (migration 0004 dropped the tenant foreign key; older schemas: drop it too)
        await conn.execute(
            "ALTER TABLE usage_records DROP CONSTRAINT IF EXISTS usage_records_tenant_id_fkey"
        )
        started = time.perf_counter()
        step = -(-args.records // args.loaders)
        parts = [(i, min(args.records, i + step)) for i in range(0, args.records, step)]
        with ProcessPoolExecutor(len(parts)) as pool:
            futures = [
                pool.submit(copy_part, args.url, args.catalogue, layout, a, b, args.seed)
                for a, b in parts
            ]
            for fut in futures:
                fut.result()
        print(f"copied {args.records} records in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        for sql in INDEXES:
            await conn.execute(sql)
        await conn.execute("VACUUM ANALYZE usage_records")
        await conn.execute("CHECKPOINT")
        print(f"indexes + vacuum in {time.perf_counter() - started:.1f} s", flush=True)
    finally:
        await conn.close()


async def load_streams(args: argparse.Namespace, catalogue: Catalogue, layout: Layout) -> None:
    redis = Redis.from_url(args.redis_url)
    try:
        keys = await redis.dbsize()
        ours = await redis.exists(PAYERS)
        if keys and not ours:
            raise SystemExit(f"{args.redis_url}: not empty and not a benchmark database")
        if keys:
            await redis.flushdb()
        templates = level_templates(catalogue, layout)
        rng = random.Random(args.seed + 1)
        streams = min(args.streams, layout.accounts)
        tags = [payer_tag(TENANT, "postpaid_pool", layout.pool(i)) for i in range(streams)]
        await redis.sadd(PAYERS, *tags)
        base = int(STREAM_START.timestamp() * 1000)
        pipe = redis.pipeline(transaction=False)
        for n in range(args.stream_records):
            acc = n % streams
            k = rng.randrange(layout.per_account)
            imsi = layout.imsi(acc, k)
            account, quotes = templates[acc][zone_index(rng)]
            units = rng.randrange(1, 2_000_000)
            session = f"d{acc}-{k}-{n // 16}"
            ctx = {
                "session": session, "n": 1, "rg": 10, "imsi": imsi,
                "msisdn": None, "twin": "data", "subscription": f"{imsi}/data",
                "account": account, "service": "data",
                "levels": json.loads(levels_json(quotes, units)),
            }  # fmt: skip
            fields = {
                "kind": "usage", "id": f"{session};1:{n}:10", "payer": tags[acc],
                "ts": str(base + n), "unit": "bytes", "units": str(units), "money": "0",
                "overrun": "0", "alloc": json.dumps([["b1", str(units)]]),
                "ctx": json.dumps(ctx),
            }  # fmt: skip
            pipe.xadd(PayerKeys(tags[acc]).stream, fields)  # type: ignore[arg-type]
            if len(pipe) >= 5000:
                await pipe.execute()
        await pipe.execute()
        print(f"streams: {args.stream_records} records in {streams} streams", flush=True)
    finally:
        await redis.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--redis-url", default=DEFAULT_REDIS)
    ap.add_argument("--catalogue", type=Path, default=DEFAULT_FOLDER)
    ap.add_argument("--subs", type=int, default=100_000)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--tiered-percent", type=int, default=10)
    ap.add_argument("--resold-percent", type=int, default=10)
    ap.add_argument("--stream-records", type=int, default=500_000)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--loaders", type=int, default=2, help="generator + COPY processes")
    ap.add_argument("--only", choices=("db", "streams"), default=None)
    args = ap.parse_args()
    layout = Layout(args.accounts, args.subs, args.tiered_percent, args.resold_percent)
    args.catalogue.mkdir(parents=True, exist_ok=True)
    (args.catalogue / "bench.yaml").write_text(catalogue_yaml(layout))
    started = time.perf_counter()
    catalogue = load_catalogue(args.catalogue)
    print(f"catalogue loaded in {time.perf_counter() - started:.1f} s", flush=True)
    if args.only in (None, "db"):
        asyncio.run(load_database(args, catalogue, layout))
    if args.only in (None, "streams"):
        asyncio.run(load_streams(args, catalogue, layout))


if __name__ == "__main__":
    main()
