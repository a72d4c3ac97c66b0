"""Apply import rows to a tenant's catalogue state in batches.

Per batch: load the state, plan every row (a change, unchanged, or a rejection), build the
candidate state and compile it off the event loop. Errors the compiler finds in an item of
this batch reject that row (its item goes back to what it was) and the rest is compiled
again, so every error lands on its row. Then one :meth:`TenantCatalogues.change` puts the
batch in force (one state write, one revision, nodes refreshed) and the changed live
subscriptions get their RAR/ASR. A batch that changes nothing writes nothing.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from ocs.crm import accounts, subscriptions
from ocs.crm.fields import Change, RowError
from ocs.crm.range_states import import_range_states, range_rows
from ocs.crm.readers import Row
from ocs.crm.report import ImportReport, Rejection
from ocs.provisioning.catalogues import State, documents_of
from ocs.provisioning.errors import Refused
from ocs.provisioning.identity import KINDS as KINDS_OF_IDENTITY
from ocs.provisioning.identity import foreign, ident
from ocs.provisioning.states import Actor
from ocs.rating.catalogue import Catalogue
from ocs.rating.errors import Issue
from ocs.rating.loader import _collector_paused, check_documents

if TYPE_CHECKING:  # the API's state is passed in: crm does not import the API
    from ocs.api.state import ApiState

KINDS: Final = {"accounts": accounts.COLUMNS, "subscriptions": subscriptions.COLUMNS}
DEFAULT_BATCH: Final = 100_000  # 50,000 took 40 % more CPU for 100k rows (two compiles)
MAX_BATCH: Final = 1_000_000
_ROUNDS: Final = 8  # compile rounds per batch (each may reject rows the previous found)
_ATTEMPTS: Final = 3  # re-plans when another writer changed the state meanwhile
_ISSUE_PATH: Final = re.compile(r"^([a-z_]+)\[(\d+)\]\.?(.*)$")


class _Planner(Protocol):
    section: str

    def plan(self, row: Row) -> Change | None: ...


class _Moved(Exception):
    """The tenant's state changed between planning and writing."""


@dataclass(slots=True)
class _Plan:
    changes: list[Change] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    unchanged: int = 0
    plan_cpu: float = 0.0
    compile_cpu: float = 0.0
    candidate: State | None = None
    catalogue: Catalogue | None = None


async def run_import(
    api: ApiState,
    tenant: str,
    kind: str,
    file: str,
    rows: list[Row],
    *,
    dry_run: bool = False,
    batch: int = DEFAULT_BATCH,
    actor: Actor | None = None,
) -> ImportReport:
    """Import ``rows`` of ``kind`` ("accounts" or "subscriptions") into ``tenant``; the SIM
    state moves are journaled as made by ``actor`` (docs/sim-states.md). Raises
    :class:`Refused` when the tenant has no catalogue yet."""
    report = ImportReport(kind, file, dry_run, rows=len(rows))
    good: list[Row] = []
    for row in rows:
        if row.problem is not None:
            report.reject(row.line, "row", row.problem)
        else:
            good.append(row)
    if kind == "subscriptions":
        good = await _own_identities(api, tenant, good, report)
        _, state = await api.catalogues.load_state(tenant)
        members, good = range_rows(good, state)  # status rows of range SIMs
        if members:
            await import_range_states(api, tenant, members, report, actor)
    in_file = accounts.file_ids(good) if kind == "accounts" else set()
    now = datetime.now(UTC)

    def planner(state: State) -> _Planner:
        if kind == "accounts":
            return accounts.AccountPlanner(state, in_file)
        return subscriptions.SubscriptionPlanner(state, now)

    # The state of a large tenant is millions of objects: with the cyclic collector on,
    # its full collections took ~45 % of an import's CPU (nothing here makes cycles).
    with _collector_paused():
        for start in range(0, len(good), max(1, batch)):
            await _batch(api, tenant, good[start : start + batch], planner, report, actor)
    return report


async def _own_identities(
    api: ApiState, tenant: str, rows: list[Row], report: ImportReport
) -> list[Row]:
    """The rows whose IMSI, MSISDN and ICCID no other tenant holds; the others are
    rejected naming the identity (not its owner). The claim when a batch is put in force
    stays the authority (a race refuses that batch as a whole)."""
    wanted = [
        ident(name, str(row.fields[name]))
        for row in rows
        for name in KINDS_OF_IDENTITY
        if row.fields.get(name) not in (None, "")
    ]
    taken = await foreign(api.redis, tenant, wanted)
    if not taken:
        return rows
    kept = []
    for row in rows:
        hit = next(
            (name for name in KINDS_OF_IDENTITY if ident(name, str(row.fields.get(name))) in taken),
            None,
        )
        if hit is None:
            kept.append(row)
        else:
            value = row.fields[hit]
            report.reject(row.line, hit, f"{hit.upper()} {value} is held by another tenant")
    return kept


async def _batch(
    api: ApiState,
    tenant: str,
    rows: list[Row],
    planner: Callable[[State], _Planner],
    report: ImportReport,
    actor: Actor | None,
) -> None:
    for _ in range(_ATTEMPTS):
        _, state = await api.catalogues.load_state(tenant)
        if not state:
            raise Refused(
                404, "no-catalogue", "No catalogue", f"apply a catalogue to tenant {tenant!r} first"
            )
        plan = await asyncio.to_thread(_plan, planner(state), state, rows, report.file)
        report.add_cpu("plan", plan.plan_cpu)
        report.add_cpu("compile", plan.compile_cpu)
        if plan.changes and not report.dry_run:
            try:
                await _write(api, tenant, state, plan, report, actor)
            except _Moved:
                continue
        report.rejected.extend(plan.rejected)
        report.unchanged += plan.unchanged
        for change in plan.changes:
            if change.before is None:
                report.created += 1
            else:
                report.updated += 1
        return
    raise Refused(409, "busy", "Catalogue busy", "the tenant's state kept changing; try again")


async def _write(
    api: ApiState,
    tenant: str,
    base: State,
    plan: _Plan,
    report: ImportReport,
    actor: Actor | None,
) -> None:
    candidate, catalogue = plan.candidate, plan.catalogue
    assert candidate is not None and catalogue is not None
    section = plan.changes[0].section

    def mutate(state: State) -> Catalogue:
        if state != base:
            raise _Moved
        state[section] = candidate[section]
        return catalogue

    created = sum(c.before is None for c in plan.changes)
    source = (
        f"import {report.kind} {report.file}: {created} created, "
        f"{len(plan.changes) - created} updated"
    )
    cpu = time.process_time()
    applied = await api.catalogues.change(tenant, mutate, source=source, actor=actor)
    report.add_cpu("write", time.process_time() - cpu)
    report.revisions.append(applied.revision)
    by_op: dict[str, list[tuple[str, str | None]]] = {}
    for change in plan.changes:
        if change.signal is not None and change.subscriber is not None:
            by_op.setdefault(change.signal, []).append(change.subscriber)
    cpu = time.process_time()
    for op, pairs in by_op.items():
        outcomes = await api.signal(tenant, pairs, op)
        report.signalled[op] = report.signalled.get(op, 0) + len(outcomes)
    report.add_cpu("signal", time.process_time() - cpu)


def _plan(planner: _Planner, state: State, rows: list[Row], file: str) -> _Plan:
    """Plan every row, then compile the candidate until no error is left (runs in a
    worker thread: it is the CPU-heavy part)."""
    plan = _Plan()
    cpu = time.thread_time()
    for row in rows:
        try:
            change = planner.plan(row)
        except RowError as exc:
            plan.rejected.append(Rejection(file, row.line, exc.field, exc.reason))
            continue
        if change is None:
            plan.unchanged += 1
        else:
            plan.changes.append(change)
    plan.plan_cpu = time.thread_time() - cpu
    if not plan.changes:
        return plan
    cpu = time.thread_time()
    try:
        _compile_rounds(plan, planner.section, state, file)
    finally:
        plan.compile_cpu = time.thread_time() - cpu
    return plan


def _compile_rounds(plan: _Plan, section: str, state: State, file: str) -> None:
    """Compile the candidate; reject the rows the errors are on until it compiles."""
    items: dict[str, Any] = dict(state.get(section) or {})
    candidate = {**state, section: items}
    pending = {c.key: c for c in plan.changes}
    for change in plan.changes:
        items[change.key] = change.after
    for _ in range(_ROUNDS):
        report = check_documents({"catalogue": documents_of(candidate)})
        if report.catalogue is not None and not report.errors:
            plan.changes = list(pending.values())
            plan.candidate, plan.catalogue = candidate, report.catalogue
            return
        blamed, unplaced = _blame(report.errors, candidate, section, pending)
        if not blamed:  # errors outside this batch's items (after its own are out)
            reason = "catalogue refused: " + "; ".join(
                f"{i.path}: {i.reason}" for i in (unplaced or list(report.errors))[:3]
            )
            plan.rejected.extend(Rejection(file, c.line, "row", reason) for c in pending.values())
            plan.changes = []
            return
        for key, (where, reason) in blamed.items():
            change = pending.pop(key)
            if change.before is None:
                del items[key]
            else:
                items[key] = change.before
            plan.rejected.append(Rejection(file, change.line, where, reason))
        if not pending:
            plan.changes = []
            return
    plan.rejected.extend(
        Rejection(file, c.line, "row", "catalogue refused (too many dependent errors)")
        for c in pending.values()
    )
    plan.changes = []


def _blame(
    errors: tuple[Issue, ...], candidate: State, section: str, pending: dict[str, Change]
) -> tuple[dict[str, tuple[str, str]], list[Issue]]:
    """Errors of items this batch changes, by item key (first error of each), and the
    errors that are not on such an item."""
    keys = list((candidate.get(section) or {}).keys())
    blamed: dict[str, tuple[str, str]] = {}
    unplaced: list[Issue] = []
    for issue in errors:
        match = _ISSUE_PATH.match(issue.path)
        key = None
        if match is not None and match.group(1) == section:
            index = int(match.group(2))
            key = keys[index] if index < len(keys) else None
        if key is None or key not in pending:
            unplaced.append(issue)
            continue
        where = (match.group(3) if match is not None else "") or "row"
        blamed.setdefault(key, (where, issue.reason))
    return blamed, unplaced
