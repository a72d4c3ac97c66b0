"""Structured logs: the JSON formatter, the charging path's error lines carrying the
Session-Id, and `ocs serve --log-format json` writing nothing but JSON lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from ocs.balance import BalanceStore
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.config import ConfigError
from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.diameter.constants import CcRequestType, ResultCode
from ocs.observability.logs import JsonFormatter, configure_logging, debug_only
from ocs.observability.metrics import ChargingMetrics
from ocs.rating.loader import CatalogueHolder, load_catalogue
from ocs.redis_client import client_for_url
from tests.charging.ccr import build_ccr
from tests.conftest import free_ports

DEMO = Path(__file__).resolve().parents[2] / "policies" / "demo"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writing JSON to a buffer; the previous handlers come back after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    configure_logging("INFO", "json", stream=buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_one_json_object_per_line_with_extra_fields(captured: io.StringIO) -> None:
    log = logging.getLogger("ocs.test")
    log.warning(
        "CCR %s refused", "gw;1", extra={"session_id": "gw;1", "result_code": 5030, "n": None}
    )
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        log.exception("with a traceback", extra={"origin_host": "pgw.test"})
    log.debug("below the level")
    first, second = lines(captured)
    assert first["level"] == "WARNING"
    assert first["logger"] == "ocs.test"
    assert first["msg"] == "CCR gw;1 refused"
    assert (first["session_id"], first["result_code"], first["n"]) == ("gw;1", 5030, None)
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert second["level"] == "ERROR"
    assert second["origin_host"] == "pgw.test"
    assert "Traceback" in second["exc"] and "broken\nacross lines" in second["exc"]
    assert len(captured.getvalue().splitlines()) == 2


def test_values_json_cannot_hold_are_written_as_text() -> None:
    record = logging.LogRecord("ocs.x", logging.INFO, __file__, 1, "m", None, None)
    record.path = Path("/tmp/x")
    assert json.loads(JsonFormatter().format(record))["path"] == "/tmp/x"


def test_an_unknown_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="log_level: 'LOUD'"):
        configure_logging("LOUD")


async def test_charging_error_lines_carry_the_session_id(
    tmp_path: Path, captured: io.StringIO
) -> None:
    """Redis unreachable (failure handling grants) and the failover journal unwritable (its
    folder is a file): the error line names the session, the peer and nothing is raised."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    dead_port = free_ports(1)[0]
    redis = client_for_url(f"redis://127.0.0.1:{dead_port}/0", timeout=0.5)
    config = ChargingConfig(data_dir=blocker / "data", request_timeout=1.0)
    app = ChargingApplication(
        BalanceStore(redis),
        CatalogueHolder(load_catalogue(DEMO)),
        config,
        Identity("ocs.test", "test"),
        ChargingMetrics(CollectorRegistry()),
    )
    session = "pgw.test;4711;logs"
    request = build_ccr(
        session,
        request_type=CcRequestType.INITIAL_REQUEST,
        number=0,
        msisdn="491700000001",
        msccs=[(1, 1000, 0)],
    )
    try:
        answer = await app.handle_ccr(request)
    finally:
        await redis.aclose()
    assert answer.get(A.AVP_RESULT_CODE) == int(ResultCode.DIAMETER_SUCCESS)  # granted
    errors = [x for x in lines(captured) if x["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["session_id"] == session
    assert errors[0]["origin_host"] == "pgw.test"
    assert "failover journal" in errors[0]["msg"]


async def _own_redis() -> tuple[asyncio.subprocess.Process, int]:
    """A redis-server of this test's, answering PING. A free port can be taken by another
    process before redis-server binds it (the machine runs other suites): then try another."""
    for _ in range(5):
        port = free_ports(1)[0]
        redis = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = client_for_url(f"redis://127.0.0.1:{port}/0", timeout=1)
        try:
            for _ in range(100):
                if redis.returncode is not None:
                    break
                try:
                    if await client.ping():
                        return redis, port
                except (OSError, RedisConnectionError):  # not up yet
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        if redis.returncode is None:
            redis.kill()
        await redis.wait()
    raise AssertionError("redis-server did not start on a free port in 5 tries")


async def test_ocs_serve_log_format_json(tmp_path: Path) -> None:
    """The real command: every line it writes to stderr is one JSON object."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed: the command needs a Redis of its own")
    redis, port = await _own_redis()
    env = {**os.environ, "OCS_LOG_FORMAT": "json", "OCS_LOG_LEVEL": "INFO"}
    argv = [sys.executable, "-m", "ocs.cli", "serve", "--port", "0", "--http-port", "0"]
    argv += ["--metrics-port", "0", "--redis-url", f"redis://127.0.0.1:{port}/0"]
    argv += ["--data-dir", str(tmp_path)]
    try:
        server = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert server.stdout is not None
        async with asyncio.timeout(60):  # announcements (API, metrics) come first
            while b"listening on" not in (listening := await server.stdout.readline()):
                assert listening, "ocs serve exited before listening"
        assert b"listening on" in listening
        server.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(server.communicate(), 60)
        assert server.returncode == 0
    finally:
        redis.terminate()
        await redis.wait()
    records = [json.loads(line) for line in err.decode().splitlines()]
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    warned = [r for r in records if r["level"] == "WARNING"]
    assert any("no catalogue applied" in r["msg"] for r in warned)
    assert any(r["msg"] == "shutting down" for r in records)


def test_json_lines_carry_no_terminal_colour(captured: io.StringIO) -> None:
    """uvicorn logs a coloured copy of its message as ``color_message``; colour codes in a
    message or a field are removed: a collector stores text, not escape sequences."""
    logging.getLogger("uvicorn.error").warning(
        "\x1b[31mport\x1b[0m busy",
        extra={"color_message": "\x1b[1m%s\x1b[0m", "peer": "\x1b[32mpgw1\x1b[0m"},
    )
    text = captured.getvalue()
    assert "\x1b" not in text
    entry = json.loads(text)
    assert (entry["msg"], entry["peer"]) == ("port busy", "pgw1")
    assert "color_message" not in entry


def test_embedded_servers_narrate_at_debug_only() -> None:
    """pgserver logs every step of a start at INFO; that goes to the log at DEBUG only, and
    uvicorn's start-up lines and fontTools' font subsetting too (their warnings stay)."""
    debug_only("pgserver")
    stream = io.StringIO()
    configure_logging("INFO", "text", stream)
    logging.getLogger("pgserver").info("Running commandline: initdb ...")
    logging.getLogger("pgserver").error("Failed postgres command")
    logging.getLogger("uvicorn.error").info("Started server process [1]")
    logging.getLogger("fontTools.subset").info("maxp pruned")  # a child of a narrator
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    assert (
        stream.getvalue()
        .splitlines()[0]
        .endswith("WARNING uvicorn.error: Invalid HTTP request received.")
    )
    assert len(stream.getvalue().splitlines()) == 1
    stream = io.StringIO()
    configure_logging("DEBUG", "text", stream)
    logging.getLogger("pgserver").info("Running commandline: initdb ...")
    assert stream.getvalue().endswith("DEBUG pgserver: Running commandline: initdb ...\n")
