"""Copy a compiled catalogue (tenant, accounts, SIM twins) and billing terms into the
offline database. Idempotent: rows are upserted; a twin's status change is recorded as a
subscription event so recurring fees are pro-rated from the instant it was seen. A twin's
status is its SIM's lifecycle state, or the twin's own while the SIM is active
(docs/sim-states.md): recurring fees run while it is active only."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel

from ocs.balance.keys import payer_tag
from ocs.offline.crypto import TenantCipher
from ocs.offline.db import Connection
from ocs.offline.terms import PARTY_FIELDS, BillingTerms, Party
from ocs.rating.catalogue import Catalogue


@dataclass(frozen=True, slots=True)
class SyncSummary:
    accounts: int
    subscriptions: int
    tax_rules: int
    pools: int


def _treatment(profile_id: str) -> str:
    """Default treatment of a catalogue tax profile without explicit rules."""
    if "reverse" in profile_id:
        return "reverse_charge"
    if "exempt" in profile_id:
        return "exempt"
    return "standard"


async def sync_catalogue(
    conn: Connection,
    catalogue: Catalogue,
    cipher: TenantCipher,
    terms: BillingTerms,
    *,
    now: datetime | None = None,
) -> SyncSummary:
    """Upsert everything of ``catalogue``'s tenant; ``conn`` is in that tenant's transaction."""
    tenant = catalogue.tenant
    tid = tenant.id
    now = now or datetime.now(UTC)
    home_country = catalogue.mcc_country.get(tenant.home_network[:3], "")
    seller = terms.seller
    own = tenant.invoice
    await upsert_tenant(
        conn,
        tid,
        tenant.name,
        (own.country if own else None) or seller.country or home_country,
        tenant.time_zone,
        tenant.currency,
        party=_merged(_party(seller), own),
    )
    acc_rows = []
    for acc in catalogue.accounts.values():
        extra = terms.accounts.get(acc.id)
        mine = acc.invoice
        country = (
            (mine.country if mine else None)
            or (extra.country if extra and extra.country else None)
            or home_country
        )
        template = extra.template if extra else "standard"
        language = (mine.language if mine else None) or (extra.language if extra else "en")
        acc_rows.append(
            (
                tid,
                acc.id,
                acc.name,
                acc.parent,
                acc.kind,
                acc.payment,
                acc.currency,
                acc.tax_profile,
                country,
                acc.accounting_group,
                acc.bill_day,
                template,
                language,
                _json(_merged(_party(extra) if extra else {}, mine)),
            )
        )
    await conn.executemany(
        "INSERT INTO accounts (tenant_id, account_id, name, parent_id, kind, payment, currency,"
        " tax_profile, country, accounting_group, bill_day, template, language, party)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14::text::jsonb)"
        " ON CONFLICT (tenant_id, account_id) DO UPDATE SET name = EXCLUDED.name,"
        " parent_id = EXCLUDED.parent_id, kind = EXCLUDED.kind, payment = EXCLUDED.payment,"
        " currency = EXCLUDED.currency, tax_profile = EXCLUDED.tax_profile,"
        " country = EXCLUDED.country, accounting_group = EXCLUDED.accounting_group,"
        " bill_day = EXCLUDED.bill_day, template = EXCLUDED.template,"
        " language = EXCLUDED.language, party = EXCLUDED.party",
        acc_rows,
    )
    subs = await _sync_subscriptions(conn, catalogue, cipher, now)
    rules = {
        (p.id, "*", "*"): (p.rate_percent, _treatment(p.id), "")
        for p in catalogue.tax_profiles.values()
    }
    for rule in terms.tax_rules:
        rules[(rule.profile, rule.country, rule.product_class)] = (
            rule.rate_percent,
            rule.treatment,
            rule.note,
        )
    await conn.executemany(
        "INSERT INTO tax_rules (tenant_id, profile, country, product_class, rate_percent,"
        " treatment, note) VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (tenant_id, profile,"
        " country, product_class) DO UPDATE SET rate_percent = EXCLUDED.rate_percent,"
        " treatment = EXCLUDED.treatment, note = EXCLUDED.note",
        [(tid, p, c, k, r, t, n) for (p, c, k), (r, t, n) in rules.items()],
    )
    pool_rows = []
    for pt in terms.pools:
        pool = catalogue.pools.get(pt.pool)
        if pool is None:
            continue
        currency = catalogue.accounts[pool.account].currency
        size = pool.size if pt.size is None else pt.size
        ladder = [{"up_to": s.up_to, "fee": s.fee} for s in pt.ladder]
        pool_rows.append(
            (
                tid,
                pt.pool,
                pool.account,
                pt.kind,
                currency,
                payer_tag(tid, f"{pool.payment}_pool", pool.id),
                pt.fee,
                size,
                pt.per_sim,
                pt.overage_per,
                pt.overage_price,
                ladder,
            )
        )
    await upsert_pool_terms(conn, pool_rows)
    return SyncSummary(len(acc_rows), subs, len(rules), len(pool_rows))


async def upsert_tenant(
    conn: Connection,
    tid: str,
    name: str,
    country: str,
    tz: str,
    currency: str,
    *,
    party: dict[str, object] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO tenants (tenant_id, name, country, time_zone, currency, party)"
        " VALUES ($1,$2,$3,$4,$5,$6::text::jsonb) ON CONFLICT (tenant_id) DO UPDATE SET"
        " name = EXCLUDED.name, country = EXCLUDED.country, time_zone = EXCLUDED.time_zone,"
        " currency = EXCLUDED.currency, party = EXCLUDED.party",
        tid,
        name,
        country,
        tz,
        currency,
        _json(party or {}),
    )
    await conn.execute(
        "INSERT INTO invoice_counters (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", tid
    )


async def upsert_pool_terms(conn: Connection, rows: Sequence[tuple[object, ...]]) -> None:
    await conn.executemany(
        "INSERT INTO pool_terms (tenant_id, pool_id, account_id, kind, currency, payer, fee,"
        " size, per_sim, overage_per, overage_price, ladder)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12::text::jsonb)"
        " ON CONFLICT (tenant_id, pool_id) DO UPDATE SET kind = EXCLUDED.kind,"
        " fee = EXCLUDED.fee, size = EXCLUDED.size, per_sim = EXCLUDED.per_sim,"
        " overage_per = EXCLUDED.overage_per, overage_price = EXCLUDED.overage_price,"
        " ladder = EXCLUDED.ladder, payer = EXCLUDED.payer",
        [(*r[:11], _json(r[11])) for r in rows],
    )


def _party(terms: Party) -> dict[str, object]:
    """The invoice party data of an account or the tenant (``Party`` fields, set ones only)."""
    return {
        k: v for k, v in terms.model_dump().items() if k in PARTY_FIELDS and v not in ("", None)
    }


def _merged(terms: dict[str, object], own: BaseModel | None) -> dict[str, object]:
    """The billing terms' party data with the catalogue's own (an account's or the tenant's
    ``invoice``, set over the folder, the API or CRM import) over it, field by field."""
    if own is None:
        return terms
    mine = {k: v for k, v in own.model_dump().items() if k in PARTY_FIELDS and v not in ("", None)}
    return {**terms, **mine}


def _json(value: object) -> str:
    return json.dumps(value)


async def _sync_subscriptions(
    conn: Connection, catalogue: Catalogue, cipher: TenantCipher, now: datetime
) -> int:
    tid = catalogue.tenant.id
    rows = []
    for sim in catalogue.sims_by_imsi.values():
        bidx = cipher.bidx(sim.imsi)
        imsi_enc = cipher.encrypt(sim.imsi)
        msisdn_enc = cipher.encrypt(sim.msisdn) if sim.msisdn else None
        msisdn_bidx = cipher.bidx(sim.msisdn) if sim.msisdn else None
        for twin in sim.twins:
            plan = twin.plans.plan_at(now) or twin.plans.plan_ids[0]
            payer = payer_tag(tid, str(twin.payer.kind), twin.payer.id)
            rows.append(
                (
                    tid,
                    bidx,
                    twin.id,
                    imsi_enc,
                    msisdn_enc,
                    msisdn_bidx,
                    sim.account,
                    plan,
                    payer,
                    twin.spec.status if sim.state == "active" else sim.state,
                    twin.plans.starts[0],
                )
            )
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS sync_subs (tenant_id text, imsi_bidx bytea, twin text,"
        " imsi_enc bytea, msisdn_enc bytea, msisdn_bidx bytea, account_id text, plan_id text,"
        " payer text, status text, activated_at timestamptz) ON COMMIT DELETE ROWS"
    )
    await conn.copy_records_to_table("sync_subs", records=rows)
    # A changed status or account becomes an event at `now` (first sight: at activation).
    await conn.execute(
        "INSERT INTO subscription_events (tenant_id, sub_id, at, status, account_id)"
        " SELECT s.tenant_id, s.sub_id, $1, n.status, n.account_id FROM sync_subs n"
        " JOIN subscriptions s ON s.tenant_id = n.tenant_id AND s.imsi_bidx = n.imsi_bidx"
        " AND s.twin = n.twin WHERE s.status <> n.status OR s.account_id <> n.account_id"
        " ON CONFLICT DO NOTHING",
        now,
    )
    await conn.execute(
        "INSERT INTO subscriptions (tenant_id, imsi_bidx, twin, imsi_enc, msisdn_enc,"
        " msisdn_bidx, account_id, plan_id, payer, status, activated_at)"
        " SELECT * FROM sync_subs ON CONFLICT (tenant_id, imsi_bidx, twin) DO UPDATE SET"
        " account_id = EXCLUDED.account_id, plan_id = EXCLUDED.plan_id,"
        " payer = EXCLUDED.payer, status = EXCLUDED.status, msisdn_enc = EXCLUDED.msisdn_enc,"
        " msisdn_bidx = EXCLUDED.msisdn_bidx"
    )
    await conn.execute(
        "INSERT INTO subscription_events (tenant_id, sub_id, at, status, account_id)"
        " SELECT s.tenant_id, s.sub_id, s.activated_at, s.status, s.account_id"
        " FROM subscriptions s WHERE NOT EXISTS (SELECT 1 FROM subscription_events e"
        " WHERE e.tenant_id = s.tenant_id AND e.sub_id = s.sub_id)"
    )
    return len(rows)
