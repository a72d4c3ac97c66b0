"""Multi-level charging (B2B2B / B2B2C): which levels a usage is rated at.

Level 0 is the SIM's twin: its plan and payer; the SIM's account (buyer) is charged by that
account's parent, or by the tenant when it has none. Every account above it that has `plans`
adds one level: its parent (or the tenant) charges it on its own wholesale plan, paid by its
own `payer`. Each level is priced independently: its own plan version, zone set, bands,
tiers and counters (subscription-scoped at level 0, the buyer account's above). The upper
levels of each account are computed once at compile time (`Catalogue.upper_levels`).
"""

from __future__ import annotations

from ocs.rating.catalogue import Catalogue, CompiledSim, UpperLevel


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
