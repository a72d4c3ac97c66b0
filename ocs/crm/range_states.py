"""Status rows of SIMs that belong to a ``sim_range`` (docs/sim-states.md): a row with only
``imsi`` and ``status`` for a member of a range moves that member's lifecycle state, the way
``POST /v1/subscriptions/{imsi}/state`` does (the range's ``states``); anything else about a
range's SIMs is changed on the range, in the catalogue. The rows of one import go in one
catalogue change; a move the transition table refuses rejects its row, naming both states."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ocs.crm.readers import Row
from ocs.crm.report import ImportReport
from ocs.provisioning.catalogues import State
from ocs.provisioning.errors import Refused
from ocs.provisioning.states import (
    SIGNAL_ON_ENTRY,
    STATES,
    Actor,
    member_state,
    range_of,
    set_member_state,
)

if TYPE_CHECKING:
    from ocs.api.state import ApiState


def _digits(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text if text.isdigit() and 5 <= len(text) <= 15 else None


def range_rows(rows: list[Row], state: State) -> tuple[list[Row], list[Row]]:
    """(status rows of range members, every other row)."""
    ranges = state.get("sim_ranges") or {}
    singles = state.get("sims") or {}
    mine: list[Row] = []
    rest: list[Row] = []
    for row in rows:
        fields = {k: v for k, v in row.fields.items() if v not in (None, "")}
        imsi = _digits(fields.get("imsi"))
        if (
            set(fields) == {"imsi", "status"}
            and imsi is not None
            and imsi not in singles
            and range_of(ranges, imsi) is not None
        ):
            mine.append(row)
        else:
            rest.append(row)
    return mine, rest


async def import_range_states(
    api: ApiState, tenant: str, rows: list[Row], report: ImportReport, actor: Actor | None
) -> None:
    """Move the range members of ``rows`` (from :func:`range_rows`) to their status."""
    moved: list[tuple[str, str]] = []

    def mutate(state: State) -> None:
        moved.clear()
        ranges = state.get("sim_ranges") or {}
        for row in rows:
            imsi = str(row.fields["imsi"]).strip()
            to = str(row.fields["status"]).strip()
            held = range_of(ranges, imsi)
            if to not in STATES:
                report.reject(row.line, "status", f"must be one of {', '.join(STATES)}")
            elif held is None:
                report.reject(row.line, "imsi", f"no SIM {imsi}")
            elif member_state(held, imsi) == to:
                report.unchanged += 1
            else:
                try:
                    set_member_state(held, imsi, to)
                except Refused as exc:
                    report.reject(row.line, "status", exc.detail or exc.title)
                    continue
                moved.append((imsi, to))
        if not moved or report.dry_run:
            raise _NoWrite

    try:
        applied = await api.catalogues.change(
            tenant, mutate, source=f"import {report.file}: range SIM states", actor=actor
        )
    except _NoWrite:
        report.updated += len(moved)
        return
    report.updated += len(moved)
    report.revisions.append(applied.revision)
    compiled = await api.catalogues.compiled(tenant)
    sims = compiled.catalogue.sims_by_imsi
    by_op: dict[str, list[tuple[str, str | None]]] = {}
    for imsi, to in moved:
        op = SIGNAL_ON_ENTRY[to]
        if op is not None and imsi in sims:
            by_op.setdefault(op, []).append((imsi, sims[imsi].msisdn))
    for op, pairs in by_op.items():
        outcomes = await api.signal(tenant, pairs, op)
        report.signalled[op] = report.signalled.get(op, 0) + len(outcomes)


class _NoWrite(Exception):
    """Nothing to write (no move, or a dry run): the change is not made."""
