"""The Diameter node: application handlers by (application id, command code), duplicate
detection, error mapping for the base protocol, and the table of open peers for requests we
originate (RAR, ASR).

Handlers are ``async def handler(request, peer) -> answer``. The node never knows what an
application does; it only routes requests and turns failures into well-formed answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from . import avp_codes as A
from .answers import Identity, answer_for_error, make_error_answer
from .codec import Message
from .constants import ResultCode
from .errors import DiameterError

log = logging.getLogger("ocs.diameter")


@dataclass(slots=True, eq=False)
class PeerInfo:
    """The peer a request came from, and how to send it requests of our own. ``tenants`` are
    the tenants it may charge for (empty: any, see :class:`~ocs.diameter.peers.PeerSpec`)."""

    origin_host: str
    origin_realm: str
    send_request: Callable[[Message], Awaitable[Message]] = field(repr=False)
    tenants: frozenset[str] = frozenset()


Handler = Callable[[Message, PeerInfo], Awaitable[Message]]

# RFC 6733 3: an End-to-End Identifier "MUST remain locally unique for a period of at least 4
# minutes, even across reboots", and with Origin-Host it is what detects duplicates. A
# retransmission comes within that window (Tx, failover); after it the same identifier may
# legitimately name a new request, so an answer is replayed for at most this long.
DUPLICATE_WINDOW: Final = 240.0

_Entry = tuple[float, "bytes | asyncio.Future[bytes]"]  # (expires at, answer)
DuplicateKey = tuple[str, str, int]  # (peer, request Origin-Host, End-to-End id), lower case


class DuplicateCache:
    """Answers for retransmissions (RFC 6733 6.2, the T flag), per peer: keyed by the peer
    the request came over, its Origin-Host and End-to-End id, so one peer can neither read
    nor poison another's answers. Bounded in time (:data:`DUPLICATE_WINDOW`) and in size
    (``size`` answers in all; when full, the peer holding most gives up its oldest, so a
    peer that floods evicts its own answers first).

    A request that arrives while its original is still being answered waits for that answer.
    """

    def __init__(
        self,
        size: int,
        window: float = DUPLICATE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.window = window
        self._clock = clock
        self._peers: dict[str, OrderedDict[tuple[str, int], _Entry]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def lookup(self, key: DuplicateKey) -> bytes | asyncio.Future[bytes] | None:
        entries = self._peers.get(key[0])
        if entries is None:
            return None
        entry = entries.get(key[1:])
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._expire(key[0], entries)
            return None
        return entry[1]

    def start(self, key: DuplicateKey) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._put(key, fut)
        return fut

    def finish(self, key: DuplicateKey, fut: asyncio.Future[bytes], answer: bytes) -> None:
        if not fut.done():
            fut.set_result(answer)
        entries = self._peers.get(key[0])
        if entries is None:
            return
        entry = entries.get(key[1:])
        if entry is not None and entry[1] is fut:
            entries[key[1:]] = (entry[0], answer)

    def _put(self, key: DuplicateKey, value: bytes | asyncio.Future[bytes]) -> None:
        if self.size <= 0:
            return
        now = self._clock()
        entries = self._peers.get(key[0])
        if entries is not None:
            self._expire(key[0], entries, now)
        entries = self._peers.setdefault(key[0], OrderedDict())
        sub = key[1:]
        if sub in entries:  # an identifier reused after its answer expired from view
            del entries[sub]
            self._count -= 1
        entries[sub] = (now + self.window, value)
        self._count += 1
        while self._count > self.size:
            peer = max(self._peers, key=lambda p: len(self._peers[p]))
            biggest = self._peers[peer]
            biggest.popitem(last=False)
            self._count -= 1
            if not biggest:
                del self._peers[peer]

    def _expire(
        self, peer: str, entries: OrderedDict[tuple[str, int], _Entry], now: float | None = None
    ) -> None:
        """Drop the expired answers at the head of ``peer``'s entries (oldest first)."""
        now = self._clock() if now is None else now
        while entries:
            first = next(iter(entries.values()))
            if first[0] > now:
                break
            entries.popitem(last=False)
            self._count -= 1
        if not entries and self._peers.get(peer) is entries:
            del self._peers[peer]


class Node:
    def __init__(
        self,
        identity: Identity,
        *,
        duplicate_cache_size: int = 65536,
        duplicate_window: float = DUPLICATE_WINDOW,
    ) -> None:
        self.identity = identity
        self._handlers: dict[tuple[int, int], Handler] = {}
        self._applications: set[int] = set()
        self.duplicates = DuplicateCache(duplicate_cache_size, duplicate_window)
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
            peer.origin_host.lower(),
            origin.data.decode("utf-8", "replace").lower() if origin and origin.data else "",
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
