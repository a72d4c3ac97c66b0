"""Duplicate detection per peer, bounded in size and in time (RFC 6733 3 and 6.2): the node's
answer cache for retransmissions."""

from __future__ import annotations

from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity, make_answer
from ocs.diameter.codec import Message, decode, text, u32
from ocs.diameter.constants import Application, Command, ResultCode
from ocs.diameter.node import DUPLICATE_WINDOW, DuplicateCache, Node, PeerInfo

from .helpers import ccr

OURS = Identity("ocs.test", "test")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _no_requests(_request: Message) -> Message:
    raise AssertionError("no requests of ours in these tests")


def peer(name: str) -> PeerInfo:
    return PeerInfo(name, "test", _no_requests)


class Handler:
    """Answers each CCR with a Result-Code that names the peer it came over."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, request: Message, info: PeerInfo) -> Message:
        self.calls.append(info.origin_host)
        code = 2001 if info.origin_host == "victim.test" else 5030
        return make_answer(request, OURS, code, [u32(A.AVP_CC_REQUEST_NUMBER, len(self.calls))])


def node(clock: Clock | None = None, size: int = 100) -> tuple[Node, Handler]:
    n = Node(OURS, duplicate_cache_size=size)
    if clock is not None:
        n.duplicates = DuplicateCache(size, clock=clock)
    handler = Handler()
    n.register(Application.CREDIT_CONTROL, Command.CREDIT_CONTROL, handler)
    return n, handler


def request(e2e: int = 77, origin_host: str = "victim.test") -> Message:
    msg = ccr(e2e=e2e)
    msg.avps = [
        text(A.AVP_ORIGIN_HOST, origin_host) if a.key == A.AVP_ORIGIN_HOST else a for a in msg.avps
    ]
    return msg


async def test_a_retransmission_from_the_same_peer_gets_the_stored_answer() -> None:
    n, handler = node()
    first = await n.handle(request(), peer("victim.test"))
    again = await n.handle(request(), peer("victim.test"))
    assert handler.calls == ["victim.test"]
    assert again == first
    assert n.duplicates_answered == 1


async def test_another_peer_can_neither_poison_nor_read_a_peers_answers() -> None:
    """Same Origin-Host and End-to-End id over two peers (a relaying peer configured for the
    victim's host): each gets the answer to its own request."""
    n, handler = node()
    attacker_first = await n.handle(request(), peer("attacker.test"))
    victim = await n.handle(request(), peer("victim.test"))
    attacker_again = await n.handle(request(), peer("attacker.test"))
    assert handler.calls == ["attacker.test", "victim.test"]
    assert decode(victim).get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    assert decode(attacker_again).get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_USER_UNKNOWN
    assert attacker_again == attacker_first


async def test_peer_names_are_compared_case_insensitively() -> None:
    n, handler = node()
    await n.handle(request(), peer("victim.test"))
    await n.handle(request(origin_host="VICTIM.test"), peer("Victim.Test"))
    assert handler.calls == ["victim.test"]


async def test_answers_are_replayed_for_the_rfc_window_only() -> None:
    clock = Clock()
    n, handler = node(clock)
    await n.handle(request(), peer("victim.test"))
    clock.now += DUPLICATE_WINDOW - 1
    await n.handle(request(), peer("victim.test"))
    assert handler.calls == ["victim.test"]  # within 4 minutes: a duplicate
    clock.now += 2
    await n.handle(request(), peer("victim.test"))
    assert handler.calls == ["victim.test", "victim.test"]  # after: a new request


async def test_expired_answers_are_dropped_not_only_hidden() -> None:
    clock = Clock()
    n, _ = node(clock)
    for e2e in range(10):
        await n.handle(request(e2e), peer("victim.test"))
    assert len(n.duplicates) == 10
    clock.now += DUPLICATE_WINDOW + 1
    await n.handle(request(99), peer("victim.test"))
    assert len(n.duplicates) == 1


async def test_size_is_bounded_and_a_flooding_peer_evicts_its_own_answers_first() -> None:
    n, handler = node(size=10)
    for e2e in range(3):
        await n.handle(request(e2e), peer("victim.test"))
    for e2e in range(100):
        await n.handle(request(1000 + e2e, "attacker.test"), peer("attacker.test"))
    assert len(n.duplicates) == 10
    calls = len(handler.calls)
    for e2e in range(3):  # the victim's answers survived the flood
        await n.handle(request(e2e), peer("victim.test"))
    assert len(handler.calls) == calls


async def test_a_cache_of_size_zero_keeps_nothing() -> None:
    n, handler = node(size=0)
    await n.handle(request(), peer("victim.test"))
    await n.handle(request(), peer("victim.test"))
    assert handler.calls == ["victim.test", "victim.test"]
    assert len(n.duplicates) == 0
