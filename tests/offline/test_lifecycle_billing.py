"""The balance lifecycle on the invoice: auto top-offs bought by the real ``charge.lua``, a
renewal charged to the invoice by the lifecycle pass, and the tier an adaptive pool reached,
drained and billed. Time is injected into every script call."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

from redis.asyncio import Redis

from ocs.balance import BalanceStore
from ocs.balance.keys import payer_tag
from ocs.lifecycle import Lifecycle
from ocs.offline.billrun import bill_run
from ocs.offline.db import Database
from ocs.offline.drain import Drainer
from ocs.provisioning.payers import lifecycle_rules, provision_catalogue
from ocs.rating.loader import load_catalogue
from tests.balance.helpers import charge
from tests.offline.conftest import MASTER, catalogue_folder, synced

EXTRA = """
addons:
  - {id: boost, name: Boost 1k, currency: EUR, price: 250, service: data, units: 1000,
     validity_days: 30}
accounts:
  - {id: ada, name: Ada GmbH, kind: enterprise, payment: postpaid, currency: EUR,
     tax_profile: de-vat, accounting_group: b2b, bill_day: 10, time_zone: UTC}
pools:
  - {id: ada-topped, account: ada, size: 1000, auto_top_off: {addon: boost, max_per_period: 5}}
  - {id: ada-ladder, account: ada, kind: adaptive, size: 1000, tiers: [3000, 6000],
     renewal: {fee: 0}}
  - {id: ada-monthly, account: ada, size: 1000, renewal: {fee: 1200}}
"""
# adaptive ladder fees (billing terms): 10.00 up to 1000 units, 25.00 to 3000, 40.00 to 6000
LADDER = [{"up_to": 1000, "fee": 1000}, {"up_to": 3000, "fee": 2500}, {"up_to": 6000, "fee": 4000}]


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


async def test_auto_top_offs_renewal_and_tier_reached_on_the_invoice(
    redis: Redis, db: Database, tmp_path: Path, tenant: str
) -> None:
    folder = catalogue_folder(tmp_path / "cat", tenant, EXTRA)
    cat = load_catalogue(folder)
    cipher = await synced(db, cat)
    store = BalanceStore(redis)
    await provision_catalogue(store, cat, str(folder), now_ms=ms("2025-03-12T00:00:00"))
    topped = payer_tag(tenant, "prepaid_pool", "ada-topped")
    ladder = payer_tag(tenant, "prepaid_pool", "ada-ladder")

    # two auto top-offs in March
    t = ms("2025-03-15T10:00:00")
    await charge(store, topped, "t1", want=1000, now=t)
    await charge(store, topped, "t2", used=1000, want=1000, now=t + 1)
    await charge(store, topped, "t3", used=1000, want=1000, now=t + 2)
    # the adaptive pool steps to its last tier for a big reservation, of which only 2500 is
    # used: usage alone would be billed at the 3000 step, the tier reached is 6000
    await charge(store, ladder, "a1", want=4000, now=t)
    await charge(store, ladder, "a2", used=2500, now=t + 1)
    state = await Lifecycle(redis).state(ladder)
    assert state is not None and state["tier"] == 2

    # the bill day: the monthly pool renews for the next period, billed on that invoice
    await Lifecycle(redis).run_once(lifecycle_rules(cat), ms("2025-04-10T00:00:01"))
    await Drainer(redis, db, MASTER).run()
    async with db.tenant(tenant) as conn:
        await conn.execute(
            "INSERT INTO pool_terms (tenant_id, pool_id, account_id, kind, currency, payer, fee,"
            " size, per_sim, overage_per, overage_price, ladder)"
            " VALUES ($1, 'ada-ladder', 'ada', 'adaptive', 'EUR', $2, 0, 0, 0, 1000, 0,"
            " $3::text::jsonb)",
            tenant,
            ladder,
            json.dumps(LADDER),
        )

    march = await bill_run(db, cat, cipher, bill_day=10, on=date(2025, 4, 10), account="ada")
    april = await bill_run(db, cat, cipher, bill_day=10, on=date(2025, 5, 10), account="ada")
    lines = {}
    async with db.tenant(tenant) as conn:
        for r in await conn.fetch(
            "SELECT i.period_start, l.kind, l.description, l.quantity, l.net FROM invoice_lines l"
            " JOIN invoices i USING (tenant_id, number) WHERE i.account_id = 'ada'"
            " ORDER BY i.number, l.line_no"
        ):
            lines[(r["period_start"].month, r["kind"], r["description"])] = (
                int(r["quantity"]),
                r["net"],
            )
    assert lines[(3, "topoff", "Auto top-off Boost 1k")] == (2, 500)
    assert lines[(3, "pool", "Adaptive pool ada-ladder: tier up to 6,000 units")] == (1, 4000)
    assert lines[(4, "renewal", "Renewal pool ada-monthly (2025-04-10T00:00:00Z)")] == (1, 1200)
    assert not any(k[0] == 3 and k[1] == "renewal" for k in lines)  # the fee-0 ladder renewal
    assert len(march.invoices) == 1 and len(april.invoices) == 1
