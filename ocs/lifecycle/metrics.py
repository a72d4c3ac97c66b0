"""Prometheus metrics of the lifecycle pass: each adaptive pool's current tier, the outcomes
of renewals and the RAR/ASR they caused. One collector set per registry (like
``ocs.observability.metrics``)."""

from __future__ import annotations

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge

_BY_REGISTRY: dict[int, LifecycleMetrics] = {}


class LifecycleMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.tier = Gauge(
            "ocs_pool_tier",
            "Current tier of an adaptive pool (0: its base size), read from Redis by the "
            "lifecycle pass",
            ["pool"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.renewals = Counter(
            "ocs_lifecycle_renewals",
            "Lifecycle pass outcomes per due period: renewed, rolled (no renewal rule), "
            "renewed_unpaid, suspended, "
            "overage, already (another worker did it), not_due",
            ["outcome"],
            registry=registry,
        )
        self.signals = Counter(
            "ocs_lifecycle_session_signals",
            "Live sessions the lifecycle pass asked to re-authorise (op rar: renewal, "
            "suspension lifted) or abort (op asr: suspended for an unpaid renewal)",
            ["op"],
            registry=registry,
        )


def lifecycle_metrics(registry: CollectorRegistry | None = None) -> LifecycleMetrics:
    """The lifecycle metrics of ``registry`` (the process-wide one by default), created once."""
    reg = registry if registry is not None else DEFAULT_REGISTRY
    found = _BY_REGISTRY.get(id(reg))
    if found is None:
        found = _BY_REGISTRY[id(reg)] = LifecycleMetrics(reg)
    return found
