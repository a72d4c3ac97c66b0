"""Balance lifecycle: periods, auto renewal, auto top-off and adaptive tiers of pools
(docs/lifecycle.md). The real-time parts (tier steps, auto top-off) run inside
``charge.lua``; this package provisions their rules and runs the periodic renewal pass."""

from ocs.lifecycle.metrics import LifecycleMetrics, lifecycle_metrics
from ocs.lifecycle.periods import Period, period_at
from ocs.lifecycle.rules import PoolRules, pool_rules
from ocs.lifecycle.runner import Lifecycle, PassReport, lifecycle_view

__all__ = [
    "Lifecycle",
    "LifecycleMetrics",
    "PassReport",
    "Period",
    "PoolRules",
    "lifecycle_metrics",
    "lifecycle_view",
    "period_at",
    "pool_rules",
]
