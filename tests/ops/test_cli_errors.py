"""Ordinary mistakes on the command line: each is one ``ocs: error:`` line on stderr naming
what is wrong, exit 2 when the command line or settings are wrong and 1 when the command
failed, never a traceback. Run as a user would (``python -m ocs.cli`` in a folder that is not
the repository), against the test Redis and nothing else."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Final

import pytest

from ocs import cli
from ocs.commands import serve as serve_commands
from ocs.config import demo_catalog
from ocs.redis_client import RedisClient
from tests.balance.fixtures import db_url, flushed_client, redis_base_url
from tests.conftest import free_ports

CLI_DB: Final = 9  # 8: workers, 10: api, 11: bench_api, 12: offline, 13: balance, 14: charging
DEMO: Final = demo_catalog()
UNEXPECTED: Final = (
    "ocs: error: unexpected RuntimeError: the bug (a bug: --log-level DEBUG shows where)"
)
NARRATION: Final = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO) ")  # no warning
__all__ = ["redis_base_url"]


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    if redis_base_url.startswith("unix://"):
        pytest.skip("these tests pass the test Redis as --redis-url redis://host:port/db")
    return db_url(redis_base_url, CLI_DB)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    async for client in flushed_client(redis_url):
        yield client


def ocs(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ocs ARGS`` from ``tmp_path`` (not the repository), with no OCS_* of the shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    env["OCS_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(
        [sys.executable, "-m", "ocs.cli", *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def one_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one ``ocs: error:`` line of a failed command (argparse's usage lines aside)."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("ocs: error: ")]
    others = [
        ln
        for ln in result.stderr.splitlines()
        if ln and not ln.startswith(("usage", " ")) and not NARRATION.match(ln)
    ]
    assert len(lines) == 1 and others == lines, result.stderr
    return lines[0].removeprefix("ocs: error: ")


def apply_args(redis_url: str) -> tuple[str, ...]:
    return ("catalog", "apply", str(DEMO), "--redis-url", redis_url)


@pytest.fixture
def taken() -> Iterator[int]:
    """A port someone else listens on (no SO_REUSEPORT: nobody may share it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# -- stores -----------------------------------------------------------------------------------
def test_unreachable_redis(tmp_path: Path) -> None:
    line = one_error(
        ocs(tmp_path, "balance", "show", "1", "--redis-url", "redis://127.0.0.1:1/0"), 1
    )
    assert line.startswith("Redis redis://127.0.0.1:1/0: cannot connect: ")
    assert "Connection refused" in line


def test_malformed_database_url(tmp_path: Path) -> None:
    line = one_error(ocs(tmp_path, "db", "migrate", "--database-url", "notaurl"), 2)
    assert line.startswith("settings: database_url (--database-url, OCS_DATABASE_URL): 'notaurl'")
    assert "is not a PostgreSQL URL" in line


def test_unreachable_database(tmp_path: Path) -> None:
    url = "postgresql://ocs:secret@127.0.0.1:1/ocs"
    line = one_error(ocs(tmp_path, "db", "migrate", "--database-url", url), 1)
    assert line.startswith("database postgresql://ocs:***@127.0.0.1:1/ocs: cannot connect: ")
    assert "secret" not in line


# -- ports ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("what", "flag"),
    [
        ("Diameter", "--port"),
        ("HTTP", "--http-port"),
        ("metrics", "--metrics-port"),
        ("Nchf", "--nchf-port"),
    ],
)
async def test_a_taken_port_is_named(
    tmp_path: Path, redis: RedisClient, redis_url: str, taken: int, what: str, flag: str
) -> None:
    # the other listeners off (0: HTTP, metrics and Nchf disabled, Diameter on any free
    # port), so that only the taken one can fail
    ports = {"--port": 0, "--http-port": 0, "--metrics-port": 0, "--nchf-port": 0, flag: taken}
    flags = [str(x) for pair in ports.items() for x in pair]
    result = await asyncio.to_thread(ocs, tmp_path, "demo", "--redis-url", redis_url, *flags)
    line = one_error(result, 1)
    assert line == (
        f"{what} port {taken} ({flag}) on 127.0.0.1: already in use"
        " (another process listens there; choose another port)"
    )
    # it failed before starting anything: the demo catalogue was never put in force
    assert await redis.dbsize() == 0


# -- catalogues -------------------------------------------------------------------------------
def test_missing_catalogue_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    line = one_error(ocs(tmp_path, "billrun", "--cycle", "1", "--catalog", "nowhere"), 1)
    assert line.startswith(f"catalogue: {missing}: ")


def test_malformed_catalogue_names_file_field_and_reason(tmp_path: Path) -> None:
    folder = tmp_path / "cat"
    folder.mkdir()
    for item in DEMO.iterdir():
        (folder / item.name).write_text(item.read_text())
    tenant = folder / "tenant.yaml"
    tenant.write_text(
        tenant.read_text().replace("time_zone: Europe/Berlin", "time_zone: Mars/Olympus")
    )
    line = one_error(ocs(tmp_path, "report", "usage", "--catalog", "cat"), 1)
    assert line.startswith(f"catalogue: {tenant}: ")
    assert "time_zone" in line and "Mars/Olympus" in line


def test_the_demo_catalogue_is_found_from_anywhere(tmp_path: Path) -> None:
    assert (DEMO / "tenant.yaml").is_file()
    assert cli.build_parser().parse_args(["demo"]).catalog == DEMO
    assert cli.build_parser().parse_args(["cdr", "import", "x.csv", "--catalog", "c"]).catalog == (
        Path.cwd() / "c"
    )
    result = ocs(tmp_path, "catalog", "check", str(DEMO))
    assert result.returncode == 0 and "tenant 'demo' OK" in result.stdout


async def test_demo_runs_outside_the_repository(
    tmp_path: Path, redis: RedisClient, redis_url: str
) -> None:
    """`ocs demo` from a folder holding no policies/: the demo catalogue is the package's."""
    port, http_port, metrics_port, nchf_port = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ocs.cli", "demo", "--redis-url", redis_url),
        *("--port", str(port), "--http-port", str(http_port), "--metrics-port", str(metrics_port)),
        *("--nchf-port", str(nchf_port)),
        cwd=tmp_path,
        env=env | {"OCS_DATA_DIR": str(tmp_path / "data")},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[bytes] = []
    try:
        while not lines or b"listening on" not in lines[-1]:  # the URLs come first
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if not line:
                break
            lines.append(line)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        err = (await proc.stderr.read()).decode()
        await proc.stdout.read()
    assert f"listening on 127.0.0.1:{port}" in lines[-1].decode(), err
    assert proc.returncode == 0, err
    assert await redis.hget("ocs:catalog", "tenant") == b"demo"


# -- commands refused -------------------------------------------------------------------------
async def test_token_for_a_tenant_with_no_catalogue_is_refused(
    tmp_path: Path, redis: RedisClient, redis_url: str
) -> None:
    args = ("token", "create", "--tenant", "dmeo", "--scope", "admin", "--redis-url", redis_url)
    line = one_error(await asyncio.to_thread(ocs, tmp_path, *args), 2)
    assert line.startswith(f"--tenant: 'dmeo' has no catalogue in force in {redis_url}")
    assert await redis.keys("*") == []  # no token stored
    apply = await asyncio.to_thread(
        ocs, tmp_path, "catalog", "apply", str(DEMO), "--redis-url", redis_url
    )
    assert apply.returncode == 0, apply.stderr
    args = ("token", "create", "--tenant", "demo", "--scope", "admin", "--redis-url", redis_url)
    created = await asyncio.to_thread(ocs, tmp_path, *args)
    assert created.returncode == 0 and len(created.stdout.strip()) > 20, created.stderr


def test_billrun_after_today_needs_force(tmp_path: Path) -> None:
    tomorrow = (date.today() + timedelta(days=2)).isoformat()  # after today in any zone
    line = one_error(ocs(tmp_path, "billrun", "--cycle", "1", "--date", tomorrow), 2)
    assert line.startswith(f"billrun: --date: {tomorrow} is after today (")
    assert "in Europe/Berlin" in line and "--force" in line


def test_bad_flag_values_are_usage_errors(tmp_path: Path) -> None:
    line = one_error(ocs(tmp_path, "billrun", "--cycle", "1", "--date", "06/12/2026"), 2)
    assert line == "billrun: argument --date: '06/12/2026' is not a date (YYYY-MM-DD)"
    assert one_error(ocs(tmp_path, "cdr"), 2) == "cdr: give an action"
    line = one_error(ocs(tmp_path, "nonsense"), 2)
    assert line.startswith("argument COMMAND: invalid choice: 'nonsense'")


async def test_unknown_msisdn_hints_at_an_empty_store(
    tmp_path: Path, redis: RedisClient, redis_url: str
) -> None:
    show = ("balance", "show", "491700000001", "--redis-url", redis_url)
    line = one_error(await asyncio.to_thread(ocs, tmp_path, *show), 1)
    assert line == (
        f"no subscriber with MSISDN 491700000001; {redis_url} holds no catalogue: start"
        " `ocs demo` or run `ocs catalog apply FOLDER` with the same --data-dir / --redis-url"
    )
    apply = await asyncio.to_thread(
        ocs, tmp_path, "catalog", "apply", str(DEMO), "--redis-url", redis_url
    )
    assert apply.returncode == 0, apply.stderr
    found = await asyncio.to_thread(ocs, tmp_path, *show)
    assert found.returncode == 0 and "acme-pool" in found.stdout, found.stderr
    unknown = ("balance", "show", "1", "--redis-url", redis_url)
    line = one_error(await asyncio.to_thread(ocs, tmp_path, *unknown), 1)
    assert line == "no subscriber with MSISDN 1"


def test_an_unexpected_error_is_one_line_and_its_traceback_is_at_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def broken(args: object, settings: object) -> int:
        raise RuntimeError("the bug")

    monkeypatch.setattr(serve_commands, "_catalog_check", broken)
    assert cli.main(["catalog", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == "ocs: error: unexpected RuntimeError: the bug (a bug: --log-level DEBUG shows where)\n"
    )
    monkeypatch.setenv("OCS_LOG_LEVEL", "DEBUG")
    assert cli.main(["catalog", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and 'raise RuntimeError("the bug")' in err
    assert err.endswith(
        "ocs: error: unexpected RuntimeError: the bug (a bug: --log-level DEBUG shows where)\n"
    )
