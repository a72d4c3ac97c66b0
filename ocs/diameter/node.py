"""The Diameter node: application handlers by (application id, command code), duplicate
detection, error mapping for the base protocol, and the table of open peers for requests we
originate (RAR, ASR).

Handlers are ``async def handler(request, peer) -> answer``. The node never knows what an
application does; it only routes requests and turns failures into well-formed answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from . import avp_codes as A
from .answers import Identity, answer_for_error, make_error_answer
from .codec import Message
from .constants import ResultCode
from .errors import DiameterError

log = logging.getLogger("ocs.diameter")


@dataclass(slots=True, eq=False)
class PeerInfo:
    """The peer a request came from, and how to send it requests of our own."""

    origin_host: str
    origin_realm: str
    send_request: Callable[[Message], Awaitable[Message]] = field(repr=False)


Handler = Callable[[Message, PeerInfo], Awaitable[Message]]


class DuplicateCache:
    """Answers by (Origin-Host, End-to-End id), bounded LRU (RFC 6733 6.2, duplicate detection).

    A request that arrives while its original is still being answered waits for that answer.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, int], bytes | asyncio.Future[bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: tuple[str, int]) -> bytes | asyncio.Future[bytes] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def start(self, key: tuple[str, int]) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._put(key, fut)
        return fut

    def finish(self, key: tuple[str, int], fut: asyncio.Future[bytes], answer: bytes) -> None:
        if not fut.done():
            fut.set_result(answer)
        if self._entries.get(key) is fut:
            self._entries[key] = answer

    def _put(self, key: tuple[str, int], value: bytes | asyncio.Future[bytes]) -> None:
        entries = self._entries
        entries[key] = value
        while len(entries) > self.size:
            entries.popitem(last=False)


class Node:
    def __init__(self, identity: Identity, *, duplicate_cache_size: int = 65536) -> None:
        self.identity = identity
        self._handlers: dict[tuple[int, int], Handler] = {}
        self._applications: set[int] = set()
        self.duplicates = DuplicateCache(duplicate_cache_size)
        self.peers: dict[str, list[PeerInfo]] = {}
        self.requests_handled = 0
        self.duplicates_answered = 0

    def register(self, app_id: int, command: int, handler: Handler) -> None:
        self._handlers[(app_id, command)] = handler
        self._applications.add(app_id)

    # -- peers -----------------------------------------------------------------------------
    def peer_opened(self, peer: PeerInfo) -> None:
        self.peers.setdefault(peer.origin_host, []).append(peer)

    def peer_closed(self, peer: PeerInfo) -> None:
        conns = self.peers.get(peer.origin_host)
        if conns and peer in conns:
            conns.remove(peer)
            if not conns:
                del self.peers[peer.origin_host]

    async def send_request(self, origin_host: str, request: Message) -> Message:
        """Send a request of ours (RAR, ASR) to a connected peer; raises LookupError if none."""
        conns = self.peers.get(origin_host)
        if not conns:
            raise LookupError(f"no open connection to {origin_host}")
        return await conns[-1].send_request(request)

    # -- requests --------------------------------------------------------------------------
    async def handle(self, request: Message, peer: PeerInfo) -> bytes:
        """Answer one application request; returns the encoded answer. Never raises."""
        origin = request.find(A.AVP_ORIGIN_HOST)
        key = (
            origin.data.decode("utf-8", "replace") if origin and origin.data else "",
            request.e2e_id,
        )
        cached = self.duplicates.lookup(key)
        if cached is not None:
            self.duplicates_answered += 1
            raw = cached if isinstance(cached, bytes) else await asyncio.shield(cached)
            return _with_hbh(raw, request.hbh_id)
        fut = self.duplicates.start(key)
        try:
            raw = (await self._answer(request, peer)).encode()
        except BaseException:
            fut.cancel()
            raise
        self.duplicates.finish(key, fut, raw)
        self.requests_handled += 1
        return raw

    async def _answer(self, request: Message, peer: PeerInfo) -> Message:
        handler = self._handlers.get((request.app_id, request.command))
        if handler is None:
            code = (
                ResultCode.DIAMETER_COMMAND_UNSUPPORTED
                if request.app_id in self._applications
                else ResultCode.DIAMETER_APPLICATION_UNSUPPORTED
            )
            return make_error_answer(
                request,
                self.identity,
                code,
                error_message=f"command {request.command} of application {request.app_id} "
                "is not supported",
            )
        try:
            return await handler(request, peer)
        except DiameterError as exc:
            return answer_for_error(request, self.identity, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed for command %s app %s", request.command, request.app_id)
            return make_error_answer(
                request,
                self.identity,
                ResultCode.DIAMETER_UNABLE_TO_COMPLY,
                error_message="internal error",
            )


def _with_hbh(raw: bytes, hbh_id: int) -> bytes:
    """A stored answer re-addressed to the hop-by-hop id of the retransmission."""
    return raw[:12] + hbh_id.to_bytes(4, "big") + raw[16:]
