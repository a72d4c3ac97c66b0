"""Network side of the API: Re-Auth-Request / Abort-Session-Request to the gateways.

Wiring (in the server's attach step, after the charging runtime exists)::

    net = await attach_network(settings, node, redis_url=runtime.redis.url,
                               refresh=runtime.reload_if_applied)
    node.register(4, 272, net.track(runtime.application.handle_ccr, runtime.tenant_of))
    closers.append(net.close)

``track`` records which connection holds each session; the attachment listens on a Redis
pub/sub channel of its own (one per worker process) and sends the RAR/ASR that
:class:`NetworkCommands` asks for on that connection.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis

from ocs.config import Settings
from ocs.diameter.node import Node
from ocs.network.dispatch import NetworkCommands, SessionInfo
from ocs.network.listener import NetworkAttachment, Refresh
from ocs.redis_client import client_for_url

COMMAND_TIMEOUT = 5.0

__all__ = ["NetworkAttachment", "NetworkCommands", "SessionInfo", "attach_network", "pubsub_url"]


def pubsub_url(url: str) -> str:
    """A plain Redis URL for pub/sub: a cluster URL becomes its first node (PUBLISH reaches
    every node of a cluster)."""
    parts = urlsplit(url)
    if not parts.scheme.endswith("+cluster"):
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    first = hosts.split(",")[0].strip()
    netloc = f"{userinfo}@{first}" if userinfo else first
    return urlunsplit((parts.scheme.removesuffix("+cluster"), netloc, "", "", ""))


async def attach_network(
    settings: Settings,
    node: Node,
    *,
    redis_url: str | None = None,
    refresh: Refresh | None = None,
    worker: str | None = None,
) -> NetworkAttachment:
    """Start listening for RAR/ASR commands for ``node``. ``redis_url`` defaults to
    ``settings.redis_url`` (pass the charging runtime's ``redis.url`` for embedded Redis);
    ``refresh`` reloads the catalogue when the API changed it (``reload_if_applied``)."""
    url = redis_url or settings.redis_url
    if not url:
        raise ValueError("attach_network needs a Redis URL (settings.redis_url or redis_url)")
    commands = client_for_url(url, timeout=COMMAND_TIMEOUT)
    listener: Redis = Redis.from_url(pubsub_url(url), socket_connect_timeout=COMMAND_TIMEOUT)
    attachment = NetworkAttachment(node, commands, listener, refresh=refresh, worker=worker)
    try:
        await attachment.start()
    except BaseException:
        await attachment.close()
        raise
    return attachment
