"""Multi-level charging (B2B2B / B2B2C): which levels a usage is rated at.

Level 0 is the SIM's twin: its plan and payer; the SIM's account (buyer) is charged by that
account's parent, or by the tenant when it has none. Every account above it that has `plans`
adds one level: its parent (or the tenant) charges it on its own wholesale plan, paid by its
own `payer`. Each level is priced independently: its own plan version, zone set, bands,
tiers and counters (subscription-scoped at level 0, the buyer account's above). The upper
levels of each account are computed once at compile time (`Catalogue.upper_levels`).

Real-time reservation applies to every prepaid level, in one atomic balance call, so the
payers of one chain share a Redis Cluster slot: `chain_root` names the payer whose hash tag
holds a payer's keys (docs/charging.md, "Multi-level reservations").
"""

from __future__ import annotations

from ocs.rating.catalogue import Catalogue, CompiledSim, UpperLevel
from ocs.rating.models import Payer, PayerKind


def upper_levels(catalogue: Catalogue, sim: CompiledSim) -> tuple[UpperLevel, ...]:
    """Levels 1.. of a SIM's usage, nearest account first."""
    return catalogue.upper_levels.get(sim.account, ())


def describe_chain(catalogue: Catalogue, sim: CompiledSim) -> list[str]:
    """Human-readable seller -> buyer chain, level 0 first (for logs and docs)."""
    account = catalogue.accounts[sim.account]
    lines = [f"0: {account.parent or 'tenant'} -> {account.id} (twin plan)"]
    lines.extend(
        f"{i}: {u.seller or 'tenant'} -> {u.buyer}"
        for i, u in enumerate(upper_levels(catalogue, sim), start=1)
    )
    return lines


def owner_of(catalogue: Catalogue, payer: Payer) -> str | None:
    """The account that owns a pool, wallet or contract (None: not in the catalogue)."""
    if payer.kind is PayerKind.WALLET:
        wallet = catalogue.wallets.get(payer.id)
        return wallet.account if wallet is not None else None
    if payer.kind is PayerKind.EXTERNAL_CONTRACT:
        contract = catalogue.contracts.get(payer.id)
        return contract.account if contract is not None else None
    pool = catalogue.pools.get(payer.id)
    return pool.account if pool is not None else None


def levels_above(catalogue: Catalogue, payer: Payer) -> tuple[UpperLevel, ...]:
    """The levels above the account that owns ``payer`` (the levels a usage it pays for at
    level 0 is also charged at), nearest first."""
    owner = owner_of(catalogue, payer)
    return catalogue.upper_levels.get(owner, ()) if owner is not None else ()


def chain_root(catalogue: Catalogue, payer: Payer) -> Payer:
    """The payer of the topmost level above the account that owns ``payer`` (its reseller
    chain's root), or ``payer`` itself when no level is above it: every payer of one chain
    has the same root, and the root is its own."""
    above = levels_above(catalogue, payer)
    return above[-1].payer if above else payer
