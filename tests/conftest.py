"""Redis back ends shared by the integration suites: the single server (``tests.balance.fixtures``)
and a local 3-master Redis Cluster started once per session from the ``redis-server`` binary.

Suites that take ``redis_backend`` run once per back end; the cluster runs carry the
``cluster`` mark (deselect them with ``-m "not cluster"``) and are skipped, with the reason,
when ``redis-server`` or ``redis-cli`` is not installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

CLUSTER_MASTERS: Final = 3
CLUSTER_START_TIMEOUT: Final = 30.0  # seconds to reach cluster_state:ok
REDIS_BACKENDS: Final = [
    pytest.param("single", id="single"),
    pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: runs against a local 3-master Redis Cluster (needs redis-server)"
    )


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """A test that runs ``ocs.cli.main`` in-process configures the root logger (handlers on
    the test's captured stderr, closed afterwards); later tests would log into a closed file
    and lose pytest's own capture handlers. Each test gets the root logger back as it was."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for handler in list(root.handlers):
        if handler not in saved[0]:
            root.removeHandler(handler)
    for handler in saved[0]:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(saved[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def _cli(cli: str, port: int, *args: str, timeout: float = 10.0) -> str:
    out = subprocess.run(
        [cli, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout + out.stderr


@contextlib.contextmanager
def redis_cluster(folder: Path, server: str, cli: str) -> Iterator[list[int]]:
    """Start ``CLUSTER_MASTERS`` redis-server processes, join them into one cluster with no
    replicas, wait for ``cluster_state:ok``; yields the ports; kills and reaps on exit."""
    ports = free_ports(CLUSTER_MASTERS)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = folder / str(port)
            node_dir.mkdir()
            log = (node_dir / "redis.log").open("wb")
            with log:
                procs.append(
                    subprocess.Popen(
                        [
                            server,
                            "--port",
                            str(port),
                            "--bind",
                            "127.0.0.1",
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            str(node_dir / "nodes.conf"),
                            "--cluster-node-timeout",
                            "2000",
                            "--dir",
                            str(node_dir),
                            "--save",
                            "",
                            "--appendonly",
                            "no",
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + CLUSTER_START_TIMEOUT
        for port in ports:
            while "PONG" not in _cli(cli, port, "ping"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start")
                time.sleep(0.05)
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=CLUSTER_START_TIMEOUT,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}")
        for port in ports:
            while "cluster_state:ok" not in _cli(cli, port, "cluster", "info"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node {port} never reached cluster_state:ok")
                time.sleep(0.05)
        yield ports
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``OCS_TEST_REDIS_CLUSTER_URL``, else a local cluster started for this session."""
    explicit = os.environ.get("OCS_TEST_REDIS_CLUSTER_URL")
    if explicit:
        yield explicit
        return
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("Redis Cluster tests need the redis-server and redis-cli binaries on PATH")
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster"), server, cli) as ports:
        yield f"redis+cluster://127.0.0.1:{ports[0]}"


@pytest.fixture(params=REDIS_BACKENDS)
def redis_backend(request: pytest.FixtureRequest) -> str:
    """``single`` or ``cluster``: suites that depend on it run on both."""
    backend: str = request.param
    return backend


def backend_url(request: pytest.FixtureRequest, backend: str, db: int) -> str:
    """The URL of ``backend`` for one suite: its own DB on the single server (the cluster
    only has DB 0, and suites flush it around each test)."""
    if backend == "cluster":
        url: str = request.getfixturevalue("redis_cluster_url")
        return url
    from tests.balance.fixtures import db_url

    base: str = request.getfixturevalue("redis_base_url")
    return db_url(base, db)
