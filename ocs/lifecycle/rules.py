"""What the catalogue says about each pool's lifecycle, in the shape the scripts read:
the adaptive ladder and auto top-off rule ``charge.lua`` applies on its own, and the renewal
rule the lifecycle pass applies (docs/lifecycle.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

from ocs.balance.keys import payer_tag
from ocs.rating.catalogue import Catalogue
from ocs.rating.models import Addon, PayerKind, Pool, Renewal

TOPOFF_PRIORITY: Final = 50  # after the pool's own bucket, before postpaid credit (100)
DAY_MS: Final = 86_400_000
POOL_KINDS: Final = frozenset({str(PayerKind.PREPAID_POOL), str(PayerKind.POSTPAID_POOL)})


def pool_tag(tenant: str, pool: Pool) -> str:
    kind = PayerKind.PREPAID_POOL if pool.payment == "prepaid" else PayerKind.POSTPAID_POOL
    return payer_tag(tenant, str(kind), pool.id)


@dataclass(frozen=True, slots=True)
class PoolRules:
    """One pool's lifecycle as provisioned. ``sizes``: the allowance per tier (one entry
    for a pool without tiers); ``currency``: its account's; ``sims``: (IMSI, MSISDN) of
    every SIM with a twin on the pool, whose live sessions a renewal re-authorises."""

    tag: str
    pool: Pool
    tz: ZoneInfo
    bill_day: int
    currency: str
    sizes: tuple[int, ...]
    ladder: dict[str, Any] | None
    topoff: dict[str, Any] | None
    wallet_tag: str | None
    sims: tuple[tuple[str, str | None], ...] = ()
    tenant: str = ""  # whose SIMs ``sims`` are (their sessions are indexed per tenant)

    @property
    def renewal(self) -> Renewal | None:
        return self.pool.renewal

    @property
    def catalogue_buckets(self) -> list[str]:
        """The buckets a catalogue apply (re)defines for the pool (``payer_buckets``)."""
        own = [self.pool.id]
        if self.pool.payment == "postpaid":
            own.append(f"{self.pool.id}:credit")
        return own


def topoff_rule(
    pool: Pool, addon: Addon, cap: int | None, threshold_percent: int = 0
) -> dict[str, Any]:
    """The auto top-off rule ``charge.lua`` applies: buy ``addon`` for ``pool``, at most
    ``cap`` times a period (None: the add-on's own cap; 0: no cap), when a request finds the
    pool short or, with ``threshold_percent`` > 0, as soon as a request leaves the pool's
    available units below that share of its allowance."""
    rule: dict[str, Any] = {
        "addon": addon.id,
        "pool": pool.id,
        "account": pool.account,
        "u": str(pool.unit),
        "units": addon.units,
        "prio": TOPOFF_PRIORITY,
        "ms": addon.validity_days * DAY_MS,
        "cap": cap if cap is not None else addon.max_per_period or 0,
        "price": addon.price,
        "currency": addon.currency,
    }
    if threshold_percent > 0:
        rule["pct"] = threshold_percent
    return rule


def pool_members(catalogue: Catalogue) -> dict[str, list[tuple[str, str | None]]]:
    """Pool payer tag -> (IMSI, MSISDN) of every SIM with a twin paid by that pool."""
    tenant = catalogue.tenant.id
    out: dict[str, list[tuple[str, str | None]]] = {}
    for sim in catalogue.sims_by_imsi.values():
        seen: set[str] = set()
        for twin in sim.twins:
            kind = str(twin.payer.kind)
            tag = payer_tag(tenant, kind, twin.payer.id)
            if kind in POOL_KINDS and tag not in seen:
                seen.add(tag)
                out.setdefault(tag, []).append((sim.imsi, sim.msisdn))
    return out


def pool_rules(catalogue: Catalogue, sizes: dict[str, int] | None = None) -> list[PoolRules]:
    """Every pool's rules. ``sizes`` overrides a pool's allowance (a flexible pool's size is
    its per-SIM size times its active SIMs: what the catalogue provisioning computed)."""
    tenant = catalogue.tenant
    members = pool_members(catalogue)
    out: list[PoolRules] = []
    for pool in catalogue.pools.values():
        account = catalogue.accounts.get(pool.account)
        tz = ZoneInfo((account.time_zone if account else None) or tenant.time_zone)
        tag = pool_tag(tenant.id, pool)
        unit = str(pool.unit)
        base = (sizes or {}).get(pool.id, pool.size)
        steps = (base, *pool.tiers)
        ladder = None
        if pool.tiers:
            ladder = {"b": pool.id, "u": unit, "s": list(steps), "pool": pool.id}
            ladder["account"] = pool.account
        topoff = None
        rule = pool.auto_top_off
        addon = catalogue.addons.get(rule.addon) if rule is not None else None
        if rule is not None and addon is not None:
            topoff = topoff_rule(pool, addon, rule.max_per_period)
        wallet_tag = None
        if pool.renewal is not None and pool.renewal.wallet is not None:
            wallet_tag = payer_tag(tenant.id, str(PayerKind.WALLET), pool.renewal.wallet)
        out.append(
            PoolRules(
                tag=tag,
                pool=pool,
                tz=tz,
                bill_day=account.bill_day if account else 1,
                currency=account.currency if account else tenant.currency,
                sizes=steps,
                ladder=ladder,
                topoff=topoff,
                wallet_tag=wallet_tag,
                sims=tuple(members.get(tag, ())),
                tenant=tenant.id,
            )
        )
    return out
