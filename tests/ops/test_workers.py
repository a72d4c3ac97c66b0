"""`ocs serve --workers 2` as real processes on a real Redis: sessions on both workers, an RAR
asked on one worker reaches the session held by the other, /metrics sums both workers,
balances and usage records agree, SIGKILL of a worker mid-load loses no record (the peer
retransmits on a new connection and the supervisor restarts the worker), SIGTERM sends DPR
from every worker, and a server that cannot start says why in one line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocs.api import start_api
from ocs.api.auth import Scope, create_token
from ocs.balance.keys import PayerKeys
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity, make_answer
from ocs.diameter.codec import Message
from ocs.diameter.constants import Application, CcRequestType, Command, ResultCode
from ocs.diameter.node import Node, PeerInfo
from ocs.diameter.peer import LocalConfig, PeerState
from ocs.diameter.transport import DiameterProtocol, connect
from ocs.network.keys import session_key
from ocs.redis_client import RedisClient
from ocs.supervisor import STABLE_AFTER, Worker
from tests.api.conftest import TENANT, demo_documents
from tests.balance.fixtures import db_url, flushed_client, redis_base_url
from tests.charging.ccr import build_ccr
from tests.diameter.helpers import dwr
from tests.diameter.test_cli_serve import free_port

__all__ = ["redis_base_url"]

WORKERS_DB = 8  # 10: api, 11: bench_api, 12: offline, 13: balance, 14: charging
REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on \S+:(\d+) with (\d+) workers")
POOL = PayerKeys(f"{TENANT}:prepaid_pool:acme-pool")
POOL_BUCKET = "acme-pool"
IMSI_FIRST = 262010000000000  # the demo's 1,000 IoT SIMs pay from acme-pool
GRANT = 100_000
USED = 40_000


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    return db_url(redis_base_url, WORKERS_DB)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    async for client in flushed_client(redis_url):
        yield client


@pytest.fixture
async def token(redis_url: str, redis: RedisClient, tmp_path: Path) -> str:
    """The demo catalogue applied through the HTTP API (so the API knows the tenant), and an
    admin token of tenant demo."""
    settings = Settings(redis_url=redis_url, data_dir=tmp_path / "data", log_level="WARNING")
    api = await start_api(settings, host="127.0.0.1", port=0)
    admin = await create_token(redis, TENANT, Scope.ADMIN)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}") as client:
            r = await client.post(
                "/v1/catalogue",
                json={"documents": demo_documents()},
                headers={"Authorization": f"Bearer {admin}"},
                timeout=60,
            )
            assert r.status_code == 200, r.text
    finally:
        await api.stop()
    return admin


def server_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    env.update(OCS_REDIS_URL=redis_url, OCS_DATA_DIR=str(tmp_path / "data"))
    env.update(OCS_LOG_LEVEL="WARNING", OCS_SHUTDOWN_TIMEOUT="3")
    gateways = [*(f"pgw-{i}.test" for i in range(64)), "pgw-survivor.test"]
    peers = [{"origin_host": name, "addresses": ["127.0.0.1"]} for name in gateways]
    env.update(OCS_PEERS=json.dumps(peers))
    return env


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    port: int
    http_port: int
    metrics_port: int

    @classmethod
    async def start(cls, tmp_path: Path, redis_url: str, workers: int = 2) -> Served:
        """Start on three free ports; again on new ones (at most twice) when one of them was
        handed to someone else between ``free_port`` and the bind (its stderr says so)."""
        for attempt in range(3):
            served, log = await cls._start_once(tmp_path, redis_url, workers)
            if served is not None:
                return served
            if "in use" not in log or attempt == 2:
                raise AssertionError(f"ocs serve --workers did not start:\n{log}")
        raise AssertionError("unreachable")

    @classmethod
    async def _start_once(
        cls, tmp_path: Path, redis_url: str, workers: int
    ) -> tuple[Served | None, str]:
        port, http_port, metrics_port = free_port(), free_port(), free_port()
        stderr_file = tmp_path / "serve.stderr"
        stderr_file.write_bytes(b"")
        with stderr_file.open("ab") as stderr:
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "ocs.cli", "serve", "--workers", str(workers)),
                *("--host", "127.0.0.1", "--port", str(port)),
                *("--http-port", str(http_port), "--metrics-port", str(metrics_port)),
                cwd=REPO,
                env=server_env(tmp_path, redis_url),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert proc.stdout is not None
        line, match = "", None
        with contextlib.suppress(TimeoutError):  # announcements (API, metrics) come first
            async with asyncio.timeout(60):
                while match is None and (raw := await proc.stdout.readline()):
                    line = raw.decode()
                    match = LISTENING.search(line)
        if match is None:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            return None, f"{line!r}\n{stderr_file.read_text(errors='replace')}"
        assert (int(match.group(1)), int(match.group(2))) == (port, workers)
        return cls(proc, port, http_port, metrics_port), ""

    def worker_pids(self) -> set[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return {int(pid) for pid in children.split()}

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), 40)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        assert self.proc.stdout is not None
        await self.proc.stdout.read()
        return code

    async def metrics(self) -> dict[str, float]:
        """Every sample of /metrics by its name and labels."""
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
        assert r.status_code == 200
        samples: dict[str, float] = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples


@dataclass
class Gateway:
    """A PGW-like peer on one Diameter connection; it answers RAR/ASR with 2001."""

    name: str
    port: int
    proto: DiameterProtocol
    received: list[Message] = field(default_factory=list)

    @classmethod
    async def open(cls, port: int, name: str) -> Gateway:
        identity = Identity(name, "test")
        node = Node(identity)
        received: list[Message] = []

        async def answer(request: Message, peer: PeerInfo) -> Message:
            received.append(request)
            return make_answer(request, identity, ResultCode.DIAMETER_SUCCESS)

        node.register(Application.CREDIT_CONTROL, Command.RE_AUTH, answer)
        node.register(Application.CREDIT_CONTROL, Command.ABORT_SESSION, answer)
        proto = await connect(node, LocalConfig(identity=identity), "127.0.0.1", port)
        return cls(name, port, proto, received)

    async def reconnect(self) -> None:
        self.proto._close("test: reconnecting")
        gw = await Gateway.open(self.port, self.name)
        self.proto, self.received = gw.proto, gw.received

    async def close(self) -> None:
        self.proto._close("test done")
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(asyncio.shield(self.proto.closed), 5)


def imsi(i: int) -> str:
    return str(IMSI_FIRST + i)


async def charge(
    gw: Gateway, sid: str, rtype: int, number: int, sim: str, used: int, want: int
) -> Message:
    """One CCR; on a lost connection the gateway reconnects and retransmits it (T flag)."""
    retransmit = False
    for _ in range(10):
        request = build_ccr(
            sid,
            request_type=rtype,
            number=number,
            imsi=sim,
            msccs=[(10, want, used)],
            sgsn_mcc_mnc="26201",
            retransmit=retransmit,
            origin_host=gw.name,  # the peer's own: another one is answered 3010
        )
        try:
            return await gw.proto.send_request(request, timeout=10)
        except (ConnectionError, TimeoutError):
            await asyncio.sleep(0.2)
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                await gw.reconnect()
            retransmit = True
    raise AssertionError(f"{sid} #{number}: no answer after 10 attempts")


async def session_worker(redis: RedisClient, sid: str) -> str:
    """The worker id the session tracker recorded for ``sid`` (written in the background)."""
    for _ in range(200):
        worker = await redis.hget(session_key(sid), "worker")
        if worker:
            return worker.decode() if isinstance(worker, bytes) else str(worker)
        await asyncio.sleep(0.02)
    raise AssertionError(f"no worker recorded for {sid}")


async def gateways_on_both_workers(
    served: Served, redis: RedisClient, per_worker: int
) -> dict[str, list[Gateway]]:
    """Open connections until each of the two workers holds ``per_worker`` of them (the
    kernel picks the worker of each new connection); extra ones are closed."""
    by_worker: dict[str, list[Gateway]] = {}
    for i in range(64):
        gw = await Gateway.open(served.port, f"pgw-{i}.test")
        sid = f"{gw.name};probe"
        cca = await charge(gw, sid, CcRequestType.INITIAL_REQUEST, 0, imsi(999), 0, GRANT)
        assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS, cca
        worker = await session_worker(redis, sid)
        await charge(gw, sid, CcRequestType.TERMINATION_REQUEST, 1, imsi(999), 0, 0)
        held = by_worker.setdefault(worker, [])
        if len(held) < per_worker:
            held.append(gw)
        else:
            await gw.close()
        if len(by_worker) == 2 and all(len(g) >= per_worker for g in by_worker.values()):
            return by_worker
    raise AssertionError(f"64 connections did not reach both workers: {by_worker}")


async def pool_state(redis: RedisClient) -> dict[str, Any]:
    """The acme pool's bucket and its usage records (ids and committed octets)."""
    raw = await redis.hgetall(POOL.balances)
    bal = {_s(k): int(_s(v)) for k, v in raw.items()}
    ids: list[str] = []
    committed = 0
    for _, fields in await redis.xrange(POOL.stream):
        f = {_s(k): _s(v) for k, v in fields.items()}
        if f.get("kind") != "usage":
            continue
        ids.append(f["id"])
        committed += sum(int(n) for b, n in json.loads(f["alloc"]) if b == POOL_BUCKET)
    return {
        "credited": bal[f"{POOL_BUCKET}:i"],
        "available": bal[f"{POOL_BUCKET}:a"],
        "reserved": bal[f"{POOL_BUCKET}:r"],
        "used": bal[f"{POOL_BUCKET}:u"],
        "committed": committed,
        "record_ids": ids,
    }


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def ccr_totals(samples: dict[str, float]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for name, value in samples.items():
        match = re.match(r'ocs_ccr_total\{.*type="(\w+)"', name)
        if match:
            totals[match.group(1)] += int(value)
    return totals


async def run_session(gw: Gateway, sid: str, sim: str, updates: int) -> int:
    """CCR-I, ``updates`` CCR-U and a CCR-T, each reporting USED octets after the first;
    every answer must be 2001. Returns the octets reported used."""
    steps = [CcRequestType.INITIAL_REQUEST] + [CcRequestType.UPDATE_REQUEST] * updates
    steps.append(CcRequestType.TERMINATION_REQUEST)
    reported = 0
    for number, rtype in enumerate(steps):
        used = 0 if number == 0 else USED
        want = 0 if rtype == CcRequestType.TERMINATION_REQUEST else GRANT
        cca = await charge(gw, sid, rtype, number, sim, used, want)
        assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS, (sid, number, cca)
        reported += used
    return reported


async def test_two_workers_share_rar_metrics_and_balances(
    tmp_path: Path, redis_url: str, redis: RedisClient, token: str
) -> None:
    served = await Served.start(tmp_path, redis_url)
    gateways: list[Gateway] = []
    try:
        assert len(served.worker_pids()) == 2
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{served.metrics_port}/readyz", timeout=10)
        assert r.status_code == 200 and r.json()["checks"] == {"workers": "ok"}, r.text
        by_worker = await gateways_on_both_workers(served, redis, per_worker=1)
        (w1, [gw1]), (w2, [gw2]) = sorted(by_worker.items())
        gateways = [gw1, gw2]

        # one subscriber with a session on each worker; one HTTP request asks for both RARs,
        # so at least one of them crosses from the worker that took the request to the other
        sim = imsi(7)
        sids = {gw1.name: f"{gw1.name};rar", gw2.name: f"{gw2.name};rar"}
        for gw in gateways:
            cca = await charge(gw, sids[gw.name], CcRequestType.INITIAL_REQUEST, 0, sim, 0, GRANT)
            assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
            await session_worker(redis, sids[gw.name])
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{served.http_port}"
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            r = await client.post(f"/v1/subscriptions/{sim}/sessions/re-auth?wait=5")
        assert r.status_code == 200, r.text
        outcomes = {o["session"]: o for o in r.json()}
        assert set(outcomes) == set(sids.values())
        assert {o["status"] for o in outcomes.values()} == {"answered"}
        assert {o["result_code"] for o in outcomes.values()} == {2001}
        assert outcomes[sids[gw1.name]]["worker"] == w1
        assert outcomes[sids[gw2.name]]["worker"] == w2
        for gw in gateways:  # each RAR came on the connection that holds its session
            assert [m.get(A.AVP_SESSION_ID) for m in gw.received] == [sids[gw.name]]
            assert gw.received[0].command == Command.RE_AUTH
        for gw in gateways:
            await charge(gw, sids[gw.name], CcRequestType.TERMINATION_REQUEST, 1, sim, 0, 0)

        before = ccr_totals(await served.metrics())
        reported = sum(
            await asyncio.gather(
                *(
                    run_session(gw, f"{gw.name};s{i}", imsi(i), 3)
                    for gw in gateways
                    for i in range(5)
                )
            )
        )
        after = await served.metrics()
        sent = {"initial": 10, "update": 30, "termination": 10}
        delta = ccr_totals(after)
        delta.subtract(before)
        assert {k: v for k, v in delta.items() if v} == sent  # summed over both workers
        assert after["ocs_workers_alive"] == 2

        state = await pool_state(redis)
        assert state["committed"] == reported
        assert len(state["record_ids"]) == len(set(state["record_ids"]))
        assert state["reserved"] == 0
        assert state["credited"] == state["available"] + state["committed"] + state["reserved"]
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            views = [(await client.get("/v1/pools/acme-pool")).json() for _ in range(6)]
        for view in views:  # whichever worker answers, the same balance
            assert (view["available"], view["reserved"]) == (state["available"], 0)

        # SIGTERM with CCRs in flight on both workers (Redis writes paused for a second, so
        # their charges wait; the DWA after them says each worker has read them): every
        # one is answered, then each worker sends DPR, and everything exits 0
        await redis.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
        in_flight = [
            asyncio.ensure_future(
                gw.proto.send_request(
                    build_ccr(
                        f"{gw.name};drain{i}",
                        request_type=CcRequestType.INITIAL_REQUEST,
                        number=0,
                        imsi=imsi(20 + i),
                        msccs=[(10, GRANT, 0)],
                        sgsn_mcc_mnc="26201",
                        origin_host=gw.name,
                    ),
                    timeout=20,
                )
            )
            for gw in gateways
            for i in range(3)
        ]
        for gw in gateways:
            dwa = await gw.proto.send_request(dwr(origin_host=gw.name), timeout=10)
            assert dwa.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
        served.proc.send_signal(signal.SIGTERM)
        for answer in await asyncio.gather(*in_flight):
            assert answer.command == Command.CREDIT_CONTROL and not answer.is_request
            assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
        for gw in gateways:
            await asyncio.wait_for(asyncio.shield(gw.proto.closed), 20)
            assert gw.proto.peer.state == PeerState.CLOSING  # closed after our DPA to a DPR
        assert await served.stop() == 0
    finally:
        for gw in gateways:
            await gw.close()
        await served.stop()


async def test_sigkill_of_a_worker_mid_load_loses_no_record(
    tmp_path: Path, redis_url: str, redis: RedisClient, token: str
) -> None:
    served = await Served.start(tmp_path, redis_url)
    gateways: list[Gateway] = []
    try:
        pids = served.worker_pids()
        by_worker = await gateways_on_both_workers(served, redis, per_worker=2)
        gateways = [gw for held in by_worker.values() for gw in held]
        before = await pool_state(redis)
        answered: list[int] = []
        midway = asyncio.Event()

        async def sessions(gw: Gateway, first: int) -> int:
            total = 0
            for i in range(first, first + 6):
                total += await run_session(gw, f"{gw.name};k{i}", imsi(i), 8)
                answered.append(1)
                if len(answered) == 4:  # some sessions done, every connection busy
                    midway.set()
            return total

        load = asyncio.gather(*(sessions(gw, 10 * n) for n, gw in enumerate(gateways)))
        await asyncio.wait_for(midway.wait(), 60)
        victim = min(pids)  # each worker holds two busy connections
        os.kill(victim, signal.SIGKILL)
        reported = sum(await asyncio.wait_for(load, 90))

        state = await pool_state(redis)
        assert state["committed"] - before["committed"] == reported  # each octet once
        assert len(state["record_ids"]) == len(set(state["record_ids"]))  # no record twice
        assert state["reserved"] == 0
        assert state["credited"] == state["available"] + state["committed"] + state["reserved"]

        for _ in range(300):  # the supervisor restarted the dead worker, which listens
            now = served.worker_pids()
            samples = await served.metrics()
            if samples["ocs_workers_alive"] == 2 and victim not in now:
                break
            await asyncio.sleep(0.1)
        assert len(now) == 2 and victim not in now and len(now & pids) == 1
        assert samples["ocs_workers_alive"] == 2
        assert samples['ocs_worker_restarts_total{reason="killed by SIGKILL"}'] == 1
    finally:
        for gw in gateways:
            await gw.close()
        assert await served.stop() == 0


@pytest.mark.timeout(300)
async def test_a_worker_whose_restart_fails_is_retried_until_it_starts(
    tmp_path: Path, redis_url: str, redis: RedisClient, token: str
) -> None:
    """The HTTP port the workers are configured for is taken by a foreign listener when one
    of them is killed (its settings, written by the supervisor, are pointed at that port):
    its restarts fail (logged, the delay doubling) while the other worker keeps serving,
    until the settings are usable again."""
    served = await Served.start(tmp_path, redis_url)
    try:
        victim = min(served.worker_pids())
        with socket.socket() as taken:  # no SO_REUSEPORT: nobody else may bind it
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            settings_file = worker_settings_file(victim)
            usable = change_settings(settings_file, http_port=taken.getsockname()[1])
            os.kill(victim, signal.SIGKILL)
            log = tmp_path / "serve.stderr"
            for _ in range(900):  # a worker start can take seconds on a loaded machine
                if "restart failed" in log.read_text():
                    break
                await asyncio.sleep(0.1)
            text = log.read_text()
            assert "died (killed by SIGKILL); restarting in 0.5 s" in text
            assert "restart failed" in text and "(--http-port)" in text and "in use" in text
            assert "restarting in 1.0 s" in text  # the delay doubles while restarts fail
            gw = await Gateway.open(served.port, "pgw-survivor.test")  # the other one serves
            cca = await charge(
                gw, "pgw-survivor.test;1", CcRequestType.INITIAL_REQUEST, 0, imsi(3), 0, GRANT
            )
            assert cca.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
            await gw.close()
        change_settings(settings_file, **usable)
        for _ in range(900):
            samples = await served.metrics()
            if samples["ocs_workers_alive"] == 2:
                break
            await asyncio.sleep(0.1)
        assert samples["ocs_workers_alive"] == 2
        assert samples['ocs_worker_restarts_total{reason="killed by SIGKILL"}'] == 1
        assert victim not in served.worker_pids()
    finally:
        assert await served.stop() == 0


def worker_settings_file(pid: int) -> Path:
    """The settings file the supervisor gave worker ``pid`` (what its restarts read)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return Path(argv[argv.index(b"--settings") + 1].decode())


def change_settings(path: Path, **changes: Any) -> dict[str, Any]:
    """Change fields of a worker settings file; returns the values it replaced."""
    values = json.loads(path.read_text())
    before = {k: values[k] for k in changes}
    path.write_text(json.dumps(values | changes))
    return before


def serve_fails(tmp_path: Path, redis_url: str, *args: str) -> str:
    """Run `ocs serve --workers 2 ARGS` that must not start; its one line of stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "ocs.cli", "serve", "--workers", "2", *args],
        cwd=REPO,
        env=server_env(tmp_path, redis_url) | {"OCS_HTTP_PORT": "0", "OCS_METRICS_PORT": "0"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1  # a failure, not a usage error
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ocs: error: ")
    return line


def test_workers_that_cannot_reach_redis_say_so_once(tmp_path: Path) -> None:
    """Every worker fails the same way; the operator reads it once."""
    closed = free_port()
    line = serve_fails(tmp_path, f"redis://127.0.0.1:{closed}/0", "--port", "0")
    assert "Redis" in line and str(closed) in line


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = serve_fails(tmp_path, "redis://127.0.0.1:1/0", "--port", str(port))
    assert f"Diameter port {port} (--port) on 127.0.0.1: already in use" in line


def test_workers_flag_is_validated_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ocs.cli", "serve", "--workers", "0"],
        cwd=REPO,
        env=server_env(tmp_path, "redis://127.0.0.1:1/0"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "workers" in line and "Traceback" not in result.stderr


def test_restart_delay_doubles_while_a_worker_keeps_dying_and_resets_after_it_lived() -> None:
    worker = Worker(1, started=100.0)
    delays = [worker.next_delay(100.0 + i) for i in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    worker.started = 200.0
    assert worker.next_delay(200.0 + STABLE_AFTER) == 0.5
