"""Docs that run (issue 11): every ``ocs`` command the docs name exists with the flags they
give, and the shell blocks marked runnable (convention: ``tests/docs/markdown.py``,
docs/README.md) run, in order, against a real ``ocs demo`` on embedded defaults.

Decision: the runnable blocks run as a newcomer runs them. Neither ``OCS_REDIS_URL`` nor
``OCS_DATABASE_URL`` is set, so the demo starts its embedded Redis and the offline commands
the embedded PostgreSQL; ``HOME`` is a fresh folder, so the default data folder
(``~/.local/share/ocs``) is a fresh one too and the README's paths hold. The demo's ports
are free ones: ``OCS_PORT``, ``OCS_HTTP_PORT`` and ``OCS_METRICS_PORT`` are set for every
block, and the default port numbers written in a block (3868, 8080, 9464) are replaced by
them. ``.venv/bin/`` means this interpreter's folder. Blocks of one page share the shell
state (a variable set in one block is there in the next, as in one terminal); each page
starts afresh, after the pages before it (README.md first, then docs/*.md by name).
A block fails on a non-zero exit status (``set -euo pipefail``), on a traceback in its
output, or when its output does not match the ``<!-- output -->`` block after it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

from tests.conftest import free_ports
from tests.docs.markdown import ROOT, Block, blocks, documents

DEFAULT_PORTS: Final = {
    "3868": "OCS_PORT",
    "8080": "OCS_HTTP_PORT",
    "9464": "OCS_METRICS_PORT",
    "8090": "OCS_NCHF_PORT",
}
READY: Final = re.compile(r"^ocs: Diameter .* listening on ")  # what `ocs demo` prints last
SERVER_START: Final = 120.0  # seconds for the demo to listen (embedded Redis included)
BLOCK_TIMEOUT: Final = 300.0  # seconds per block (the first offline command runs initdb)
TRACEBACK: Final = "Traceback (most recent call last)"
BIN: Final = str(Path(sys.executable).parent)


def _runnable(path: Path) -> list[Block]:
    return [b for b in blocks(path.read_text(encoding="utf-8"), path) if b.marker]


def _pages() -> list[Path]:
    return [p for p in documents() if any(b.marker == "runnable" for b in _runnable(p))]


def test_the_readme_tour_is_runnable() -> None:
    """The marker did not silently go: the README's tour is made of runnable blocks."""
    readme = _runnable(ROOT / "README.md")
    assert sum(b.marker == "runnable: server" for b in readme) == 1
    assert sum(b.marker == "runnable" for b in readme) >= 6
    assert sum(b.marker == "output" for b in readme) >= 5


def substitute(text: str, ports: dict[str, int]) -> str:
    for default, variable in DEFAULT_PORTS.items():
        text = re.sub(rf"\b{default}\b", str(ports[variable]), text)
    return text.replace(".venv/bin/", f"{BIN}/")


def expected(pattern_block: str) -> list[re.Pattern[str]]:
    patterns = []
    for raw in pattern_block.splitlines():
        line = raw.strip()
        if not line or line == "...":
            continue
        parts = [re.escape(part) for part in line.split("...")]
        patterns.append(re.compile(".*?".join(parts)))
    return patterns


def unmatched(output: str, patterns: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """The first pattern not found (in order, each on a line after the previous match)."""
    lines = output.splitlines()
    at = 0
    for pattern in patterns:
        while at < len(lines) and not pattern.search(lines[at]):
            at += 1
        if at == len(lines):
            return pattern
        at += 1
    return None


@dataclass
class Server:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if READY.match(line):
                self.ready.set()
        self.ready.set()  # exited

    @property
    def output(self) -> str:
        return "".join(self.lines)


@dataclass
class Shell:
    """A page's shell: the environment a block leaves is the next block's."""

    env: dict[str, str]
    ports: dict[str, int]
    folder: Path

    def run(self, block: Block) -> str:
        state = self.folder / "env"
        script = (
            f"set -euo pipefail\nset -a\n{substitute(block.text, self.ports)}\nenv -0 > {state}\n"
        )
        try:
            proc = subprocess.run(
                ["bash", "-c", script],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=BLOCK_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{block.where}: no answer in {BLOCK_TIMEOUT:.0f} s:\n{block.text}{exc}")
        output = proc.stdout
        if proc.returncode != 0 or TRACEBACK in output:
            pytest.fail(
                f"{block.where}: exit status {proc.returncode}\n--- block\n{block.text}"
                f"--- output\n{output[-6000:]}"
            )
        pairs = (kv.split("=", 1) for kv in state.read_text().split("\0") if "=" in kv)
        self.env = dict(pairs)
        return output


@dataclass
class Demo:
    base_env: dict[str, str]
    ports: dict[str, int]
    home: Path
    server: Server
    start_output: str


def _base_env(home: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    env.pop("XDG_DATA_HOME", None)
    env.update({name: str(port) for name, port in ports.items()})
    env["HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _stop_leftover_postgres(home: Path) -> int | None:
    """Each offline command stops the embedded PostgreSQL it started; one still running
    (its pid in ``postmaster.pid``) is stopped here and its pid returned."""
    pidfile = home / ".local" / "share" / "ocs" / "postgres" / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    return pid


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    """The README's ``<!-- runnable: server -->`` block (``ocs demo``), started as a
    newcomer starts it, stopped with Ctrl-C (SIGINT) at the end."""
    (start,) = [b for b in _runnable(ROOT / "README.md") if b.marker == "runnable: server"]
    # Not under pytest's temporary folder: that is private to the user (0700), and the
    # embedded PostgreSQL, started by root, runs as the `pgserver` user, which must reach
    # its data folder (a home folder is 0755 as a rule).
    home = Path(tempfile.mkdtemp(prefix="ocs-docs-home-"))
    home.chmod(0o755)
    ports = dict(zip(DEFAULT_PORTS.values(), free_ports(len(DEFAULT_PORTS)), strict=True))
    env = _base_env(home, ports)
    command = substitute(start.text, ports).strip()
    assert "\n" not in command, f"{start.where}: a server block is one command"
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(proc)
    reader = threading.Thread(target=server.read, daemon=True)
    reader.start()
    try:
        server.ready.wait(SERVER_START)
        if proc.poll() is not None or not any(READY.match(line) for line in server.lines):
            pytest.fail(f"{start.where}: `{command}` did not start:\n{server.output[-6000:]}")
        yield Demo(env, ports, home, server, server.output)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C in the demo's terminal
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()
        leaked = _stop_leftover_postgres(home)
        shutil.rmtree(home, ignore_errors=True)
    assert proc.returncode == 0, f"{start.where}: exit {proc.returncode}\n{server.output[-6000:]}"
    assert leaked is None, f"an embedded PostgreSQL was left running (pid {leaked})"
    assert TRACEBACK not in server.output, server.output[-6000:]


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_runnable_blocks(page: Path, demo: Demo, tmp_path: Path) -> None:
    shell = Shell(dict(demo.base_env), demo.ports, tmp_path)
    output: str | None = None
    ran = 0
    for block in _runnable(page):
        if block.marker == "runnable: server":
            output = demo.start_output  # what it printed until it was listening
        elif block.marker == "runnable":
            assert block.lang in ("sh", "bash"), f"{block.where}: runnable blocks are ```sh"
            started = time.monotonic()
            output = shell.run(block)
            ran += 1
            print(f"{block.where}: ok in {time.monotonic() - started:.1f} s")
        elif block.marker == "output":
            assert output is not None, f"{block.where}: an output block follows a runnable one"
            missing = unmatched(output, expected(substitute(block.text, demo.ports)))
            assert missing is None, (
                f"{block.where}: the output has no line matching {missing.pattern!r} "
                f"(in order)\n--- output\n{output[-6000:]}"
            )
            output = None
    assert ran > 0
    assert TRACEBACK not in demo.server.output, demo.server.output[-6000:]
