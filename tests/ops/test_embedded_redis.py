"""Processes starting on one data folder at the same moment share one embedded Redis: the
second attaches to the server the first started (a file lock orders them), instead of
starting a second redis-server on the same files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

START = """
import sys, time
from pathlib import Path
from ocs.redis_client import _start_embedded
server = _start_embedded(Path(sys.argv[1]))
print(server.pid, flush=True)
time.sleep(float(sys.argv[2]))  # keep it while the others start
"""


def test_processes_starting_together_share_one_server(tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", START, str(folder), "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    pids = {int(out.strip()) for out, _ in outs}
    try:
        assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
        assert len(pids) == 1, pids  # one redis-server, the others attached to it
    finally:
        for pid in pids:  # the server outlives the processes that started it here
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
