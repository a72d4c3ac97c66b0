"""NRF registration of the CHF (TS 29.510 5.2.2.2, 5.2.2.3, 5.2.2.4): how an SMF finds us.

With ``nrf_url`` set, the node registers one NFProfile of type CHF (``PUT {nrf}/nnrf-nfm/v1/
nf-instances/{nfInstanceId}``) naming its Nchf_ConvergedCharging service (v3) with address and
port, and the SUPI/GPSI ranges it serves (``chfInfo``) when configured. It then sends a
heartbeat (``PATCH`` replacing ``/nfStatus`` with REGISTERED) every ``heartBeatTimer`` seconds
the NRF returned, registers again when a heartbeat gets 404 (the NRF forgot us), and
deregisters (``DELETE``) at shutdown. An SMF (free5GC's ``CHFSelection``) discovers
``target-nf-type=CHF`` and charges on the ``nchf-convergedcharging`` service of the profile.

It runs once per node: in ``ocs serve`` itself, or in the supervisor of ``--workers N``, never
in a worker (N workers are one CHF behind one port). Every request has ``nrf_timeout``; an NRF
that cannot be reached is logged (one line per outage) and asked again after a backoff, and
charging never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

import httpx

from ocs.config import Settings
from ocs.network.sbi import JSON_PATCH, SbiError, request, sbi_client
from ocs.observability.metrics import NrfMetrics
from ocs.observability.outage import OutageLog

log = logging.getLogger("ocs.network.nrf")

NF_TYPE: Final = "CHF"
SERVICE_NAME: Final = "nchf-convergedcharging"
API_VERSION: Final = "v3"  # apiVersionInUri of TS 32.291 (Release 17)
API_FULL_VERSION: Final = "3.1.6"  # info.version of TS32291_Nchf_ConvergedCharging.yaml V17.9.0
NFM_PATH: Final = "/nnrf-nfm/v1/nf-instances"
BACKOFF_FIRST: Final = 1.0  # seconds before asking an NRF that did not answer again
BACKOFF_MAX: Final = 30.0
HEARTBEAT: Final = [{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}]
INSTANCE_NAMESPACE: Final = uuid.UUID("8a0e1a62-4f0c-5b8e-9d0c-6f63732d6e66")  # ours, fixed


def instance_id(settings: Settings) -> str:
    """``nf_instance_id``, else a UUID derived from ``origin_host``: the same node keeps its
    NF instance across restarts, and two nodes (two Diameter identities) never share one."""
    if settings.nf_instance_id is not None:
        return str(settings.nf_instance_id)
    return str(uuid.uuid5(INSTANCE_NAMESPACE, settings.origin_host.lower()))


def advertised_address(settings: Settings) -> str:
    """Where SMFs reach the Nchf service: ``sbi_address``, else ``host`` (a wildcard host
    becomes this machine's FQDN)."""
    if settings.sbi_address:
        return settings.sbi_address
    if settings.host in ("", "0.0.0.0", "::"):
        return socket.getfqdn()
    return settings.host


def nf_profile(settings: Settings, *, nchf_port: int, scheme: str = "http") -> dict[str, Any]:
    """The NFProfile (TS 29.510 6.1.6.2.2) of this CHF with its one Nchf service."""
    address = advertised_address(settings)
    instance = instance_id(settings)
    endpoint: dict[str, Any] = {"transport": "TCP", "port": nchf_port}
    where: dict[str, Any]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        where = {"fqdn": address}
        authority = address
    else:
        kind = "ipv4" if ip.version == 4 else "ipv6"
        where = {f"{kind}Addresses": [address]}
        endpoint[f"{kind}Address"] = address
        authority = address if ip.version == 4 else f"[{address}]"
    service: dict[str, Any] = {
        "serviceInstanceId": SERVICE_NAME,
        "serviceName": SERVICE_NAME,
        "versions": [{"apiVersionInUri": API_VERSION, "apiFullVersion": API_FULL_VERSION}],
        "scheme": scheme,
        "nfServiceStatus": "REGISTERED",
        "ipEndPoints": [endpoint],
        **({"fqdn": where["fqdn"]} if "fqdn" in where else {}),
    }
    if settings.nrf_api_root_prefix:
        service["apiPrefix"] = f"{scheme}://{authority}:{nchf_port}"
    profile: dict[str, Any] = {
        "nfInstanceId": instance,
        "nfInstanceName": settings.origin_host,
        "nfType": NF_TYPE,
        "nfStatus": "REGISTERED",
        "heartBeatTimer": settings.nrf_heartbeat,
        **where,
        # nfServices is deprecated in Release 17 but what free5GC's SMF reads; the map is
        # what a Release 16+ NRF stores
        "nfServices": [service],
        "nfServiceList": {SERVICE_NAME: service},
    }
    chf_info: dict[str, Any] = {}
    if settings.chf_supi_ranges:
        chf_info["supiRangeList"] = [r.as_json() for r in settings.chf_supi_ranges]
    if settings.chf_gpsi_ranges:
        chf_info["gpsiRangeList"] = [r.as_json() for r in settings.chf_gpsi_ranges]
    if chf_info:
        profile["chfInfo"] = chf_info
    return profile


class NrfRegistration:
    """Registers, keeps the registration alive and deregisters; :meth:`start` once the Nchf
    server listens, :meth:`stop` before it stops."""

    def __init__(
        self,
        settings: Settings,
        *,
        nchf_port: int,
        scheme: str = "http",
        metrics: NrfMetrics | None = None,
        backoff_first: float = BACKOFF_FIRST,
        client: Callable[[float], httpx.AsyncClient] = sbi_client,
    ) -> None:
        if not settings.nrf_url:
            raise ValueError("NrfRegistration needs settings.nrf_url")
        self.profile = nf_profile(settings, nchf_port=nchf_port, scheme=scheme)
        self.url = f"{settings.nrf_url}{NFM_PATH}/{self.profile['nfInstanceId']}"
        self.heartbeat = settings.nrf_heartbeat  # seconds; the NRF's heartBeatTimer once known
        self.timeout = settings.nrf_timeout
        self.metrics = metrics
        self.backoff_first = backoff_first
        self.registered = False
        self._attempted = False  # a PUT was sent: the NRF may hold us, DELETE at stop
        self._client = client(self.timeout)
        self._outage = OutageLog("NRF")
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ocs-nrf-registration")

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if self.registered:
                ok = await self._heartbeat()
                if not ok and not self.registered:  # 404: the NRF forgot us, register now
                    ok = await self._register()
            else:
                ok = await self._register()
            failures = 0 if ok else failures + 1
            delay = (
                self.heartbeat
                if ok
                else min(BACKOFF_MAX, self.backoff_first * 2.0 ** (failures - 1))
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _register(self) -> bool:
        self._attempted = True
        answer = await self._send("register", "PUT", self.profile)
        if answer is None or answer.status not in (200, 201):
            return False
        body = answer.body if isinstance(answer.body, dict) else {}
        timer = body.get("heartBeatTimer")
        if isinstance(timer, int) and not isinstance(timer, bool) and timer >= 1:
            self.heartbeat = timer  # the NRF decides (TS 29.510 5.2.2.2.2)
        if not self.registered:
            log.info(
                "registered at the NRF as CHF %s (heartbeat every %d s)",
                self.profile["nfInstanceId"],
                self.heartbeat,
            )
        self._set_registered(True)
        return True

    async def _heartbeat(self) -> bool:
        answer = await self._send("heartbeat", "PATCH", HEARTBEAT, content_type=JSON_PATCH)
        if answer is not None and answer.status == 404:
            log.warning("the NRF no longer knows this CHF (heartbeat 404); registering again")
            self._set_registered(False)
            return False
        return answer is not None and answer.status in (200, 204)

    async def _send(
        self, op: str, method: str, body: Any, *, content_type: str = "application/json"
    ) -> Any:
        try:
            answer = await request(self._client, method, self.url, body, content_type=content_type)
        except SbiError as exc:
            self._outage.failed(exc)
            self._count_outcome(op, "unreachable")
            return None
        self._outage.succeeded()
        if answer.status in (200, 201, 204):
            self._count_outcome(op, "ok")
        elif answer.status == 404:
            self._count_outcome(op, "not_found")
        else:
            self._count_outcome(op, "refused")
            detail = answer.body.get("detail") if isinstance(answer.body, dict) else None
            log.warning("NRF %s answered %d%s", op, answer.status, f": {detail}" if detail else "")
        return answer

    def _count_outcome(self, op: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.nrf_requests.labels(op, outcome).inc()

    def _set_registered(self, value: bool) -> None:
        self.registered = value
        if self.metrics is not None:
            self.metrics.nrf_registered.set(1 if value else 0)

    async def stop(self) -> None:
        """Stop the heartbeat and deregister (within ``nrf_timeout``), then close."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        try:
            if self._attempted:
                answer = await self._send("deregister", "DELETE", None)
                if answer is not None and answer.status in (200, 204, 404):
                    log.info("deregistered from the NRF")
            self._set_registered(False)
        finally:
            await self._client.aclose()


def register_node(
    settings: Settings, *, nchf_port: int, tls: bool, metrics: NrfMetrics | None
) -> Callable[[], Awaitable[None]] | None:
    """Start the registration of this node's Nchf service when ``nrf_url`` is set; what
    deregisters it (None: nothing to do)."""
    if not settings.nrf_url or not nchf_port:
        return None
    registration = NrfRegistration(
        settings, nchf_port=nchf_port, scheme="https" if tls else "http", metrics=metrics
    )
    registration.start()
    return registration.stop
