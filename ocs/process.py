"""`ocs serve`: the process lifecycle (uvicorn's Server.startup / main_loop / shutdown shape).

startup: build the Diameter node from settings, attach the applications, listen.
main loop: wait for SIGTERM/SIGINT.
shutdown: stop accepting, answer in-flight requests, DPR every peer, close stores.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .config import Settings
from .diameter.answers import Identity
from .diameter.node import Node
from .diameter.peer import LocalConfig
from .diameter.peers import PeerSpec, PeerTable
from .diameter.transport import ConnectionLimits, DiameterServer, server_ssl_context
from .errors import naming_port
from .observability.health import default_health, listening_check
from .observability.metrics import DiameterMetrics

log = logging.getLogger("ocs.process")

Closer = Callable[[], Awaitable[None]]


def local_config(settings: Settings) -> LocalConfig:
    host_ip = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    try:
        import ipaddress  # noqa: PLC0415

        ipaddress.ip_address(host_ip)
    except ValueError:
        host_ip = "127.0.0.1"
    return LocalConfig(
        identity=Identity(settings.origin_host, settings.origin_realm),
        host_ip_addresses=[host_ip],
        vendor_id=settings.vendor_id,
        product_name=settings.product_name,
        watchdog_interval=settings.watchdog_interval,
        cer_timeout=settings.cer_timeout,
        max_message_size=settings.max_message_size,
        max_cer_size=settings.max_cer_size,
        message_timeout=settings.message_timeout,
        peers=peer_table(settings),
    )


def peer_table(settings: Settings) -> PeerTable:
    """The configured peers (docs/operations.md, "Diameter peers")."""
    specs = [
        PeerSpec.of(
            p.origin_host,
            realm=p.realm,
            addresses=p.addresses,
            tls_names=p.tls_names,
            applications=p.applications,
            tenants=p.tenants,
            relays_for=p.relays_for,
        )
        for p in settings.peers
    ]
    return PeerTable.of(*specs, accept_unknown=settings.accept_unknown_peers)


@dataclass
class Runtime:
    settings: Settings
    node: Node
    server: DiameterServer
    closers: list[Closer] = field(default_factory=list)

    async def stop(self) -> None:
        await self.server.stop(self.settings.shutdown_timeout)
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:
                log.exception("error while shutting down")


Attach = Callable[[Settings, Node], Awaitable[list[Closer]]]


async def start(
    settings: Settings, attach: Attach | None = None, *, reuse_port: bool = False
) -> Runtime:
    """Start the Diameter server; ``attach`` registers the applications on the node.
    ``reuse_port`` (a worker of ``ocs serve --workers N``) shares the port with the others."""
    config = local_config(settings)
    node = Node(config.identity, duplicate_cache_size=settings.duplicate_cache_size)
    closers = await attach(settings, node) if attach is not None else []
    ssl_context = None
    if settings.tls_cert and settings.tls_key:
        ssl_context = server_ssl_context(
            str(settings.tls_cert),
            str(settings.tls_key),
            str(settings.tls_ca) if settings.tls_ca else None,
        )
    server = DiameterServer(
        node,
        config,
        host=settings.host,
        port=settings.port,
        ssl_context=ssl_context,
        write_buffer_high=settings.write_buffer_high,
        limits=ConnectionLimits(settings.max_connections, settings.max_connections_per_address),
        on_refusal=DiameterMetrics.default().count_refusal,
    )
    try:
        with naming_port("Diameter", "--port", settings.host, settings.port):
            await server.start(reuse_port=reuse_port)
    except BaseException:
        for close in reversed(closers):
            await close()
        raise
    closers.insert(0, default_health().add("diameter", listening_check(server)))  # readiness
    return Runtime(settings, node, server, closers)


async def serve(settings: Settings, attach: Attach | None = None) -> None:
    runtime = await start(settings, attach)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"ocs: Diameter {settings.origin_host} ({settings.origin_realm}) listening on "
        f"{settings.host}:{runtime.server.port}",
        flush=True,
    )
    if settings.accept_unknown_peers:
        print("ocs: accepting any Diameter peer (accept_unknown_peers is on)", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runtime.stop()
