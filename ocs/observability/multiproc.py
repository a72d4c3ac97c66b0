"""Prometheus metrics across the worker processes of ``ocs serve --workers N``.

prometheus_client's multiprocess mode: every worker is started with ``PROMETHEUS_MULTIPROC_DIR``
set to one fresh folder per supervisor run, so each of its metrics writes to memory-mapped
files named after the worker's pid there (the choice is made when prometheus_client is first
imported, hence an environment variable set before the worker starts). The supervisor serves
``/metrics`` from a registry whose :class:`~prometheus_client.multiprocess.MultiProcessCollector`
reads the whole folder: counters and histograms are summed over workers, dead ones included (a
restarted worker does not make a counter go backwards); gauges follow the
``multiprocess_mode`` each one declares (see :mod:`ocs.observability.metrics`). When a worker
dies, :func:`worker_died` drops the files of its live gauges.

The supervisor adds two metrics of its own to that registry, ``ocs_workers_alive`` and
``ocs_worker_restarts_total``, and serves it on the metrics port with
:func:`ocs.observability.endpoint.start_ops_server` (whose ``/readyz`` there means: every
worker listens). A supervisor run removes its folder when it exits; a folder left by a
killed supervisor is never read again (every run makes a new one).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
"""The variable prometheus_client reads at import to switch to multiprocess mode."""


def fresh_dir(parent: Path | None = None) -> Path:
    """A new, empty folder for one supervisor run's metric files."""
    return Path(tempfile.mkdtemp(prefix="ocs-metrics-", dir=parent))


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def worker_environment(path: Path) -> dict[str, str]:
    """What a worker's environment needs so that its metrics go to ``path``."""
    return {ENV: str(path)}


def worker_died(pid: int, path: Path) -> None:
    """Forget the live gauges of the dead worker ``pid`` (its counters stay summed)."""
    mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


@dataclass(slots=True)
class SupervisorMetrics:
    """The registry the supervisor serves: every worker's metrics plus its own."""

    registry: CollectorRegistry
    alive: Gauge
    restarts: Counter


def supervisor_metrics(path: Path) -> SupervisorMetrics:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    alive = Gauge("ocs_workers_alive", "Worker processes running", registry=registry)
    restarts = Counter(
        "ocs_worker_restarts",
        "Worker processes restarted after they died, by reason",
        ["reason"],
        registry=registry,
    )
    return SupervisorMetrics(registry, alive, restarts)


__all__ = [
    "ENV",
    "SupervisorMetrics",
    "fresh_dir",
    "remove_dir",
    "supervisor_metrics",
    "worker_died",
    "worker_environment",
]
