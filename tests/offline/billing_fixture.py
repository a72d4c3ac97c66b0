"""A billing scenario on the demo catalogue (tenant time zone UTC for round pro-rata days):
usage is rated with ``ocs.rating.resolve`` exactly as the online path records it, written to
the payer streams, and drained into PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from ocs.balance.keys import PAYERS, PayerKeys, payer_tag
from ocs.offline.crypto import TenantCipher
from ocs.offline.db import Database
from ocs.offline.drain import Drainer
from ocs.rating import ServiceKind, UsageContext, resolve
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import load_catalogue
from tests.offline.conftest import MASTER, catalogue_folder, synced

EXTRA = """
tax_profiles:
  - {id: exempt, name: Exempt, rate_percent: "0"}
plans:
  - id: biz
    name: Business data
    currency: EUR
    versions:
      - effective_from: "2024-01-01T00:00:00+00:00"
        zone_set: retail
        tax_profile: de-vat
        rounding: half_up
        allowances: [{id: inc, service: data, zones: [home], units: 10000000}]
        tariffs:
          - {service: data, zone: home, per: 1000000, increment: 1000000,
             rates: {any: {tiers: [{from: 0, price: "10"}, {from: 100000000, price: "5"}]}}}
          - {service: event, zone: "*",
             rates: {any: {tiers: [{from: 0, price: "1"}, {from: 100, price: "0.5"}]}}}
        recurring_fees: [{id: sim-fee, amount: 1000, period: month}]
        one_time_fees: [{id: activation, amount: 500, charged_on: activation}]
accounts:
  - {id: cust, name: Cust GmbH, kind: enterprise, payment: postpaid, currency: EUR,
     tax_profile: de-vat, accounting_group: b2b, bill_day: 10}
  - {id: ngo, name: Charity e.V., kind: enterprise, payment: postpaid, currency: EUR,
     tax_profile: exempt, accounting_group: b2b, bill_day: 10}
pools:
  - {id: cust-pool, account: cust, kind: static, payment: postpaid, service: data,
     unit: bytes, size: 0}
  - {id: cust-events, account: cust, kind: static, payment: postpaid, service: event,
     unit: events, size: 0}
  - {id: ngo-pool, account: ngo, kind: static, payment: postpaid, service: data,
     unit: bytes, size: 0}
sims:
  - imsi: "262019000000001"
    msisdn: "491709000001"
    account: cust
    twins:
      - {id: data, priority: 10, filter: {service: [data]},
         payer: {kind: postpaid_pool, id: cust-pool},
         plans: [{plan: biz, from: "2024-01-01T00:00:00+00:00"}]}
  - imsi: "262019000000002"
    account: cust
    twins:
      - {id: events, priority: 10, filter: {service: [event]},
         payer: {kind: postpaid_pool, id: cust-events},
         plans: [{plan: biz, from: "2025-03-20T00:00:00+00:00"}]}
  - imsi: "262019000000003"
    account: cust
    twins:
      - {id: data, payer: {kind: postpaid_pool, id: cust-pool},
         plans: [{plan: biz, from: "2024-01-01T00:00:00+00:00"}]}
  - imsi: "262019000000004"
    account: ngo
    twins:
      - {id: data, payer: {kind: postpaid_pool, id: ngo-pool},
         plans: [{plan: biz, from: "2024-01-01T00:00:00+00:00"}]}
"""

TERMS_POOL = (
    # 100 MB static pool: 20.00 a month, 1.00 per started 10 MB beyond
    ("cust-pool", "cust", "static", 2000, 100_000_000, 0, 10_000_000, 100, "[]"),
)


def billing_catalogue(folder: Path, tenant: str) -> Catalogue:
    path = catalogue_folder(folder, tenant, EXTRA)
    tenant_file = path / "tenant.yaml"
    tenant_file.write_text(tenant_file.read_text().replace("Europe/Berlin", "UTC"))
    return load_catalogue(path)


def record_fields(catalogue: Catalogue, ctx: UsageContext, rid: str) -> tuple[str, dict[str, str]]:
    """(payer tag, stream fields) as the charging application records a committed usage."""
    res = resolve(catalogue, ctx)
    levels = [
        {
            "level": q.level, "buyer": q.buyer, "seller": q.seller,
            "payer": f"{q.payer.kind}:{q.payer.id}", "plan": q.plan_id, "zone": q.zone,
            "band": q.band, "currency": q.currency, "amount": q.price(ctx.quantity).amount,
        }
        for q in res.quotes
    ]  # fmt: skip
    body: dict[str, Any] = {
        "session": rid.split(";", maxsplit=1)[0], "n": 1, "rg": ctx.rating_group, "imsi": res.imsi,
        "msisdn": ctx.msisdn, "twin": res.twin, "subscription": res.subscription,
        "account": res.account, "service": str(ctx.service), "levels": levels,
    }  # fmt: skip
    tag = payer_tag(catalogue.tenant.id, str(res.payer.kind), res.payer.id)
    unit = {"data": "bytes", "event": "events", "sms": "messages"}[str(ctx.service)]
    ms = int(ctx.event_time.timestamp() * 1000)
    return tag, {
        "kind": "usage", "id": rid, "payer": tag, "ts": str(ms), "unit": unit,
        "units": str(ctx.quantity), "money": "0", "overrun": "0", "alloc": "[]",
        "ctx": json.dumps(body),
    }  # fmt: skip


def usage(tenant: str, imsi: str, when: str, qty: int, service: str = "data") -> UsageContext:
    return UsageContext(
        tenant=tenant, imsi=imsi, event_time=datetime.fromisoformat(when),
        service=ServiceKind(service), quantity=qty,
        apn="iot.demo" if service == "data" else None, rating_group=10,
    )  # fmt: skip


async def record(redis: Redis, catalogue: Catalogue, items: list[tuple[UsageContext, str]]) -> None:
    for ctx, rid in items:
        tag, fields = record_fields(catalogue, ctx, rid)
        await redis.sadd(PAYERS, tag)  # type: ignore[misc]
        await redis.xadd(PayerKeys(tag).stream, fields)  # type: ignore[arg-type]


async def scenario(redis: Redis, db: Database, catalogue: Catalogue) -> TenantCipher:
    """The usage, pool terms, events, top-off and one-time charges of the hand-checked run."""
    t = catalogue.tenant.id
    cipher = await synced(db, catalogue)
    mb = 1_000_000
    await record(redis, catalogue, [
        (usage(t, "262019000000001", "2025-03-15T10:00:00+00:00", 5 * mb), "a;1:1:10"),
        (usage(t, "262019000000001", "2025-03-16T10:00:00+00:00", 20 * mb), "a;1:2:10"),
        (usage(t, "262019000000001", "2025-03-17T10:00:00+00:00", 100 * mb), "a;1:3:10"),
        (usage(t, "262019000000002", "2025-03-21T10:00:00+00:00", 150, "event"), "e;1:1:10"),
        (usage(t, "262019000000001", "2025-04-10T00:00:00+00:00", 7 * mb), "next;1:1:10"),
        (usage(t, "262019000000004", "2025-03-15T10:00:00+00:00", 30 * mb), "n;1:1:10"),
        # B2B2B: farm-co SIM by day (agri-retail 4 ct/MB; wholesale 0.8 ct/MB)
        (usage(t, "262010000100000", "2025-03-20T12:00:00+00:00", 10 * mb), "f;1:1:10"),
        # acme-iot SIM: prepaid pool, EU roaming surcharge (bill day 1, other cycle)
    ])  # fmt: skip
    await Drainer(redis, db, MASTER).run()
    async with db.tenant(t) as conn:
        await conn.executemany(
            "INSERT INTO pool_terms (tenant_id, pool_id, account_id, kind, currency, payer, fee,"
            " size, per_sim, overage_per, overage_price, ladder)"
            " VALUES ($1,$2,$3,$4,'EUR',$5,$6,$7,$8,$9,$10,$11::text::jsonb)",
            [
                (t, p, a, k, payer_tag(t, "postpaid_pool", p), *rest)
                for p, a, k, *rest in TERMS_POOL
            ],
        )
        # SIM 3 suspended on 2025-03-25 00:00
        await conn.execute(
            "INSERT INTO subscription_events (tenant_id, sub_id, at, status, account_id)"
            " SELECT tenant_id, sub_id, '2025-03-25T00:00:00+00:00', 'suspended', account_id"
            " FROM subscriptions WHERE imsi_bidx = $1",
            cipher.bidx("262019000000003"),
        )
        await conn.execute(
            "INSERT INTO topoff_purchases (tenant_id, purchase_key, account_id, addon_id, at)"
            " VALUES ($1, 'p1', 'cust', 'acme-topoff-1gb', '2025-03-12T08:00:00+00:00')",
            t,
        )
        await conn.executemany(
            "INSERT INTO one_time_charges (tenant_id, account_id, at, description, amount,"
            " currency, product_class) VALUES ($1, 'cust', $2, $3, $4, $5, $6)",
            [
                (
                    t,
                    datetime.fromisoformat("2025-03-11T00:00:00+00:00"),
                    "SIM swap",
                    250,
                    "EUR",
                    "goods",
                ),
                (
                    t,
                    datetime.fromisoformat("2025-03-11T00:00:00+00:00"),
                    "US roaming setup",
                    1000,
                    "USD",
                    "service",
                ),
            ],
        )
    return cipher
