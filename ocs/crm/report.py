"""What an import did: counts, the rejected rows with file, line, field and reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused row. ``field`` is the column (CSV) or key path (JSON) at fault, or
    ``row`` when the row as a whole is wrong."""

    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "reason": self.reason}


@dataclass(slots=True)
class ImportReport:
    kind: str
    file: str
    dry_run: bool = False
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    revisions: list[int] = field(default_factory=list)
    signalled: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds by phase: read, plan (rows), compile, write (state, folder, Redis),
    signal (RAR/ASR): where an import's time goes."""

    def add_cpu(self, phase: str, seconds: float) -> None:
        self.cpu_s[phase] = round(self.cpu_s.get(phase, 0.0) + seconds, 3)

    def reject(self, line: int, where: str, reason: str) -> None:
        self.rejected.append(Rejection(self.file, line, where, reason))

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        counts = (
            f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.rejected)} rejected"
        )
        if self.dry_run:
            return f"{self.file}: {self.kind} (dry run, nothing written): {counts}"
        revs = f" (revision {self.revisions[-1]})" if self.revisions else " (nothing written)"
        return f"{self.file}: {self.kind}: {counts}{revs}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": [r.as_dict() for r in sorted(self.rejected, key=lambda r: r.line)],
            "revisions": self.revisions,
            "signalled": self.signalled,
            "cpu_s": self.cpu_s,
        }
