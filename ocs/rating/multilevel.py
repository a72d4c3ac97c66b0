"""Multi-level charging (B2B2B / B2B2C): which levels a usage is rated at.

Level 0 is the SIM's twin: its plan, its payer, bought by the SIM's account from that
account's parent (or the tenant). Every account above with a plan adds one level: its parent
(or the tenant) charges it on its own wholesale plan, paid by its own payer. Each level is
priced independently with its own plan, zone set, bands, tiers and counters.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocs.rating.catalogue import Catalogue, CompiledSim, CompiledTwin, PlanHistory
from ocs.rating.models import Payer


@dataclass(frozen=True, slots=True)
class Level:
    level: int
    buyer: str
    seller: str | None
    plans: PlanHistory
    payer: Payer
    counter_owner: str
    """Counters of subscription-scoped tariffs at this level belong to this id."""


def levels_for(
    catalogue: Catalogue, sim: CompiledSim, twin: CompiledTwin, subscription: str
) -> tuple[Level, ...]:
    account = catalogue.accounts[sim.account]
    first = Level(0, account.id, account.parent, twin.plans, twin.payer, subscription)
    upper = catalogue.upper_levels.get(sim.account, ())
    if not upper:
        return (first,)
    rest = (
        Level(i, u.buyer, u.seller, u.plans, u.payer, u.buyer) for i, u in enumerate(upper, start=1)
    )
    return (first, *rest)
