"""Who may speak Diameter to us, and what a connection may cost: the peer state machine with
configured peers, bytes in and actions out, no socket (as test_peer.py)."""

from __future__ import annotations

import dataclasses

from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.diameter.codec import Message, decode, text
from ocs.diameter.constants import FLAG_ERROR, ResultCode
from ocs.diameter.peer import (
    Close,
    Dispatch,
    LocalConfig,
    Opened,
    PeerConnection,
    PeerState,
    Refused,
    Send,
)
from ocs.diameter.peers import (
    REFUSED_ADDRESS,
    REFUSED_APPLICATION,
    REFUSED_CER_SIZE,
    REFUSED_FORGED_ORIGIN_HOST,
    REFUSED_MESSAGE_SIZE,
    REFUSED_OWN_ORIGIN_HOST,
    REFUSED_REALM,
    REFUSED_SLOW_MESSAGE,
    REFUSED_TLS_IDENTITY,
    REFUSED_UNKNOWN_PEER,
    ConnectionOrigin,
    PeerSpec,
    PeerTable,
    certificate_names,
)

from .helpers import CLIENT_HOST, CLIENT_REALM, ccr, cer, dwr

OURS = Identity("ocs.test", "test")
GATEWAY = PeerSpec.of(CLIENT_HOST, realm=CLIENT_REALM, addresses=["192.0.2.0/28"], tenants=["demo"])
FROM_GATEWAY = ConnectionOrigin("192.0.2.10")
CONFIG = LocalConfig(identity=OURS, peers=PeerTable.of(GATEWAY), max_cer_size=1024)


def responder(
    config: LocalConfig = CONFIG, origin: ConnectionOrigin = FROM_GATEWAY
) -> PeerConnection:
    return PeerConnection(config, initiator=False, now=0.0, origin=origin)


def sent(actions: list[object]) -> list[Message]:
    return [decode(a.data) for a in actions if isinstance(a, Send)]


def refusals(actions: list[object]) -> list[str]:
    return [a.reason for a in actions if isinstance(a, Refused)]


def with_origin_host(msg: Message, host: str) -> Message:
    msg.avps = [
        text(A.AVP_ORIGIN_HOST, host) if a.key == A.AVP_ORIGIN_HOST else a for a in msg.avps
    ]
    return msg


def assert_refused(actions: list[object], reason: str) -> None:
    [cea] = sent(actions)
    assert cea.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_UNKNOWN_PEER
    assert cea.flags & FLAG_ERROR
    assert [a.key for a in cea.avps].count(A.AVP_ORIGIN_HOST) == 1
    assert refusals(actions) == [reason]
    assert any(isinstance(a, Close) for a in actions)
    assert not any(isinstance(a, Opened) for a in actions)


# -- capabilities exchange -----------------------------------------------------------------
def test_configured_peer_is_admitted_with_its_tenants() -> None:
    peer = responder()
    actions = peer.receive_data(cer().encode(), 0.0)
    [opened] = [a for a in actions if isinstance(a, Opened)]
    assert opened.peer.spec is GATEWAY
    assert opened.peer.spec.tenants == frozenset({"demo"})
    assert sent(actions)[0].get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS


def test_origin_host_is_compared_case_insensitively() -> None:
    actions = responder().receive_data(cer(origin_host="PGW.Test").encode(), 0.0)
    assert any(isinstance(a, Opened) for a in actions)


def test_unknown_peer_gets_3010_and_close() -> None:
    peer = responder()
    actions = peer.receive_data(cer(origin_host="rogue.test").encode(), 0.0)
    assert_refused(actions, REFUSED_UNKNOWN_PEER)
    assert peer.state is PeerState.CLOSED
    assert peer.receive_data(ccr().encode(), 1.0) == []  # nothing more is read


def test_our_own_origin_host_is_refused_even_when_unknown_peers_are_accepted() -> None:
    config = dataclasses.replace(CONFIG, peers=PeerTable.of(accept_unknown=True))
    actions = responder(config).receive_data(cer(origin_host="OCS.test").encode(), 0.0)
    assert_refused(actions, REFUSED_OWN_ORIGIN_HOST)


def test_accept_unknown_admits_any_peer_and_marks_it_unconfigured() -> None:
    config = dataclasses.replace(CONFIG, peers=PeerTable.of(accept_unknown=True))
    actions = responder(config).receive_data(cer(origin_host="anyone.test").encode(), 0.0)
    [opened] = [a for a in actions if isinstance(a, Opened)]
    assert opened.peer.spec is not None and not opened.peer.spec.configured


def test_configured_peer_from_another_address_is_refused() -> None:
    actions = responder(origin=ConnectionOrigin("198.51.100.7")).receive_data(cer().encode(), 0.0)
    assert_refused(actions, REFUSED_ADDRESS)


def test_ipv4_mapped_ipv6_source_matches_an_ipv4_network() -> None:
    origin = ConnectionOrigin("::ffff:192.0.2.3")
    assert any(
        isinstance(a, Opened) for a in responder(origin=origin).receive_data(cer().encode(), 0.0)
    )


def test_configured_peer_with_another_realm_is_refused() -> None:
    msg = cer()
    msg.avps = [
        text(A.AVP_ORIGIN_REALM, "elsewhere") if a.key == A.AVP_ORIGIN_REALM else a
        for a in msg.avps
    ]
    assert_refused(responder().receive_data(msg.encode(), 0.0), REFUSED_REALM)


def test_peer_allowed_other_applications_only_gets_5010() -> None:
    spec = dataclasses.replace(GATEWAY, applications=frozenset({16777238}))
    config = dataclasses.replace(CONFIG, peers=PeerTable.of(spec))
    actions = responder(config).receive_data(cer().encode(), 0.0)
    [cea] = sent(actions)
    assert cea.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_NO_COMMON_APPLICATION
    assert refusals(actions) == [REFUSED_APPLICATION]


# -- TLS identity ----------------------------------------------------------------------------
def tls(*names: str, address: str = "192.0.2.10") -> ConnectionOrigin:
    return ConnectionOrigin(address, tls=True, cert_names=frozenset(names))


def test_certificate_naming_the_peer_is_admitted() -> None:
    actions = responder(origin=tls("pgw.test")).receive_data(cer().encode(), 0.0)
    assert any(isinstance(a, Opened) for a in actions)


def test_certificate_of_another_host_is_refused() -> None:
    actions = responder(origin=tls("rogue.test")).receive_data(cer().encode(), 0.0)
    assert_refused(actions, REFUSED_TLS_IDENTITY)


def test_configured_tls_names_require_a_certificate_carrying_one() -> None:
    spec = dataclasses.replace(GATEWAY, tls_names=frozenset({"gw-cert.example"}))
    config = dataclasses.replace(CONFIG, peers=PeerTable.of(spec))
    assert_refused(responder(config).receive_data(cer().encode(), 0.0), REFUSED_TLS_IDENTITY)
    refused = responder(config, tls("pgw.test")).receive_data(cer().encode(), 0.0)
    assert_refused(refused, REFUSED_TLS_IDENTITY)
    admitted = responder(config, tls("gw-cert.example")).receive_data(cer().encode(), 0.0)
    assert any(isinstance(a, Opened) for a in admitted)


def test_peer_without_addresses_must_present_a_certificate() -> None:
    spec = PeerSpec.of(CLIENT_HOST)
    config = dataclasses.replace(CONFIG, peers=PeerTable.of(spec))
    assert_refused(responder(config).receive_data(cer().encode(), 0.0), REFUSED_TLS_IDENTITY)
    admitted = responder(config, tls("pgw.test", address="203.0.113.9")).receive_data(
        cer().encode(), 0.0
    )
    assert any(isinstance(a, Opened) for a in admitted)


def test_unknown_peer_under_accept_unknown_must_match_its_certificate() -> None:
    config = dataclasses.replace(CONFIG, peers=PeerTable.of(accept_unknown=True))
    actions = responder(config, tls("someone-else.test")).receive_data(cer().encode(), 0.0)
    assert_refused(actions, REFUSED_TLS_IDENTITY)


def test_certificate_names_are_the_subject_cn_and_dns_sans() -> None:
    cert = {
        "subject": ((("countryName", "DE"),), (("commonName", "PGW.test"),)),
        "subjectAltName": (("DNS", "pgw-a.test"), ("IP Address", "192.0.2.1")),
    }
    assert certificate_names(cert) == {"pgw.test", "pgw-a.test"}
    assert certificate_names(None) == frozenset()


# -- every request's Origin-Host -------------------------------------------------------------
def opened(config: LocalConfig = CONFIG) -> PeerConnection:
    peer = responder(config)
    assert any(isinstance(a, Opened) for a in peer.receive_data(cer().encode(), 0.0))
    return peer


def test_request_with_another_origin_host_gets_3010_and_is_not_dispatched() -> None:
    peer = opened()
    request = with_origin_host(ccr(), "victim.test")
    actions = peer.receive_data(request.encode(), 1.0)
    [answer] = sent(actions)
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_UNKNOWN_PEER
    assert answer.flags & FLAG_ERROR
    assert (answer.hbh_id, answer.e2e_id) == (request.hbh_id, request.e2e_id)
    assert not any(isinstance(a, Dispatch) for a in actions)
    assert refusals(actions) == [REFUSED_FORGED_ORIGIN_HOST]
    assert peer.state is PeerState.OPEN  # the peer's own requests still go through
    assert [type(a) for a in peer.receive_data(ccr(hbh=11).encode(), 2.0)] == [Dispatch]


def test_our_own_origin_host_in_a_request_gets_3010() -> None:
    actions = opened().receive_data(with_origin_host(ccr(), "ocs.test").encode(), 1.0)
    assert sent(actions)[0].get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_UNKNOWN_PEER


def test_forged_origin_host_in_a_watchdog_gets_3010() -> None:
    actions = opened().receive_data(with_origin_host(dwr(), "victim.test").encode(), 1.0)
    assert sent(actions)[0].get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_UNKNOWN_PEER


def test_request_without_origin_host_gets_5005() -> None:
    request = ccr()
    request.avps = [a for a in request.avps if a.key != A.AVP_ORIGIN_HOST]
    [answer] = sent(opened().receive_data(request.encode(), 1.0))
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_MISSING_AVP


def test_routing_agent_may_relay_the_gateways_it_is_configured_for() -> None:
    dra = PeerSpec.of(CLIENT_HOST, addresses=["192.0.2.10"], relays_for=["PGW-7.example"])
    peer = opened(dataclasses.replace(CONFIG, peers=PeerTable.of(dra)))
    relayed = peer.receive_data(with_origin_host(ccr(), "pgw-7.example").encode(), 1.0)
    assert [type(a) for a in relayed] == [Dispatch]
    other = peer.receive_data(with_origin_host(ccr(hbh=12), "pgw-8.example").encode(), 1.0)
    assert refusals(other) == [REFUSED_FORGED_ORIGIN_HOST]


# -- sizes and times -------------------------------------------------------------------------
def test_more_than_the_pre_cer_budget_is_refused_before_it_is_buffered() -> None:
    peer = responder()
    header = bytes([1]) + (2048).to_bytes(3, "big") + bytes(16)  # claims 2 KiB > 1 KiB
    actions = peer.receive_data(header, 0.0)
    assert refusals(actions) == [REFUSED_CER_SIZE]
    assert any(isinstance(a, Close) for a in actions)
    assert peer._framer.buffered == 0


def test_after_the_cer_messages_up_to_max_message_size_are_read() -> None:
    peer = opened()
    big = ccr(extra=[text(A.AVP_ERROR_MESSAGE, "x" * 4000)])
    assert len(big.encode()) > CONFIG.max_cer_size
    assert [type(a) for a in peer.receive_data(big.encode(), 1.0)] == [Dispatch]
    config = dataclasses.replace(CONFIG, max_message_size=2048)
    actions = opened(config).receive_data(big.encode(), 1.0)
    assert refusals(actions) == [REFUSED_MESSAGE_SIZE]
    assert any(isinstance(a, Close) for a in actions)


def test_a_byte_a_second_is_not_a_peer() -> None:
    peer = opened()
    raw = ccr().encode()
    now = 1.0
    actions: list[object] = []
    for byte in raw[:40]:
        actions += peer.receive_data(bytes([byte]), now)
        now += 1.0
        if peer.next_deadline() <= now:
            actions += peer.on_timer(now)
        if peer.closed:
            break
    assert peer.closed
    assert refusals(actions) == [REFUSED_SLOW_MESSAGE]
    assert now <= 1.0 + CONFIG.message_timeout + 1.0


def test_partial_bytes_do_not_count_as_traffic_for_the_watchdog() -> None:
    peer = opened()
    peer.receive_data(ccr().encode(), 5.0)  # a whole message at 5 s
    raw = ccr(hbh=20).encode()
    peer.receive_data(raw[:10], 20.0)  # its start at 20 s, the rest at 25 s
    assert peer.next_deadline() == 20.0 + CONFIG.message_timeout
    assert [type(a) for a in peer.receive_data(raw[10:], 25.0)] == [Dispatch]
    assert 25.0 + 28.0 <= peer.next_deadline() <= 25.0 + 32.0  # Tw from the whole message


def test_cer_timeout_is_counted() -> None:
    peer = responder()
    assert refusals(peer.on_timer(CONFIG.cer_timeout)) == ["cer_timeout"]


def test_initiator_is_not_held_to_the_pre_cer_budget() -> None:
    """We chose whom to connect to: its CEA may be as large as any message."""
    client = PeerConnection(CONFIG, initiator=True, now=0.0)
    assert client._framer.max_length == CONFIG.max_message_size
