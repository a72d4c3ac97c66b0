"""`ocs serve --workers N`: one supervisor process and N worker processes on the same ports.

Every worker is the single-process server (Diameter with the Gy/Ro application, the RAR/ASR
listener, the HTTP API) with SO_REUSEPORT on its Diameter and HTTP sockets: the kernel spreads
new connections over the workers (by a hash of the connection's addresses), and a Diameter
connection stays on the worker that accepted it, as every session on it does. Peers see one
OCS: one Origin-Host. What must not collide between workers does not: Hop-by-Hop and
End-to-End identifiers are per connection (random starts), the RAR/ASR listener of each worker
has its own random id and pub/sub channel, and session state lives in Redis.

The supervisor (this module, when ``workers`` > 1) owns what must exist once:

* the embedded Redis when no Redis URL is configured (started here, its URL handed to the
  workers), and the catalogue of ``ocs demo`` (applied here, once);
* the ports: port 0 is resolved here, and every port is held by a bound, non-listening
  SO_REUSEPORT socket for the supervisor's life, so a restarted worker gets the same port
  (a socket that does not listen is never handed a connection);
* the Prometheus multiprocess folder and ``/metrics`` (:mod:`ocs.observability.multiproc`).

Workers are new interpreters (``python -m ocs.supervisor``), never forks of a running event loop.
Each reports on a pipe that it listens, or the one-line reason it cannot start; if a worker
cannot start at all (no catalogue, port taken, Redis unreachable), the supervisor prints the
first reason as one line, stops the others and exits 2. A worker that dies later is restarted
after a backoff (0.5 s, doubling up to 30 s, back to 0.5 s once a worker lived 60 s), and the
supervisor logs why it died. SIGTERM or SIGINT is forwarded to every worker, which drains as
``ocs serve`` does (stops accepting, answers what is in flight, DPR to its peers); after
``shutdown_timeout`` plus :data:`DRAIN_GRACE` what is left is killed. A worker's stdin is a pipe
from the supervisor: when it closes (the supervisor was killed), the worker drains and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from .config import Settings
from .errors import CommandError, bind, naming_port
from .observability import multiproc
from .observability.health import Health

log = logging.getLogger("ocs.supervisor")

BACKOFF_FIRST: Final = 0.5  # seconds before the first restart of a dead worker
BACKOFF_MAX: Final = 30.0
STABLE_AFTER: Final = 60.0  # a worker that lived this long starts the backoff afresh
START_TIMEOUT: Final = 120.0  # seconds for a worker to report that it listens
DRAIN_GRACE: Final = 10.0  # after shutdown_timeout: closing stores, RAR answers in flight
SETTINGS_FILE: Final = "worker-settings.json"

T = TypeVar("T")


class StartError(CommandError):
    """What keeps the server from starting, in one line for the operator."""


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


@dataclass(slots=True)
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0  # monotonic time of the last start
    quick_deaths: int = 0  # deaths in a row before STABLE_AFTER
    ready: bool = False  # reported that it listens (this start)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def next_delay(self, now: float) -> float:
        if now - self.started >= STABLE_AFTER:
            self.quick_deaths = 0
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0**self.quick_deaths)
        self.quick_deaths += 1
        return delay


class Supervisor:
    def __init__(self, settings: Settings, *, catalog_path: str | None = None) -> None:
        self.settings = settings
        self.catalog_path = catalog_path
        self.demo_tenant: str | None = None  # ocs demo: the tenant put in force
        self.workers = [Worker(i + 1) for i in range(settings.workers)]
        self.run_dir = Path(tempfile.mkdtemp(prefix="ocs-workers-"))
        self.metrics_dir = multiproc.fresh_dir(self.run_dir)
        self.metrics = multiproc.supervisor_metrics(self.metrics_dir)
        self.worker_settings = settings
        self.http_port = 0
        self.nchf_port = 0  # Nchf_ConvergedCharging (docs/nchf.md), 0: off
        self.metrics_port = 0
        self._env = dict(os.environ, **multiproc.worker_environment(self.metrics_dir))
        self._holds: list[socket.socket] = []
        self._redis: Any = None  # ocs.redis_client.RedisHandle of the embedded Redis
        self._stop_metrics: Callable[[], Awaitable[None]] | None = None
        self._stopping: asyncio.Event | None = None
        self._deregister: Callable[[], Awaitable[None]] | None = None  # NRF registration

    async def run(self) -> int:
        """Prepare, start every worker, supervise until SIGTERM/SIGINT, drain. Exit status."""
        stopping = self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        starting = asyncio.create_task(self._start())
        stopped = asyncio.create_task(stopping.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not starting.done():  # stopped while starting: no half-started leftovers
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StartError):
                await starting
            await self._shutdown()
            return 0
        try:
            starting.result()
        except Exception:  # ocs.cli reports it (a taken port, Redis, the catalogue, ...)
            await self._shutdown()
            raise
        s = self.settings
        http = f"HTTP API on port {self.http_port}" if self.http_port else "no HTTP API"
        ops = f"metrics on port {self.metrics_port}" if self.metrics_port else "no metrics"
        nchf = f"; Nchf on port {self.nchf_port}" if self.nchf_port else ""
        print(
            f"ocs: Diameter {s.origin_host} ({s.origin_realm}) listening on "
            f"{s.host}:{self.worker_settings.port} with {len(self.workers)} workers; {http}; "
            f"{ops}{nchf}",
            flush=True,
        )
        if self.demo_tenant is not None and self.http_port:
            from .wiring import DEMO_TOKEN_HINT  # noqa: PLC0415

            hint = DEMO_TOKEN_HINT.format(tenant=self.demo_tenant)
            print(
                f"ocs: demo tenant {self.demo_tenant!r} in force for Diameter and the HTTP API;"
                f" a token: {hint}; API docs at http://{s.host}:{self.http_port}/docs",
                flush=True,
            )
        watchers = [asyncio.create_task(self._watch(w)) for w in self.workers]
        try:
            await self._stopping.wait()
        finally:
            log.info("stopping %d workers", len(self.workers))
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await self._shutdown()
        return 0

    # -- start-up --------------------------------------------------------------------------
    async def _start(self) -> None:
        await self._prepare()
        await self._start_all()
        self._register_at_nrf()

    def _register_at_nrf(self) -> None:
        """One NRF registration for the node (docs/nchf.md), never one per worker."""
        from .network.nrf import register_node  # noqa: PLC0415
        from .observability.metrics import NrfMetrics  # noqa: PLC0415

        s = self.settings
        self._deregister = register_node(
            s,
            nchf_port=self.nchf_port,
            tls=bool(s.nchf_tls_cert and s.nchf_tls_key),
            metrics=NrfMetrics(self.metrics.registry),
        )

    async def _prepare(self) -> None:
        s = self.settings
        redis_url = s.redis_url
        if not redis_url:
            from .redis_client import open_redis  # noqa: PLC0415

            try:
                self._redis = await open_redis(s)
            except Exception as exc:
                raise StartError(f"embedded Redis under {s.data_dir}: {exc}") from None
            redis_url = self._redis.url
        port = self._hold("Diameter", "--port", s.host, s.port)
        self.http_port = (
            self._hold("HTTP", "--http-port", s.host, s.http_port) if s.http_port else 0
        )
        self.nchf_port = (
            self._hold("Nchf", "--nchf-port", s.host, s.nchf_port) if s.nchf_port else 0
        )
        self.worker_settings = s.model_copy(
            update={
                "redis_url": redis_url,
                "port": port,
                "http_port": self.http_port,
                "nchf_port": self.nchf_port,
                "metrics_port": 0,  # the supervisor serves /metrics for all
                "workers": 1,
            }
        )
        if self.catalog_path is not None:
            await self._apply_catalogue(self.catalog_path)
        path = self.run_dir / SETTINGS_FILE
        path.touch(mode=0o600)  # it may hold a Redis password
        path.write_text(self.worker_settings.model_dump_json())
        if s.metrics_port:
            from .observability.endpoint import start_ops_server  # noqa: PLC0415

            health = Health()
            health.add("workers", self._workers_check)
            with naming_port("metrics", "--metrics-port", s.host, s.metrics_port):
                ops = start_ops_server(
                    s.metrics_port, s.host, registry=self.metrics.registry, health=health
                )
            self.metrics_port, self._stop_metrics = ops.port, ops.close

    async def _workers_check(self) -> str | None:
        """/readyz of the supervisor: every worker started and listening."""
        alive = sum(1 for w in self.workers if w.alive and w.ready)
        if alive == len(self.workers):
            return None
        return f"{alive} of {len(self.workers)} workers listening"

    def _hold(self, what: str, flag: str, host: str, port: int) -> int:
        sock = bind(what, flag, host, port, reuse_port=True)  # PortInUse names the port
        self._holds.append(sock)
        bound: int = sock.getsockname()[1]
        return bound

    async def _apply_catalogue(self, path: str) -> None:
        from .wiring import apply_demo  # noqa: PLC0415

        # the HTTP API's tenant state too; its errors: ocs.cli reports them
        self.demo_tenant = await apply_demo(self.worker_settings, path)

    async def _start_all(self) -> None:
        results = await asyncio.gather(
            *(self._spawn(w) for w in self.workers), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, StartError):
                    raise result
                raise StartError(f"worker start failed: {result!r}")

    async def _spawn(self, worker: Worker) -> None:
        """Start ``worker`` and wait for its report; StartError if it cannot listen."""
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ocs.supervisor",
                *("--settings", str(self.run_dir / SETTINGS_FILE)),
                *("--index", str(worker.index), "--ready-fd", str(write_fd)),
                stdin=subprocess.PIPE,
                env=self._env,
                pass_fds=(write_fd,),
            )
        except OSError as exc:
            os.close(read_fd)
            raise StartError(f"cannot start worker {worker.index}: {exc}") from None
        finally:
            os.close(write_fd)
        worker.proc, worker.started, worker.ready = proc, time.monotonic(), False
        report = await self._read_report(read_fd)
        if report.get("pid") == proc.pid:
            worker.ready = True
            self.metrics.alive.inc()
            log.info("worker %d (pid %d) listening", worker.index, proc.pid)
            return
        try:  # it reported why, or closed the pipe: it is on its way out
            code = await asyncio.wait_for(proc.wait(), DRAIN_GRACE)
        except TimeoutError:
            proc.kill()
            code = await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        multiproc.worker_died(proc.pid, self.metrics_dir)
        reason = report.get("error") or f"exited ({describe_exit(code)}) before it listened"
        raise StartError(str(reason))

    async def _read_report(self, fd: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
        )
        try:
            line = await asyncio.wait_for(reader.readline(), START_TIMEOUT)
        except TimeoutError:
            return {"error": f"a worker did not listen within {START_TIMEOUT:g} s"}
        finally:
            transport.close()
        try:
            report = json.loads(line) if line else {}
        except ValueError:
            return {}
        return report if isinstance(report, dict) else {}

    # -- supervision -----------------------------------------------------------------------
    async def _watch(self, worker: Worker) -> None:
        """Restart ``worker`` whenever it dies, until the supervisor stops."""
        assert self._stopping is not None
        while True:
            proc = worker.proc
            assert proc is not None
            code = await proc.wait()
            if proc.stdin is not None:
                proc.stdin.close()
            if self._stopping.is_set():
                return
            self.metrics.alive.dec()
            why = describe_exit(code)
            multiproc.worker_died(proc.pid, self.metrics_dir)
            self.metrics.restarts.labels(why).inc()
            while not self._stopping.is_set():
                delay = worker.next_delay(time.monotonic())
                log.warning(
                    "worker %d (pid %d) died (%s); restarting in %.1f s",
                    *(worker.index, worker.proc.pid if worker.proc else 0, why, delay),
                )
                if await _wait_event(self._stopping, delay):
                    return
                try:
                    await self._spawn(worker)
                    break
                except StartError as exc:
                    why = f"restart failed: {exc}"

    # -- shutdown --------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        if self._deregister is not None:  # SMFs stop choosing us before the workers stop
            await self._deregister()
            self._deregister = None
        await self._stop_workers()
        if self._stop_metrics is not None:
            await self._stop_metrics()
            self._stop_metrics = None
        for sock in self._holds:
            sock.close()
        self._holds.clear()
        if self._redis is not None:
            await self._redis.close()
            self._redis = None
        multiproc.remove_dir(self.run_dir)

    async def _stop_workers(self) -> None:
        live = [w.proc for w in self.workers if w.proc is not None and w.alive]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        grace = self.settings.shutdown_timeout + DRAIN_GRACE
        waits = [asyncio.create_task(proc.wait()) for proc in live]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace)
            for proc in live:
                if proc.returncode is None:
                    log.warning("worker pid %d did not drain in %.0f s; killed", proc.pid, grace)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if pending:
                await asyncio.wait(pending)
        for w in self.workers:
            if w.proc is not None and w.proc.stdin is not None:
                w.proc.stdin.close()


async def _wait_event(event: asyncio.Event, timeout: float) -> bool:
    """True if ``event`` was set within ``timeout`` seconds."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    return event.is_set()


def _run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


def run_supervisor(settings: Settings, *, demo_catalog: str | None = None) -> int:
    """``ocs serve --workers N`` (N > 1): supervise until SIGTERM/SIGINT; exit status."""
    return _run(Supervisor(settings, catalog_path=demo_catalog).run())


# -- the worker process -------------------------------------------------------------------------
async def _worker(settings: Settings, index: int, ready_fd: int) -> int:
    from .cli import describe  # noqa: PLC0415
    from .process import start  # noqa: PLC0415
    from .wiring import ChargingAttacher  # noqa: PLC0415

    with os.fdopen(ready_fd, "w") as ready:
        try:
            runtime = await start(
                settings, ChargingAttacher(None, reuse_port=True), reuse_port=True
            )
        except Exception as exc:  # one line from the supervisor (ocs.cli's), the trace at DEBUG
            log.debug("worker %d failed to start", index, exc_info=True)
            code, message = describe(exc, settings)
            ready.write(json.dumps({"error": message}) + "\n")
            return code
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        _stop_when_parent_goes(loop, stop)
        ready.write(json.dumps({"pid": os.getpid(), "port": runtime.server.port}) + "\n")
    try:
        await stop.wait()
    finally:
        log.info("worker %d draining", index)
        await runtime.stop()
    return 0


def _stop_when_parent_goes(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """stdin is a pipe from the supervisor: its end (the supervisor died) stops the worker."""

    def readable() -> None:
        try:
            data = os.read(0, 512)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(0)
            stop.set()

    loop.add_reader(0, readable)


def _configure_logging(settings: Settings, index: int) -> None:
    """The supervisor's log set-up, each line marked with the worker: ``ocs[worker 2]`` in
    text, a ``worker`` field in JSON."""
    from .observability.logs import configure_logging  # noqa: PLC0415

    handler = configure_logging(settings.log_level, settings.log_format)

    def mark(record: logging.LogRecord) -> bool:
        record.worker = index
        return True

    handler.addFilter(mark)
    if settings.log_format == "text":
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s ocs[worker %(worker)s] %(name)s: %(message)s"
            )
        )


def worker_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ocs.supervisor",
        description="one worker of `ocs serve --workers N` (the supervisor starts it)",
    )
    parser.add_argument("--settings", required=True, help="the supervisor's settings (JSON)")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    args = parser.parse_args(argv)
    settings = Settings(**json.loads(Path(args.settings).read_text()))
    _configure_logging(settings, args.index)
    try:
        return _run(_worker(settings, args.index, args.ready_fd))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(worker_main())
