"""Prometheus metrics of the charging path. One :class:`ChargingMetrics` per registry; the
server uses the process-wide default (exposed on ``/metrics``), tests pass their own.

The per-CCR counters go through :meth:`ChargingMetrics.count_ccr` and ``count_mscc``, which
keep the labelled children in dicts: ``.labels(...)`` validates and hashes its arguments
under a lock on every call, which costs more than the increment itself."""

from __future__ import annotations

from typing import Final

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class ChargingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else DEFAULT_REGISTRY
        self.registry = reg
        self.ccr = Counter(
            "ocs_ccr",
            "Credit-Control-Requests answered, by request type and Result-Code",
            ["type", "result"],
            registry=reg,
        )
        self.mscc = Counter(
            "ocs_mscc",
            "Multiple-Services-Credit-Control answers, by Result-Code",
            ["result"],
            registry=reg,
        )
        self.latency = Histogram(
            "ocs_ccr_latency_seconds",
            "Time to answer a CCR, by request type",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.active_sessions = Gauge(
            "ocs_active_sessions", "Gy sessions open in this process", registry=reg
        )
        self.redis_errors = Counter(
            "ocs_redis_errors", "Redis calls that failed or timed out", registry=reg
        )
        self.failover_grants = Counter(
            "ocs_failover_grants",
            "Requests answered by Credit-Control failure handling (Redis unreachable)",
            ["mode"],
            registry=reg,
        )
        self.reclaimed = Counter(
            "ocs_reservations_reclaimed",
            "Reservations released after Validity-Time and grace",
            registry=reg,
        )
        self._ccr_children: dict[tuple[str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}
        self._mscc_children: dict[int, Counter] = {}

    def count_ccr(self, kind: str, result: int, seconds: float) -> None:
        """One answered CCR of ``kind`` (initial, update, ...) with ``result``, in ``seconds``."""
        counter = self._ccr_children.get((kind, result))
        if counter is None:
            counter = self._ccr_children[(kind, result)] = self.ccr.labels(kind, str(result))
        histogram = self._latency_children.get(kind)
        if histogram is None:
            histogram = self._latency_children[kind] = self.latency.labels(kind)
        counter.inc()
        histogram.observe(seconds)

    def count_mscc(self, result: int) -> None:
        counter = self._mscc_children.get(result)
        if counter is None:
            counter = self._mscc_children[result] = self.mscc.labels(str(result))
        counter.inc()


_default: ChargingMetrics | None = None


def default_metrics() -> ChargingMetrics:
    """The process-wide metrics on the default registry (created once)."""
    global _default  # noqa: PLW0603 - one set of collectors per process registry
    if _default is None:
        _default = ChargingMetrics()
    return _default
