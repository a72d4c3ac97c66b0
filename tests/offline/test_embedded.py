"""The whole product on embedded defaults: no OCS_REDIS_URL, no OCS_DATABASE_URL, one data
dir. `ocs demo` runs in one process (its embedded Redis); the offline commands run in others,
attach to that Redis and start (or attach to) the embedded PostgreSQL (pgserver) under the
same data dir: migrate, drain, bill run, report. The rest of tests/offline runs on the
machine's PostgreSQL; this is the test that keeps the embedded one working (its first
migration once needed an extension pgserver does not ship).

Quiet by default is checked on the way: the offline commands write nothing on stderr (no
PostgreSQL start-up output, no library warning from the PDF renderer), and the demo's JSON
log lines carry no ANSI colour codes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from tests.conftest import free_ports

REPO: Final = Path(__file__).resolve().parents[2]
LISTENING: Final = re.compile(rb"listening on \S+:(\d+)")

pytestmark = pytest.mark.timeout(300)


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    return env | {"OCS_DATA_DIR": str(data_dir)}


async def ocs(cwd: Path, data_dir: Path, *args: str) -> tuple[int, str, str]:
    """``ocs ARGS`` as a separate process on the embedded defaults under ``data_dir``."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ocs.cli", *args),
        cwd=cwd,
        env=embedded_env(data_dir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def postgres_running_in(folder: Path) -> list[int]:
    """Pids of postgres processes whose data folder is under ``folder``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"postgres")
            and str(folder).encode() in b" ".join(cmdline)
        ):
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def own_tmp() -> Iterator[Path]:
    """A folder of this test's own: pytest's tmp_path lives under a root shared with every
    other pytest run of this user, which removes old runs' folders, possibly while the
    embedded PostgreSQL still runs in one."""
    folder = Path(tempfile.mkdtemp(prefix="ocs-embedded-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_demo_and_the_offline_commands_share_the_embedded_stores(own_tmp: Path) -> None:
    tmp_path = own_tmp
    data = tmp_path / "data"
    port, http_port, metrics_port, nchf_port = free_ports(4)
    demo_log = tmp_path / "demo.stderr"
    with demo_log.open("wb") as log:
        demo = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "ocs.cli", "demo", "--log-format", "json"),
            *("--port", str(port), "--http-port", str(http_port)),
            *("--metrics-port", str(metrics_port), "--nchf-port", str(nchf_port)),
            cwd=tmp_path,
            env=embedded_env(data),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    assert demo.stdout is not None
    try:
        line = b"-"
        while line and not LISTENING.search(line):  # the API and metrics URLs come first
            line = await asyncio.wait_for(demo.stdout.readline(), 60)
        assert LISTENING.search(line), demo_log.read_text()
        load = await asyncio.create_subprocess_exec(
            *(sys.executable, str(REPO / "tools" / "loadgen.py"), "--port", str(port)),
            *("--sessions", "4", "--updates", "1", "--json-line"),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(load.communicate(), 60)
        assert load.returncode == 0, out

        code, out, err = await ocs(tmp_path, data, "db", "migrate")
        assert (code, err) == (0, ""), err
        assert "0001_schema.sql" in out  # a fresh embedded database, fully migrated
        code, out, err = await ocs(tmp_path, data, "cdr", "drain")
        assert (code, err) == (0, ""), err
        drained = re.search(r"drained (\d+) records from \d+ streams: (\d+) new", out)
        assert drained is not None and int(drained.group(2)) > 0, out  # from the demo's Redis
        code, out, err = await ocs(tmp_path, data, "billrun", "--cycle", "1")
        assert (code, err) == (0, ""), err  # no PostgreSQL narration, no fpdf/fontTools lines
        assert "invoices" in out
        assert {p.suffix for p in (data / "invoices").iterdir()} == {".html", ".pdf"}
        code, out, err = await ocs(tmp_path, data, "report", "usage", "--format", "json")
        assert (code, err) == (0, ""), err
        rows = json.loads(out)["rows"]
        assert rows and sum(int(r["records"]) for r in rows) > 0  # the demo's sessions
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(demo.wait(), 30) == 0, demo_log.read_text()
        await demo.stdout.read()
    assert postgres_running_in(data) == []  # the last command out stopped it
    text = demo_log.read_text()
    assert "\x1b" not in text
    for entry in text.splitlines():
        assert json.loads(entry)["level"] != "ERROR", entry  # JSON, every line
