"""`ocs serve` as a real process: listens, talks Diameter over TCP, is configured by flags, OCS_*
environment variables or a TOML file, reports bad configuration in one line, and on SIGTERM
disconnects its peers with DPR before exiting 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity, make_answer
from ocs.diameter.codec import Message, decode
from ocs.diameter.constants import Command, DisconnectCause, ResultCode
from ocs.diameter.framer import Framer

from .helpers import CLIENT_HOST, CLIENT_REALM, ccr, cer, dwr

REPO = Path(__file__).resolve().parents[2]
CLIENT = Identity(CLIENT_HOST, CLIENT_REALM)
LISTENING = re.compile(rb"listening on (\S+):(\d+)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test's environment without any OCS_* setting of the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    env["OCS_DATA_DIR"] = str(tmp_path / "data")
    env["OCS_HTTP_PORT"] = "0"  # the HTTP API and /metrics have their own test below
    env["OCS_METRICS_PORT"] = "0"
    env.update(extra)
    return env


class OcsServe:
    """`python -m ocs.cli serve ...` as a subprocess; ``port`` is read from its listening line."""

    def __init__(
        self, proc: asyncio.subprocess.Process, port: int, line: str, folder: Path
    ) -> None:
        self.proc = proc
        self.port = port
        self.line = line
        self.folder = folder

    @classmethod
    async def start(cls, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> OcsServe:
        stderr = (tmp_path / "ocs-serve.stderr").open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ocs.cli",
                "serve",
                *args,
                cwd=REPO,
                env=env if env is not None else clean_env(tmp_path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        finally:
            stderr.close()
        assert proc.stdout is not None
        line, match = b"", None
        with contextlib.suppress(TimeoutError):  # announcements (API, metrics) come first
            async with asyncio.timeout(30):
                while match is None and (line := await proc.stdout.readline()):
                    match = LISTENING.search(line)
        if match is None:
            await cls._reap(proc, signal.SIGKILL)
            log = (tmp_path / "ocs-serve.stderr").read_text(errors="replace")
            raise AssertionError(f"ocs serve did not start: {line!r}\n{log}")
        return cls(proc, int(match.group(2)), line.decode(), tmp_path)

    @staticmethod
    async def _reap(proc: asyncio.subprocess.Process, sig: int) -> int:
        if proc.returncode is None:
            proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            code = await proc.wait()
        assert proc.stdout is not None
        await proc.stdout.read()  # to EOF, so the pipe transport closes
        return code

    async def stop(self) -> int:
        """SIGTERM; returns the exit status. A clean exit leaves no embedded Redis behind."""
        code = await self._reap(self.proc, signal.SIGTERM)
        if code == 0:
            assert embedded_servers_in(self.folder) == [], "ocs serve left its embedded Redis"
        return code


class Peer:
    """A Diameter peer on plain streams: sends exactly the messages a test builds."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = Framer()
        self.queue: list[bytes] = []

    @classmethod
    async def open(cls, port: int) -> Peer:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv_raw(self, timeout: float = 10.0) -> bytes:
        while not self.queue:
            data = await asyncio.wait_for(self.reader.read(1 << 16), timeout)
            if not data:
                raise ConnectionError("closed by server")
            self.queue.extend(self.framer.feed(data))
        return self.queue.pop(0)

    async def recv(self, timeout: float = 10.0) -> Message:
        return decode(await self.recv_raw(timeout))

    async def request(self, msg: Message) -> Message:
        await self.send(msg.encode())
        return await self.recv()

    async def at_eof(self, timeout: float = 10.0) -> bool:
        with contextlib.suppress(ConnectionError, TimeoutError):
            while await asyncio.wait_for(self.reader.read(1 << 16), timeout):
                pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def open_peer(port: int) -> Peer:
    peer = await Peer.open(port)
    cea = await peer.request(cer())
    assert cea.command == Command.CAPABILITIES_EXCHANGE and not cea.is_request
    assert cea.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    return peer


async def test_serve_answers_cer_dwr_ccr_and_sends_dpr_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    server = await OcsServe.start(
        tmp_path,
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--origin-host", "ocs.test", "--origin-realm", "test"),
        *("--peer", f"{CLIENT_HOST}=127.0.0.1"),
    )
    assert server.port == port
    peer = await Peer.open(port)
    try:
        cea = await peer.request(cer())
        assert cea.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
        assert cea.get(A.AVP_ORIGIN_HOST) == "ocs.test"
        assert cea.get(A.AVP_ORIGIN_REALM) == "test"

        dwa = await peer.request(dwr(hbh=42))
        assert dwa.command == Command.DEVICE_WATCHDOG and not dwa.is_request
        assert dwa.hbh_id == 42
        assert dwa.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS

        cca = await peer.request(ccr(hbh=7, e2e=70))
        assert cca.command == Command.CREDIT_CONTROL and not cca.is_request
        assert (cca.hbh_id, cca.e2e_id) == (7, 70)
        assert cca.get(A.AVP_RESULT_CODE) is not None  # charging may not be attached yet
        assert cca.get(A.AVP_SESSION_ID) == "pgw.test;1;1"
        assert cca.get(A.AVP_ORIGIN_HOST) == "ocs.test"

        server.proc.send_signal(signal.SIGTERM)
        dpr = await peer.recv()
        assert dpr.command == Command.DISCONNECT_PEER and dpr.is_request
        assert dpr.get(A.AVP_ORIGIN_HOST) == "ocs.test"
        assert dpr.get(A.AVP_DISCONNECT_CAUSE) == DisconnectCause.REBOOTING
        dpa = make_answer(dpr, CLIENT, ResultCode.DIAMETER_SUCCESS)
        await peer.send(dpa.encode())
        assert await peer.at_eof()
    finally:
        await peer.close()
        code = await server.stop()
    assert code == 0


def embedded_servers_in(folder: Path) -> list[int]:
    """Pids of processes (the embedded redis-server) whose working directory is in ``folder``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if proc.name.isdigit() and cwd.startswith(str(folder)):
            pids.append(int(proc.name))
    return pids


async def test_serve_exposes_metrics_and_the_http_api(tmp_path: Path) -> None:
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    server = await OcsServe.start(
        tmp_path,
        *("--port", str(port), "--origin-host", "ocs.test", "--origin-realm", "test"),
        *("--peer", f"{CLIENT_HOST}=127.0.0.1"),
        *("--http-port", str(http_port), "--metrics-port", str(metrics_port)),
    )
    peer = await Peer.open(port)
    try:
        await peer.request(cer())
        cca = await peer.request(ccr(hbh=8, e2e=80))
        assert cca.get(A.AVP_RESULT_CODE) is not None
        metrics = await http_get(metrics_port, "/metrics")
        assert metrics.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))
        assert b"ocs_ccr_total{" in metrics
        assert b"ocs_ccr_latency_seconds_bucket" in metrics
        openapi = await http_get(http_port, "/openapi.json")
        assert openapi.startswith(b"HTTP/1.1 200") and b'"openapi"' in openapi
    finally:
        await peer.close()
        code = await server.stop()
    assert code == 0


async def http_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_port_and_origin_host_from_environment(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(
        tmp_path,
        OCS_PORT=str(port),
        OCS_ORIGIN_HOST="env.ocs.test",
        OCS_PEERS=f'[{{"origin_host": "{CLIENT_HOST}", "addresses": ["127.0.0.1/8"]}}]',
    )
    server = await OcsServe.start(tmp_path, env=env)
    try:
        assert server.port == port
        peer = await open_peer(port)
        cca = await peer.request(ccr())
        assert cca.get(A.AVP_ORIGIN_HOST) == "env.ocs.test"
        await peer.close()
    finally:
        code = await server.stop()
    assert code == 0


async def test_settings_from_toml_file_and_flags_override_it(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "ocs.toml"
    config.write_text(
        f'[ocs]\nport = {port}\norigin_host = "file.ocs.test"\norigin_realm = "file-realm"\n'
    )
    server = await OcsServe.start(tmp_path, "--config", str(config), "--origin-realm", "flag-realm")
    try:
        assert server.port == port
        peer = await Peer.open(port)
        cea = await peer.request(cer())
        assert cea.get(A.AVP_ORIGIN_HOST) == "file.ocs.test"
        assert cea.get(A.AVP_ORIGIN_REALM) == "flag-realm"
        await peer.close()
    finally:
        code = await server.stop()
    assert code == 0


def run_ocs(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocs.cli", *args],
        cwd=REPO,
        env=clean_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_config_value_is_one_line_naming_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[ocs]\nport = "not-a-port"\n')
    result = run_ocs(tmp_path, "serve", "--config", str(config))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert str(config) in line and "port" in line


def test_unknown_config_field_is_one_line_naming_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "typo.toml"
    config.write_text('[ocs]\norigin_hots = "x"\n')
    result = run_ocs(tmp_path, "serve", "--config", str(config))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert str(config) in line and "origin_hots" in line


def test_unreadable_config_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    result = run_ocs(tmp_path, "serve", "--config", str(missing))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert str(missing) in line


def test_help_lists_commands(tmp_path: Path) -> None:
    result = run_ocs(tmp_path, "--help")
    assert result.returncode == 0
    for command in ("serve", "demo", "catalog", "balance"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command
