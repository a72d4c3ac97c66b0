"""Prometheus metrics of webhook delivery (docs/webhooks.md): deliveries by outcome and the
lag from an event's time to its delivery. One collector set per registry."""

from __future__ import annotations

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BY_REGISTRY: dict[int, WebhookMetrics] = {}


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "ocs_webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered (2xx), retried (failed, to be "
            "retried after a backoff), failed (the last attempt failed: dead-lettered)",
            ["outcome"],
            registry=registry,
        )
        self.lag = Histogram(
            "ocs_webhook_lag_seconds",
            "Seconds from an event's time to its successful delivery",
            buckets=(0.1, 0.5, 1, 2, 5, 15, 60, 300, 1800, 7200),
            registry=registry,
        )
        self.redeliveries = Counter(
            "ocs_webhook_redeliveries",
            "Attempts to redeliver dead letters an operator sent again, by outcome "
            "(delivered, retried, failed: dead-lettered again); counted in "
            "ocs_webhook_deliveries too",
            ["outcome"],
            registry=registry,
        )
        self.dead_letter_actions = Counter(
            "ocs_webhook_dead_letter_actions",
            "Dead letters an operator acted on over the API: redelivered (queued) or dropped",
            ["action"],
            registry=registry,
        )
        self.backlog_age = Gauge(
            "ocs_webhook_backlog_age_seconds",
            "Age of the oldest event a subscription has not been delivered yet (0: none), as "
            "of the dispatcher's last pass",
            registry=registry,
            multiprocess_mode="livemax",
        )


def webhook_metrics(registry: CollectorRegistry | None = None) -> WebhookMetrics:
    reg = registry if registry is not None else DEFAULT_REGISTRY
    found = _BY_REGISTRY.get(id(reg))
    if found is None:
        found = _BY_REGISTRY[id(reg)] = WebhookMetrics(reg)
    return found
