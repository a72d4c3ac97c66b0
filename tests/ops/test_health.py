"""/healthz and /readyz over real HTTP: `ocs serve` (charging attacher, Diameter server, HTTP
API, metrics port) on a Redis server of this test's own, which the test stops and starts
again; and the drain service (`ocs cdr drain --follow`) on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from ocs.api.asgi import serve_api
from ocs.api.auth import Scope, create_token
from ocs.api.cli import main_api
from ocs.balance.keys import PAYERS, PayerKeys
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.diameter.constants import CcRequestType, ResultCode
from ocs.diameter.node import Node
from ocs.diameter.peer import LocalConfig
from ocs.diameter.transport import connect as diameter_connect
from ocs.errors import PortInUse
from ocs.observability import endpoint
from ocs.observability.health import Health, default_health, postgres_check, redis_check
from ocs.offline import late
from ocs.offline.billrun import BillRunError
from ocs.offline.cli import main_billrun
from ocs.offline.db import connect
from ocs.offline.drain import Drainer
from ocs.offline.service import run_service
from ocs.process import start
from ocs.redis_client import client_for_url
from ocs.wiring import charging_attacher
from tests.api.conftest import demo_documents
from tests.charging.ccr import build_ccr
from tests.conftest import free_ports
from tests.offline.billing_fixture import billing_catalogue
from tests.offline.conftest import pg_admin_url, pg_url

__all__ = ["pg_admin_url", "pg_url"]

DEMO: Final = Path(__file__).resolve().parents[2] / "policies" / "demo"
WAIT: Final = 20.0  # seconds a state change may take to show (polling, not timing)
MASTER: Final = bytes(range(32))


class OwnRedis:
    """A redis-server on a free port that the test may stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_ports(1)[0]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ping = ["redis-cli", "-p", str(self.port), "ping"]
        for _ in range(int(WAIT / 0.05)):
            if subprocess.run(ping, capture_output=True, check=False).stdout.strip() == b"PONG":
                return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        pytest.skip("redis-server / redis-cli not installed: the test stops its own Redis")
    redis = OwnRedis(tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


def serve_settings(redis_url: str, data_dir: Path, **more: Any) -> Settings:
    http_port, metrics_port = free_ports(2)
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "data_dir": data_dir,
        "host": "127.0.0.1",
        "port": 0,
        "http_port": http_port,
        "metrics_port": metrics_port,
        "origin_host": "ocs.test",
        "origin_realm": "test",
        "log_level": "WARNING",
        "shutdown_timeout": 2.0,
        "peers": [{"origin_host": "pgw.test", "addresses": ["127.0.0.1"]}],
    }
    return Settings(**(values | more))


async def until(probe: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``probe`` until it holds (a state change, not a duration, is what is tested)."""
    for _ in range(int(WAIT / 0.05)):
        if await probe():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the expected state was not reached")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def test_serve_is_ready_and_not_ready_while_redis_is_down(
    own_redis: OwnRedis, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    settings = serve_settings(own_redis.url, tmp_path)
    metrics = f"http://127.0.0.1:{settings.metrics_port}"
    api = f"http://127.0.0.1:{settings.http_port}"
    runtime = await start(settings, charging_attacher(str(DEMO)))
    try:
        for base in (metrics, api):
            alive = await http.get(f"{base}/healthz")
            assert alive.status_code == 200
            assert alive.json() == {"status": "alive"}
        ready = await http.get(f"{metrics}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "status": "ready",
            "checks": {"catalogue": "ok", "diameter": "ok", "redis": "ok"},
        }
        ready = await http.get(f"{api}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {
            "api_redis": "ok",
            "catalogue": "ok",
            "diameter": "ok",
            "redis": "ok",
        }

        scraped = samples((await http.get(f"{metrics}/metrics")).text)
        for check in ("catalogue", "diameter", "redis"):
            assert value(scraped, "ocs_ready", check=check) == 1.0

        own_redis.stop()
        down = await http.get(f"{metrics}/readyz")
        assert down.status_code == 503
        scraped = samples((await http.get(f"{metrics}/metrics")).text)
        assert value(scraped, "ocs_ready", check="redis") == 0.0  # the alert's series
        assert value(scraped, "ocs_ready", check="catalogue") == 1.0
        assert down.headers["content-type"] == "application/json"
        checks = down.json()["checks"]
        assert checks["redis"] != "ok"
        assert (checks["catalogue"], checks["diameter"]) == ("ok", "ok")
        problem = await http.get(f"{api}/readyz")
        assert problem.status_code == 503
        assert problem.headers["content-type"] == "application/problem+json"
        body = problem.json()
        assert body["status"] == 503
        assert body["type"].endswith("/not-ready")
        assert body["detail"] == "failing: api_redis, redis"
        assert body["checks"] == {
            "api_redis": "failing",  # no reasons to tenants: they are on the metrics port
            "catalogue": "ok",
            "diameter": "ok",
            "redis": "failing",
        }
        alive = await http.get(f"{metrics}/healthz")
        assert alive.status_code == 200  # the process lives on: not a restart case

        own_redis.start()

        async def ready_again() -> bool:
            return (await http.get(f"{metrics}/readyz")).status_code == 200

        await until(ready_again)

        await runtime.server.stop(1.0)  # shutting down: the listener is closed first
        closing = await http.get(f"{metrics}/readyz")
        assert closing.status_code == 503
        assert closing.json()["checks"]["diameter"] == "Diameter server not listening"
    finally:
        await runtime.stop()
    assert default_health().names == []  # every component removed its checks


async def test_serve_without_a_catalogue_is_not_ready(
    own_redis: OwnRedis, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    settings = serve_settings(own_redis.url, tmp_path, http_port=0)
    runtime = await start(settings, charging_attacher(None))
    try:
        got = await http.get(f"http://127.0.0.1:{settings.metrics_port}/readyz")
        assert got.status_code == 503
        assert got.json()["checks"] == {
            "catalogue": "no catalogue applied (ocs catalog apply PATH)",
            "diameter": "ok",
            "redis": "ok",
        }
        other = await http.get(f"http://127.0.0.1:{settings.metrics_port}/nothing-here")
        assert other.status_code == 404
        scrape = await http.get(f"http://127.0.0.1:{settings.metrics_port}/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        assert "ocs_active_sessions" in scrape.text
    finally:
        await runtime.stop()


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_drain_service_reports_postgresql(
    own_redis: OwnRedis, pg_url: str, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    settings = serve_settings(own_redis.url, tmp_path, database_url=pg_url)
    base = f"http://127.0.0.1:{settings.metrics_port}"
    db = await connect(settings)
    redis = client_for_url(own_redis.url, timeout=5)
    stop = asyncio.Event()
    drainer = Drainer(redis, db, MASTER)
    checks = {"redis": redis_check(redis), "postgresql": postgres_check(db.pool)}
    service = asyncio.create_task(
        run_service("drain", drainer.run, settings, interval=0.05, checks=checks, stop=stop)
    )
    try:

        async def passes() -> bool:
            got = await http.get(f"{base}/metrics")
            return _sample(got.text, "ocs_drain_passes_total") >= 1

        await until(passes)
        ready = await http.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"postgresql": "ok", "redis": "ok"}
        before = _sample((await http.get(f"{base}/metrics")).text, "ocs_postgres_errors_total")

        await db.close()  # PostgreSQL gone for this process; then a record to drain
        payer = "tops:pool:p1"
        await redis.sadd(PAYERS, payer)
        await redis.xadd(PayerKeys(payer).stream, {"kind": "usage", "id": "r1", "payer": payer})

        async def counted() -> bool:
            text = (await http.get(f"{base}/metrics")).text
            return _sample(text, "ocs_postgres_errors_total") > before

        await until(counted)
        down = await http.get(f"{base}/readyz")
        assert down.status_code == 503
        assert down.json()["checks"]["postgresql"] != "ok"
        assert down.json()["checks"]["redis"] == "ok"
    finally:
        stop.set()
        assert await service == 0
        await redis.aclose()
    assert default_health().names == []


# -- what the metrics port reports moves when the thing happens ----------------------------
BOB_IMSI: Final = "262019999999999"  # policies/demo: wallet bob-wallet, 10.00 EUR
QUOTA: Final = 100_000_000  # bytes asked for in every CCR (the default max_quota)
GATEWAY: Final = Identity("pgw.test", "test")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    got: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return got.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_port_reports_sessions_exhaustion_and_top_ups(
    own_redis: OwnRedis, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    """A wallet session charged until the wallet is empty (last units with FUI terminate,
    then 4012), and a top-up over the API (its replay not counted)."""
    settings = serve_settings(own_redis.url, tmp_path)
    scrape = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    runtime = await start(settings, charging_attacher(str(DEMO)))
    redis = client_for_url(own_redis.url, timeout=5)
    try:
        before = samples((await http.get(scrape)).text)
        gateway = await diameter_connect(
            Node(GATEWAY), LocalConfig(identity=GATEWAY), "127.0.0.1", runtime.server.port
        )
        session, used, codes = "pgw.test;metrics;1", 0, []
        for n in range(40):
            rtype = CcRequestType.INITIAL_REQUEST if n == 0 else CcRequestType.UPDATE_REQUEST
            request = build_ccr(
                session, request_type=rtype, number=n, imsi=BOB_IMSI, msccs=[(10, QUOTA, used)]
            )
            answer = await gateway.send_request(request, timeout=10)
            mscc = answer.find(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
            assert mscc is not None
            code = mscc.find(A.AVP_RESULT_CODE)
            codes.append(int(code.value) if code is not None else 0)
            if codes[-1] == int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED):
                break
            gsu = mscc.find(A.AVP_GRANTED_SERVICE_UNIT)
            octets = gsu.find(A.AVP_CC_TOTAL_OCTETS) if gsu is not None else None
            used = int(octets.value) if octets is not None else 0
        assert codes[-1] == int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED), codes
        await gateway.disconnect(2.0)

        api = f"http://127.0.0.1:{settings.http_port}"
        admin = {"Authorization": f"Bearer {await create_token(redis, 'demo', Scope.ADMIN)}"}
        applied = await http.post(
            f"{api}/v1/catalogue", json={"documents": demo_documents()}, headers=admin
        )
        assert applied.status_code == 200, applied.text  # the API's view of tenant demo
        token = await create_token(redis, "demo", Scope.TOP_UP)
        top_up = f"{api}/v1/wallets/bob-wallet/top-ups"
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "metrics-1"}
        for _ in range(2):  # the second is a replay
            got = await http.post(top_up, json={"amount": 500, "currency": "EUR"}, headers=headers)
            assert got.status_code == 201, got.text
        after = samples((await http.get(scrape)).text)
    finally:
        await redis.aclose()
        await runtime.stop()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    granted = len(codes) - 1
    assert delta("ocs_reservations_granted_total") == granted
    assert delta("ocs_final_unit_indications_total", action="terminate") == 1
    assert delta("ocs_quota_exhausted_total", payer_kind="wallet") == 1
    assert delta("ocs_ccr_total", type="initial", result="2001") == 1
    assert delta("ocs_ccr_latency_seconds_count", type="update") == len(codes) - 1
    assert delta("ocs_active_sessions") == 1  # opened, never terminated
    assert delta("ocs_topups_total", currency="EUR") == 1
    assert delta("ocs_topup_amount_minor_total", currency="EUR") == 500


def registry_value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_bill_run_reports_its_progress(pg_url: str, tmp_path: Path) -> None:
    """`ocs billrun --metrics-port N` on a real PostgreSQL: runs started and finished by
    outcome, accounts selected and done (the process-wide registry its port serves)."""
    settings = Settings(database_url=pg_url, data_dir=tmp_path, metrics_linger=0)
    folder = tmp_path / "catalogue"
    billing_catalogue(folder, f"t{uuid.uuid4().hex[:10]}")
    started = registry_value("ocs_billrun_runs_started_total")
    issued = registry_value("ocs_billrun_runs_finished_total", outcome="issued")
    preview = registry_value("ocs_billrun_runs_finished_total", outcome="preview")
    port = free_ports(1)[0]
    run = {"cycle": 10, "on": date(2025, 4, 10), "catalog": folder, "metrics_port": port}
    assert await asyncio.to_thread(main_billrun, settings, preview=True, **run) == 0
    assert await asyncio.to_thread(main_billrun, settings, out_dir=tmp_path / "out", **run) == 0
    assert registry_value("ocs_billrun_runs_started_total") == started + 2
    assert registry_value("ocs_billrun_runs_finished_total", outcome="preview") == preview + 1
    assert registry_value("ocs_billrun_runs_finished_total", outcome="issued") == issued + 1
    total = registry_value("ocs_billrun_accounts")
    assert total > 0
    assert registry_value("ocs_billrun_accounts_done") == total


def test_a_stuck_event_loop_is_neither_alive_nor_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics port answers from its own thread: when the loop the components run in
    does not get to the probe, /healthz and /readyz say so instead of hanging."""
    monkeypatch.setattr(endpoint, "LIVENESS_TIMEOUT", 0.2)
    monkeypatch.setattr(endpoint, "LOOP_LAG", 0.2)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    release = threading.Event()
    health = Health(timeout=0.2)
    ops = endpoint.start_ops_server(0, health=health, loop=loop)
    base = f"http://127.0.0.1:{ops.port}"
    try:
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready", "checks": {}}
        loop.call_soon_threadsafe(release.wait, 30)  # the loop blocks in a callback
        stuck = httpx.get(f"{base}/healthz", timeout=10)
        assert stuck.status_code == 503
        assert stuck.json() == {"status": "event loop not answering"}
        not_ready = httpx.get(f"{base}/readyz", timeout=10)
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"] == {"loop": "not answering"}
    finally:
        release.set()
        asyncio.run_coroutine_threadsafe(ops.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()


# -- `ocs api` alone: its own metrics port, Redis errors counted --------------------------
async def test_api_alone_has_a_metrics_port_and_counts_redis_errors(
    own_redis: OwnRedis, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    """`ocs api` without `ocs serve`: /metrics, /healthz and /readyz (check api_redis) on
    --metrics-port; a request that fails on Redis is a 503 and counts
    ocs_redis_errors_total{component="api"}; readiness follows Redis (ocs_ready too)."""
    settings = serve_settings(own_redis.url, tmp_path)
    base = f"http://127.0.0.1:{settings.metrics_port}"
    api = f"http://127.0.0.1:{settings.http_port}"
    redis = client_for_url(own_redis.url, timeout=5)
    token = await create_token(redis, "demo", Scope.READ)
    await redis.aclose()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_api(settings, stop=stop))
    try:

        async def serving() -> bool:
            try:
                return (await http.get(f"{base}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await until(serving)
        ready = await http.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": {"api_redis": "ok"}}
        before = samples((await http.get(f"{base}/metrics")).text)
        assert value(before, "ocs_ready", check="api_redis") == 1.0
        api_errors = ("ocs_redis_errors_total", frozenset({("component", "api")}))
        assert api_errors in before  # exported from the start (rate() sees the first one)

        own_redis.stop()
        wallet = f"{api}/v1/wallets/bob-wallet"
        for _ in range(2):
            got = await http.get(wallet, headers={"Authorization": f"Bearer {token}"})
            assert got.status_code == 503, got.text
            assert got.headers["content-type"] == "application/problem+json"
        down = await http.get(f"{base}/readyz")
        assert down.status_code == 503
        assert down.json()["checks"]["api_redis"] != "ok"
        after = samples((await http.get(f"{base}/metrics")).text)
        assert value(after, "ocs_ready", check="api_redis") == 0.0
        errors = "ocs_redis_errors_total"
        counted = value(after, errors, component="api") - value(before, errors, component="api")
        assert counted == 2
        assert value(after, errors, component="charging") == value(
            before, errors, component="charging"
        )
        own_redis.start()
    finally:
        stop.set()
        await task
    assert default_health().names == []
    with pytest.raises(httpx.TransportError):  # the metrics port closed with the API
        await http.get(f"{base}/healthz")


def test_api_alone_with_a_taken_metrics_port_is_an_error(tmp_path: Path) -> None:
    settings = serve_settings("redis://127.0.0.1:1/0", tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.metrics_port))
        taken.listen()
        with pytest.raises(PortInUse) as caught:
            main_api(settings)
    assert caught.value.what == "metrics" and caught.value.port == settings.metrics_port
    assert f"metrics port {settings.metrics_port} (--metrics-port)" in str(caught.value)
    assert default_health().names == []


# -- a failed bill run is counted and stays scrapeable ------------------------------------
async def test_a_failed_bill_run_is_counted_while_its_port_lingers(
    pg_url: str, tmp_path: Path, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An issuing run that cannot take its watermark lock (a transaction holds
    usage_records) fails after it began: outcome="failed" is counted, and the metrics
    port serves that for metrics_linger seconds after the command gave up."""
    monkeypatch.setattr(late, "LOCK_TIMEOUT_S", 1)
    settings = Settings(database_url=pg_url, data_dir=tmp_path, metrics_linger=3)
    folder = tmp_path / "catalogue"
    billing_catalogue(folder, f"t{uuid.uuid4().hex[:10]}")
    port = free_ports(1)[0]
    failed = registry_value("ocs_billrun_runs_finished_total", outcome="failed")
    blocker = await asyncpg.connect(pg_url)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE usage_records IN ROW EXCLUSIVE MODE")
            run = {"cycle": 10, "on": date(2025, 4, 10), "catalog": folder, "metrics_port": port}
            billrun = asyncio.create_task(asyncio.to_thread(main_billrun, settings, **run))

            async def scraped_failed() -> bool:
                try:
                    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                except httpx.TransportError:
                    return False
                got = value(samples(text), "ocs_billrun_runs_finished_total", outcome="failed")
                return got == failed + 1

            await until(scraped_failed)  # seen on the port before the process would exit
    finally:
        await blocker.close()
    with pytest.raises(BillRunError, match="did not finish within"):
        await billrun
    assert registry_value("ocs_billrun_runs_finished_total", outcome="failed") == failed + 1
