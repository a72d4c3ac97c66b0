"""Prometheus metrics of ocs. One collector set per registry; the server uses the process-wide
default (exposed on ``/metrics``), tests pass their own.

Three groups, each a class so a registry holds each metric once:

- :class:`ChargingMetrics`: the Gy/Ro path (CCRs, MSCCs, latency, sessions, reservations,
  quota exhaustion and Final-Unit-Indication, Redis errors, failure handling);
- :class:`ApiMetrics`: what the HTTP API moves (top-ups by currency);
- :class:`OfflineMetrics`: the CDR drain, bill runs and PostgreSQL errors.

The per-CCR counters go through :meth:`ChargingMetrics.count_ccr`, ``count_mscc`` and
``count_grant``, which keep the labelled children in dicts: ``.labels(...)`` validates and
hashes its arguments under a lock on every call, which costs more than the increment itself.

Every Gauge names its ``multiprocess_mode`` (used when ``PROMETHEUS_MULTIPROC_DIR`` is set
and several workers write the same metrics): per-process quantities add up over the live
workers (``livesum``), quantities every worker measures from the shared store take the
largest live value (``livemax``). Metric names are stable: dashboards and alert rules in
``docker/grafana`` and ``config/alerts.yml`` use them (``tests/ops/test_packaging.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from enum import Enum
from typing import Final
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
FUI_TERMINATE: Final = "terminate"
# ``component`` of ocs_redis_errors_total: who made the Redis call that failed
COMPONENT_CHARGING: Final = "charging"  # Gy/Ro path, session write-behind, housekeeping
COMPONENT_API: Final = "api"  # the HTTP API (the request got a 503 problem document)
COMPONENT_OFFLINE: Final = "offline"  # the offline services (CDR drain)
BILLRUN_FAILED: Final = "failed"  # outcome of ocs_billrun_runs_finished_total
CCR_TYPES: Final = ("initial", "update", "terminate", "event", "unknown")  # ``type`` labels

_redis_errors: WeakKeyDictionary[CollectorRegistry, Counter] = WeakKeyDictionary()


def redis_errors_counter(registry: CollectorRegistry) -> Counter:
    """``ocs_redis_errors_total{component}`` of ``registry``: one counter shared by the
    charging, API and offline collectors (each holds its own labelled child), so one name
    counts every failed Redis call of the process and ``sum()`` over it keeps its meaning."""
    counter = _redis_errors.get(registry)
    if counter is None:
        counter = _redis_errors[registry] = Counter(
            "ocs_redis_errors",
            "Redis calls that failed or timed out, by component (charging, api, offline)",
            ["component"],
            registry=registry,
        )
    return counter


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
        self.nchf = Counter(
            "ocs_nchf_requests",
            "Nchf_ConvergedCharging requests answered, by operation (create, update, release, "
            "other) and HTTP status",
            ["op", "status"],
            registry=reg,
        )
        self.nchf_latency = Histogram(
            "ocs_nchf_latency_seconds",
            "Time to answer an Nchf_ConvergedCharging request, by operation",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.active_sessions = Gauge(
            "ocs_active_sessions",
            "Gy sessions open in this process",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.redis_errors = redis_errors_counter(reg).labels(COMPONENT_CHARGING)
        self.failover_grants = Counter(
            "ocs_failover_grants",
            "Requests answered by Credit-Control failure handling (Redis unreachable)",
            ["mode"],
            registry=reg,
        )
        self.charging_errors = Counter(
            "ocs_charging_errors",
            "CCRs answered 5012 because charging failed for another reason than an "
            "unreachable store (a balance script error, a bug): never a grant",
            ["type"],
            registry=reg,
        )
        for kind in CCR_TYPES:  # exported at 0: increase() sees the first error
            self.charging_errors.labels(kind)
        self.failover_units = Counter(
            "ocs_failover_granted_units",
            "Units granted by Credit-Control failure handling while Redis was unreachable, by "
            "unit (bytes, seconds, events)",
            ["unit"],
            registry=reg,
        )
        for unit in ("bytes", "seconds", "events"):  # exported at 0
            self.failover_units.labels(unit)
        self.failover_refused = Counter(
            "ocs_failover_refused",
            "MSCCs refused by failure handling because a bound was reached, by bound "
            "(session, payer)",
            ["reason"],
            registry=reg,
        )
        self.failover_replayed = Counter(
            "ocs_failover_replayed",
            "Journaled failover usages replayed into usage records, by outcome (charged, "
            "unrated: kept for an operator)",
            ["outcome"],
            registry=reg,
        )
        self.failover_journal_errors = Counter(
            "ocs_failover_journal_errors",
            "Failover journal entries that could not be written (their usage is not billed)",
            registry=reg,
        )
        self.failover_pending = Gauge(
            "ocs_failover_journal_entries",
            "Failover journal entries waiting for their replay (measured by housekeeping)",
            registry=reg,
            multiprocess_mode="livemax",
        )
        for reason in ("session", "payer"):
            self.failover_refused.labels(reason)
        for outcome in ("charged", "unrated"):
            self.failover_replayed.labels(outcome)
        self.reclaimed = Counter(
            "ocs_reservations_reclaimed",
            "Reservations released after Validity-Time and grace",
            registry=reg,
        )
        self.granted = Counter(
            "ocs_reservations_granted",
            "Reservations granted (an MSCC answered with Granted-Service-Unit)",
            registry=reg,
        )
        self.outstanding = Gauge(
            "ocs_reservations_outstanding",
            "Reservations held in the balance store (all payers), measured periodically",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.exhausted = Counter(
            "ocs_quota_exhausted",
            "MSCCs that asked for units and got none, and event debits refused (Credit limit "
            "reached), by payer kind",
            ["payer_kind"],
            registry=reg,
        )
        self.final_units = Counter(
            "ocs_final_unit_indications",
            "MSCC answers carrying a Final-Unit-Indication, by Final-Unit-Action",
            ["action"],
            registry=reg,
        )
        self._ccr_children: dict[tuple[str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}
        self._mscc_children: dict[int, Counter] = {}
        self._nchf_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

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

    def count_nchf(self, op: str, status: int, seconds: float) -> None:
        """One answered Nchf request of ``op`` (create, update, release, other). The labelled
        children are kept, as for CCRs: ``labels()`` takes a lock and a tuple per call."""
        children = self._nchf_children.get((op, status))
        if children is None:
            children = self._nchf_children[(op, status)] = (
                self.nchf.labels(op, str(status)),
                self.nchf_latency.labels(op),
            )
        children[0].inc()
        children[1].observe(seconds)

    def count_charging_error(self, kind: str) -> None:
        """A CCR of ``kind`` (initial, update, ...) failed by an error that is no outage."""
        self.charging_errors.labels(kind).inc()

    def count_mscc(self, result: int) -> None:
        counter = self._mscc_children.get(result)
        if counter is None:
            counter = self._mscc_children[result] = self.mscc.labels(str(result))
        counter.inc()

    def count_grant(self, want: int, granted: int, left: int, action: Enum, payer: str) -> None:
        """One MSCC's reservation outcome: ``granted`` units of the ``want`` asked for, ``left``
        behind on ``payer`` (``tenant:kind:id``). The answer carries a Final-Unit-Indication
        when nothing is left behind a grant, or when nothing was granted and ``action`` is not
        terminate (redirect, restrict access), the rules of ``ChargingApplication._mscc_for``.
        ``action`` is the configured Final-Unit-Action (labelled by its lower-case name)."""
        if granted > 0:
            self.granted.inc()
            if left == 0:
                self.final_units.labels(action.name.lower()).inc()
        elif want > 0:
            self.count_exhausted(payer)
            if action.name.lower() != FUI_TERMINATE:
                self.final_units.labels(action.name.lower()).inc()

    def count_exhausted(self, payer: str) -> None:
        """``payer`` (``tenant:kind:id``) could not pay: nothing granted, or a debit refused."""
        self.exhausted.labels(_payer_kind(payer)).inc()


class AuditMetrics:
    """What `ocs serve`'s periodic audit found (``ocs.audit.service``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else DEFAULT_REGISTRY
        self.discrepancies = Gauge(
            "ocs_audit_discrepancies",
            "Discrepancies the last audit found (balances in Redis, reservations, used vs "
            "usage records); 0 when consistent",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.last_run = Gauge(
            "ocs_audit_last_run_timestamp_seconds",
            "Unix time the last complete audit finished",
            registry=reg,
            multiprocess_mode="livemax",
        )


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else DEFAULT_REGISTRY
        self.topups = Counter(
            "ocs_topups", "Wallet top-ups applied (replays excluded), by currency", ["currency"],
            registry=reg,
        )  # fmt: skip
        self.topup_amount = Counter(
            "ocs_topup_amount_minor",
            "Money credited by top-ups in minor units (cents), by currency",
            ["currency"],
            registry=reg,
        )
        self.bulk_state_sims = Counter(
            "ocs_bulk_state_sims",
            "SIMs of bulk state moves (POST /v1/subscriptions/bulk/state), by outcome: "
            "moved, unchanged, refused, unknown (replays of an Idempotency-Key excluded)",
            ["outcome"],
            registry=reg,
        )
        self.redis_errors = redis_errors_counter(reg).labels(COMPONENT_API)

    def count_topup(self, currency: str, amount: int) -> None:
        self.topups.labels(currency).inc()
        self.topup_amount.labels(currency).inc(amount)


class DiameterMetrics:
    """What the Diameter edge refuses: ``ocs_diameter_refused_total{reason}``, one reason per
    check (``unknown_peer``, ``forged_origin_host``, ``max_connections``, ``cer_timeout``,
    ``slow_message``, ...; docs/operations.md lists them)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else DEFAULT_REGISTRY
        self.refused = Counter(
            "ocs_diameter_refused",
            "Diameter connections closed or requests answered 3010 by the peer checks and "
            "resource limits, by reason",
            ["reason"],
            registry=reg,
        )
        self._children: dict[str, Counter] = {}

    def count_refusal(self, reason: str) -> None:
        counter = self._children.get(reason)
        if counter is None:
            counter = self._children[reason] = self.refused.labels(reason)
        counter.inc()

    @classmethod
    def default(cls) -> DiameterMetrics:
        """The process-wide instance on the default registry (created once)."""
        global _diameter  # noqa: PLW0603 - one set of collectors per process registry
        if _diameter is None:
            _diameter = cls()
        return _diameter


_diameter: DiameterMetrics | None = None


class NrfMetrics:
    """NRF registration: once per node, so in the supervisor's own registry with
    ``--workers N`` (never in a worker's)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else DEFAULT_REGISTRY
        self.nrf_requests = Counter(
            "ocs_nrf_requests",
            "Requests to the NRF by operation (register, heartbeat, deregister) and outcome "
            "(ok, not_found, refused, unreachable)",
            ["op", "outcome"],
            registry=reg,
        )
        self.nrf_registered = Gauge(
            "ocs_nrf_registered",
            "1 while the NRF holds our NFProfile (the last register or heartbeat succeeded)",
            registry=reg,
            multiprocess_mode="livemax",
        )


class SbiMetrics:
    """Nchf charging notifications sent to consumers (any worker sends them)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else DEFAULT_REGISTRY
        self.notifications = Counter(
            "ocs_nchf_notifications",
            "Nchf ChargingNotifyRequests by notificationType and outcome (delivered, gone, "
            "refused, unreachable)",
            ["type", "outcome"],
            registry=reg,
        )


_sbi: SbiMetrics | None = None
_nrf: NrfMetrics | None = None


def nrf_metrics() -> NrfMetrics:
    """The process-wide NRF metrics on the default registry (created once)."""
    global _nrf  # noqa: PLW0603 - one set of collectors per process registry
    if _nrf is None:
        _nrf = NrfMetrics()
    return _nrf


def sbi_metrics() -> SbiMetrics:
    """The process-wide SBI metrics on the default registry (created once)."""
    global _sbi  # noqa: PLW0603 - one set of collectors per process registry
    if _sbi is None:
        _sbi = SbiMetrics()
    return _sbi


class OfflineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else DEFAULT_REGISTRY
        self.postgres_errors = Counter(
            "ocs_postgres_errors",
            "PostgreSQL calls that failed (connect, query, transaction)",
            registry=reg,
        )
        self.redis_errors = redis_errors_counter(reg).labels(COMPONENT_OFFLINE)
        self.drain_records = Counter(
            "ocs_drain_records",
            "Rated usage records moved from the Redis streams to PostgreSQL, by outcome "
            "(inserted, duplicate: already stored)",
            ["outcome"],
            registry=reg,
        )
        self.drain_passes = Counter(
            "ocs_drain_passes", "Drain passes that read every stream to its end", registry=reg
        )
        self.drain_last_pass = Gauge(
            "ocs_drain_last_pass_timestamp_seconds",
            "Unix time the last complete drain pass finished: every record written before the "
            "pass started is in PostgreSQL",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.billrun_started = Counter(
            "ocs_billrun_runs_started", "Bill runs started (preview included)", registry=reg
        )
        self.billrun_finished = Counter(
            "ocs_billrun_runs_finished",
            "Bill runs that finished, by outcome (issued, preview, failed: ended by an "
            "error); a run started and not finished is still running or was killed",
            ["outcome"],
            registry=reg,
        )
        self.billrun_accounts_total = Gauge(
            "ocs_billrun_accounts",
            "Accounts selected by the bill run in progress",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.billrun_accounts_done = Gauge(
            "ocs_billrun_accounts_done",
            "Accounts the bill run in progress has dealt with (invoiced or already done)",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self._billrun_open = False  # between billrun_begin and billrun_finish

    def billrun_begin(self, accounts: int) -> None:
        self.billrun_started.inc()
        self.billrun_accounts_total.set(accounts)
        self.billrun_accounts_done.set(0)
        self._billrun_open = True

    def billrun_progress(self, done: int) -> None:
        self.billrun_accounts_done.set(done)

    def billrun_finish(self, outcome: str) -> None:
        self.billrun_finished.labels(outcome).inc()
        self._billrun_open = False

    def billrun_failed(self) -> None:
        """The run in progress ended by an error: ``outcome="failed"``. Nothing is counted
        when no run began (refused before it started: unknown account, bad cycle), so
        finished never exceeds started."""
        if self._billrun_open:
            self.billrun_finish(BILLRUN_FAILED)

    def drain_pass(self, inserted: int, duplicates: int) -> None:
        """One complete drain pass (every stream read to its end)."""
        self.drain_records.labels("inserted").inc(inserted)
        self.drain_records.labels("duplicate").inc(duplicates)
        self.drain_passes.inc()
        self.drain_last_pass.set(time.time())


def _payer_kind(payer: str) -> str:
    parts = payer.split(":")
    return parts[1] if len(parts) >= 3 else "unknown"


class ReadinessCollector(Collector):
    """``ocs_ready{check}``: 1 when the readiness check passed, 0 when it failed, as the
    metrics port found them at the last ``/metrics`` (or ``/readyz``): the port runs the
    checks ``/readyz`` runs before each scrape (:mod:`ocs.observability.endpoint`), so a
    node that is not ready but still scraped shows it, and alerts can say for how long.
    A check the process does not run has no series; the loop not answering is ``loop``."""

    _labelnames = ("check",)  # what tests/ops/test_packaging.py reads of every collector

    def __init__(self) -> None:
        self.latest: dict[str, str] = {}  # check name -> "ok" or the reason it failed

    def describe(self) -> Iterable[GaugeMetricFamily]:
        """The family without samples (the registry learns the name from it)."""
        yield self._family()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = self._family()
        for name, state in sorted(self.latest.items()):
            family.add_metric([name], 1.0 if state == "ok" else 0.0)
        yield family

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "ocs_ready",
            "Readiness check passed (1) or failed (0), by check, as /readyz runs them",
            labels=self._labelnames,
        )


_readiness: WeakKeyDictionary[CollectorRegistry, ReadinessCollector] = WeakKeyDictionary()


def readiness_collector(registry: CollectorRegistry) -> ReadinessCollector:
    """The ``ocs_ready`` collector of ``registry`` (registered on first use)."""
    collector = _readiness.get(registry)
    if collector is None:
        collector = _readiness[registry] = ReadinessCollector()
        registry.register(collector)
    return collector


def register_all(registry: CollectorRegistry) -> tuple[ChargingMetrics, ApiMetrics, OfflineMetrics]:
    """Every metric of ocs on ``registry`` (tests list the names the dashboards may use)."""
    readiness_collector(registry)
    DiameterMetrics(registry)
    AuditMetrics(registry)
    SbiMetrics(registry)
    NrfMetrics(registry)
    return ChargingMetrics(registry), ApiMetrics(registry), OfflineMetrics(registry)


_charging: ChargingMetrics | None = None
_api: ApiMetrics | None = None
_offline: OfflineMetrics | None = None
_audit: AuditMetrics | None = None


def default_metrics() -> ChargingMetrics:
    """The process-wide charging metrics on the default registry (created once)."""
    global _charging  # noqa: PLW0603 - one set of collectors per process registry
    if _charging is None:
        _charging = ChargingMetrics()
    return _charging


def api_metrics() -> ApiMetrics:
    """The process-wide API metrics on the default registry (created once)."""
    global _api  # noqa: PLW0603 - one set of collectors per process registry
    if _api is None:
        _api = ApiMetrics()
    return _api


def audit_metrics() -> AuditMetrics:
    """The process-wide audit metrics on the default registry (created once)."""
    global _audit  # noqa: PLW0603 - one set of collectors per process registry
    if _audit is None:
        _audit = AuditMetrics()
    return _audit


def offline_metrics() -> OfflineMetrics:
    """The process-wide offline metrics on the default registry (created once)."""
    global _offline  # noqa: PLW0603 - one set of collectors per process registry
    if _offline is None:
        _offline = OfflineMetrics()
    return _offline
