"""What `ocs serve` starts for charging: the Redis connection (or embedded Redis), the
catalogue, the application, and the periodic task that reclaims expired reservations and
picks up a newly applied catalogue."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ocs.balance import BalanceStore
from ocs.balance.keys import CATALOG, CATALOG_FILES
from ocs.balance.probes import outstanding_reservations
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.charging.errors import is_store_outage
from ocs.charging.inforce import InForce
from ocs.charging.states import apply_activations
from ocs.config import Settings
from ocs.diameter.answers import Identity
from ocs.lifecycle import Lifecycle, PassReport, PoolRules, lifecycle_metrics
from ocs.observability.metrics import ChargingMetrics, default_metrics
from ocs.observability.outage import outage_log
from ocs.provisioning.catalogues import TenantCatalogues, compile_state
from ocs.provisioning.errors import Refused
from ocs.provisioning.folder import apply_folder
from ocs.provisioning.keys import IN_FORCE, state_key
from ocs.provisioning.payers import fetch_files, lifecycle_rules
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import check_catalog, check_documents, load_catalogue
from ocs.redis_client import RedisHandle, open_redis

log = logging.getLogger(__name__)

GC_GEN0_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)


class NoCatalogue(Exception):
    """No catalogue was applied to this Redis: run `ocs catalog apply PATH` first."""


@dataclass(slots=True)
class ChargingRuntime:
    application: ChargingApplication
    store: BalanceStore
    redis: RedisHandle
    config: ChargingConfig
    catalogue: InForce
    applied_at: str = ""  # of the legacy single pointer ``ocs:catalog``
    data_dir: Path = field(default_factory=Path)  # where shared catalogue files are written
    demo_tenant: str | None = None  # the tenant of the folder create_charging applied
    _task: asyncio.Task[None] | None = field(default=None)
    _rules: dict[int, tuple[Catalogue, list[PoolRules]]] = field(default_factory=dict)
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._housekeeping(), name="ocs-charging-reclaim")

    async def reclaim_once(self) -> int:
        n = await self.store.reclaim_all(int(time.time() * 1000))
        if n:
            self.application.metrics.reclaimed.inc(n)
        self.application.metrics.outstanding.set(await outstanding_reservations(self.store.redis))
        return n

    async def replay_failover(self) -> None:
        """Bill the usage journaled during an outage, once the store answers again
        (``ocs.charging.failover``); measures what still waits."""
        failover = self.application.failover
        if failover.journal.files():
            await failover.replay()
            self.application.metrics.failover_pending.set(failover.pending())
        else:
            failover.store_back()  # nothing journaled (or nothing could be): bounds anew
            self.application.metrics.failover_pending.set(0)

    def tenant_of(self, imsi: str | None, msisdn: str | None) -> str | None:
        """The tenant whose catalogue in force holds this IMSI (else MSISDN); None if none."""
        return self.catalogue.tenant_of(imsi, msisdn)

    async def reload_if_applied(self) -> bool:
        """Load each tenant whose state in force changed (``ocs catalog apply``, the API,
        an import), alone: the others keep charging meanwhile. True if any changed. One
        pass at a time (the housekeeping pass and a refresh broadcast): an older compile
        never lands after a newer one."""
        async with self._reloading:
            changed = await load_tenants(self.store.redis, self.catalogue)
            return await self._reload_pointer() or changed

    async def _reload_pointer(self) -> bool:
        """The legacy single pointer ``ocs:catalog``: its catalogue answers the SIMs of no
        tenant in force per tenant (a folder recorded by ``provision_catalogue``)."""
        raw = await self.store.redis.hgetall(CATALOG)
        info = {_s(k): _s(v) for k, v in raw.items()}
        if "path" not in info or info.get("applied_at") == self.applied_at:
            return False
        if info.get("tenant") in self.catalogue.stamps:  # that tenant is loaded per tenant
            self.applied_at = info.get("applied_at", "")
            if self.catalogue.fallback.tenant.id == info.get("tenant"):
                self.catalogue.fallback = _unprovisioned_catalogue()
            return False
        path = await catalogue_folder(self.store.redis, info, self.data_dir)
        if path is None:
            return False  # the files of this apply are not in Redis yet: next pass
        report = await asyncio.to_thread(check_catalog, path)
        self.applied_at = info.get("applied_at", "")
        if not report.ok or report.catalogue is None:
            log.error("catalogue %s not reloaded: %d error(s)", info["path"], len(report.errors))
            return False
        self.catalogue.fallback = report.catalogue
        return True

    async def lifecycle_once(self, now_ms: int | None = None) -> PassReport:
        """One lifecycle pass (renewals, period rolls) over the current catalogue's pools;
        every worker runs it, each period is acted on once (docs/lifecycle.md)."""
        rules = await self._lifecycle_rules()
        lifecycle = Lifecycle(
            self.store.redis, lifecycle_metrics(self.application.metrics.registry)
        )
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return await lifecycle.run_once(rules, now)

    async def _lifecycle_rules(self) -> list[PoolRules]:
        """The pools' rules of every catalogue in force, kept per catalogue: a reload
        recomputes its own tenant's only (counting a pool's active SIMs walks every SIM of
        the tenant: off the event loop, as the compile; all tenants' 1,000,000 SIMs on the
        loop stalled it for seconds)."""
        kept: dict[int, tuple[Catalogue, list[PoolRules]]] = {}
        for catalogue in self.catalogue.catalogues():
            hit = self._rules.get(id(catalogue))
            if hit is None or hit[0] is not catalogue:
                with _compiling():
                    hit = (catalogue, await asyncio.to_thread(lifecycle_rules, catalogue))
            kept[id(catalogue)] = hit
        self._rules = kept
        return [rule for _, rules in kept.values() for rule in rules]

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        next_lifecycle = loop.time()
        while True:
            await asyncio.sleep(self.config.reclaim_interval)
            try:
                await self.reclaim_once()
                await self.replay_failover()
                await apply_activations(self.store, self.data_dir)  # test SIMs (states)
                # the journal a catalogue change that died left (ocs.provisioning.journal)
                await TenantCatalogues(self.store, self.data_dir).complete_pending()
                await self.reload_if_applied()
                if loop.time() >= next_lifecycle:
                    next_lifecycle = loop.time() + self.config.lifecycle_interval
                    await self.lifecycle_once()
            except Exception as exc:
                if not is_store_outage(exc):
                    log.exception("charging housekeeping failed")  # a bug: say which
                    continue
                self.application.metrics.redis_errors.inc()
                outage_log().failed(exc)  # one line per outage
            else:
                outage_log().succeeded()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # The session writes and stored answers still queued (write-behind) go out before
        # the connection closes: a retransmission after a restart finds its answer.
        await self.store.batch.close()
        await self.redis.close()


def _unprovisioned_catalogue() -> Catalogue:
    report = check_documents({"(unprovisioned)": UNPROVISIONED})
    assert report.catalogue is not None, report.errors
    return report.catalogue


UNPROVISIONED = {
    "tenant": {
        "id": "unprovisioned",
        "name": "no catalogue applied",
        "home_network": "00101",
        "time_zone": "UTC",
        "currency": "EUR",
    }
}


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


COMPILE_SWITCH_INTERVAL = 0.0005  # seconds the compiling thread holds the GIL at most


@contextlib.contextmanager
def _compiling() -> Iterator[None]:
    """While a tenant's catalogue compiles in a worker thread, the event loop thread keeps
    charging every tenant, and competes for the GIL with it:

    * the thread holding the GIL gives it up after ``sys.getswitchinterval()`` when another
      waits (5 ms by default): each time the loop wakes up it would wait that long, so the
      interval is :data:`COMPILE_SWITCH_INTERVAL` for the compile;
    * the collector would run full collections over the half-built catalogue (a 100,000-SIM
      tenant is millions of objects) from whichever thread allocates, holding the GIL for
      each: it is off for the compile, and the new catalogue is frozen once swapped in
      (``gc.freeze``, as at start-up).
    """
    if _off_loop["depth"] == 0:  # the first of overlapping compiles saves the settings
        _off_loop["interval"] = sys.getswitchinterval()
        _off_loop["gc"] = gc.isenabled()
        sys.setswitchinterval(COMPILE_SWITCH_INTERVAL)
        gc.disable()
    _off_loop["depth"] += 1
    try:
        yield
    finally:
        _off_loop["depth"] -= 1
        if _off_loop["depth"] == 0:  # the last one restores them
            sys.setswitchinterval(_off_loop["interval"])
            if _off_loop["gc"]:
                gc.enable()


_off_loop: dict[str, Any] = {"depth": 0}


async def load_tenants(redis: Any, catalogues: InForce) -> bool:
    """Compile (off the event loop) the state of every tenant whose in-force stamp changed
    and swap it in; drop tenants no longer in force. True if anything changed."""
    raw = await redis.hgetall(IN_FORCE)
    stamps = {_s(k): _s(v) for k, v in raw.items()}
    changed = False
    for tenant in set(catalogues.stamps) - set(stamps):
        await catalogues.swap(tenant, None)
        changed = True
    for tenant, stamp in sorted(stamps.items()):
        if catalogues.stamps.get(tenant) == stamp:
            continue
        state = await redis.get(state_key(tenant))
        if state is None:
            continue
        started = time.perf_counter()
        try:
            with _compiling():
                catalogue = await asyncio.to_thread(compile_state, state)
        except Refused as exc:  # only compiled states are stored: a bug or a hand edit
            log.error("tenant %s not loaded: %s", tenant, exc.detail or exc.title)
            catalogues.stamps[tenant] = stamp  # not again until it changes
            continue
        await catalogues.swap(tenant, catalogue, stamp)
        del state
        gc.freeze()  # the new catalogue joins the start-up objects, out of the collector's sight
        log.info(
            "tenant %s loaded: %d SIMs in %.2f s",
            tenant,
            len(catalogue.sims_by_imsi),
            time.perf_counter() - started,
        )
        changed = True
    return changed


async def catalogue_folder(redis: Any, info: dict[str, str], data_dir: Path) -> str | None:
    """The local folder of the applied catalogue ``info`` (the ``ocs:catalog`` pointer): the
    files shared through Redis written under ``data_dir``, else (applied before files were
    shared) the recorded path; None while an apply is half recorded."""
    if "path" not in info:
        return None
    fetched = await fetch_files(redis, info.get("applied_at", ""), data_dir)
    if fetched is not None:
        return str(fetched)
    if await redis.exists(CATALOG_FILES):
        return None  # files of another apply: the pointer is being replaced right now
    return info["path"]


async def create_charging(
    settings: Settings,
    *,
    catalog_path: str | Path | None = None,
    registry: CollectorRegistry | None = None,
    start: bool = True,
) -> ChargingRuntime:
    """Open Redis (``settings.redis_url``, else embedded under ``data_dir``) and build the
    application. With ``catalog_path`` (``ocs demo``) that catalogue is applied first;
    otherwise the one last applied with `ocs catalog apply` is used (``NoCatalogue`` if
    none). ``start`` runs the reclaim/reload task; call ``close()`` on shutdown."""
    config = ChargingConfig.from_settings(settings)
    demo_tenant = None
    handle = await open_redis(settings)
    try:
        store = BalanceStore(handle.client, result_ttl_ms=config.answer_ttl * 1000)
        if catalog_path is not None:
            _, applied, _ = await apply_folder(
                store, catalog_path, settings.data_dir, source="ocs demo"
            )
            demo_tenant = applied.tenant.id
        # every tenant in force; then the legacy single pointer for a tenant that is not
        holder = InForce(_unprovisioned_catalogue())
        await load_tenants(handle.client, holder)
        raw = await handle.client.hgetall(CATALOG)
        info = {_s(k): _s(v) for k, v in raw.items()}
        path = None
        if info and info.get("tenant") not in holder.stamps:
            path = await catalogue_folder(handle.client, info, settings.data_dir)
            if path is not None:
                holder.fallback = await asyncio.to_thread(load_catalogue, path)
        if not holder.stamps and path is None:
            # A fresh node before provisioning: serve Diameter, answer every subscriber 5030,
            # and pick up the catalogues as soon as `ocs catalog apply` records one.
            log.warning(
                "no catalogue applied: every subscriber is unknown until `ocs catalog apply`"
            )
    except BaseException:
        await handle.close()
        raise
    metrics = ChargingMetrics(registry) if registry is not None else default_metrics()
    identity = Identity(settings.origin_host, settings.origin_realm)
    app = ChargingApplication(store, holder, config, identity, metrics)
    runtime = ChargingRuntime(
        app,
        store,
        handle,
        config,
        holder,
        info.get("applied_at", "")
        if path is not None or info.get("tenant") in holder.stamps
        else "",
        settings.data_dir,
        demo_tenant=demo_tenant,
    )
    if start:
        # The pools' lifecycle rules of every catalogue (a walk over each tenant's SIMs, in
        # a worker thread) before the first request rather than on the first housekeeping
        # pass: that pass came a few seconds into serving, and the thread competed with the
        # event loop for the GIL while CCRs were being answered (seen in profiles of the
        # real-time path). A later reload recomputes its own tenant's only. A failure here
        # is the housekeeping pass's to report (it computes them again), never a failed start.
        try:
            await runtime._lifecycle_rules()
        except Exception:
            log.debug("lifecycle rules not computed at start", exc_info=True)
        runtime.start()
        # The catalogue and the start-up objects live as long as the process: move them out
        # of the collector's sight so that full collections under load stay short. The
        # requests in flight are young objects that survive a collection or two (Diameter
        # AVPs, futures): collecting every 700 allocations traversed them again and again
        # (~7% of the server's CPU at 1,500 CCR/s); every GC_GEN0_THRESHOLD is enough.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    return runtime
