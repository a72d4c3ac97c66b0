"""Credit-Control failure handling when Redis cannot be reached: the granted quota and the
reported usage are appended to a local journal (JSON lines under ``data_dir``) for later
reconciliation against the network CDRs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Final

JOURNAL_NAME: Final = "failover-grants.jsonl"


class FailoverJournal:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / JOURNAL_NAME
        self._lock = threading.Lock()

    def record(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"ts": time.time(), **entry}, default=str, separators=(",", ":"))
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x]
