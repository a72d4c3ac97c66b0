"""The peer state machine, bytes in and bytes out, no socket (STYLE.md 1)."""

from __future__ import annotations

from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.diameter.codec import Avp, Message, decode
from ocs.diameter.constants import FLAG_ERROR, Application, Command, ResultCode
from ocs.diameter.peer import (
    Close,
    Dispatch,
    LocalConfig,
    Opened,
    PeerConnection,
    PeerState,
    Send,
)
from ocs.diameter.peers import ConnectionOrigin, PeerSpec, PeerTable

from .helpers import CLIENT_HOST, ccr, cer, dpr, dwr

GATEWAY = PeerSpec.of(CLIENT_HOST, addresses=["192.0.2.10"])  # the configured peer
FROM_GATEWAY = ConnectionOrigin("192.0.2.10")
CONFIG = LocalConfig(
    identity=Identity("ocs.test", "test"), watchdog_interval=30.0, peers=PeerTable.of(GATEWAY)
)


def responder(
    config: LocalConfig = CONFIG, origin: ConnectionOrigin = FROM_GATEWAY
) -> PeerConnection:
    """The server side of a connection from ``origin``."""
    return PeerConnection(config, initiator=False, now=0.0, origin=origin)


def sent(actions: list[object]) -> list[Message]:
    return [decode(a.data) for a in actions if isinstance(a, Send)]


def opened_peer() -> PeerConnection:
    peer = responder()
    actions = peer.receive_data(cer().encode(), 0.0)
    assert any(isinstance(a, Opened) for a in actions)
    return peer


def test_cer_success_answers_cea_with_capabilities() -> None:
    peer = responder()
    request = cer()
    actions = peer.receive_data(request.encode(), 0.0)
    [cea] = sent(actions)
    assert cea.command == Command.CAPABILITIES_EXCHANGE and not cea.is_request
    assert (cea.hbh_id, cea.e2e_id) == (request.hbh_id, request.e2e_id)
    assert cea.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    assert cea.get(A.AVP_ORIGIN_HOST) == "ocs.test"
    assert cea.get(A.AVP_ORIGIN_REALM) == "test"
    assert cea.get(A.AVP_AUTH_APPLICATION_ID) == Application.CREDIT_CONTROL
    assert 10415 in [a.value for a in cea.find_all(A.AVP_SUPPORTED_VENDOR_ID)]
    vsa = cea.find(A.AVP_VENDOR_SPECIFIC_APPLICATION_ID)
    assert vsa is not None and vsa.get(A.AVP_VENDOR_ID) == 10415
    assert peer.state is PeerState.OPEN
    assert peer.remote is not None and peer.remote.origin_host == "pgw.test"


def test_cer_without_common_application_gets_5010_and_close() -> None:
    peer = responder()
    actions = peer.receive_data(cer(apps=(16777238,)).encode(), 0.0)
    [cea] = sent(actions)
    assert cea.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_NO_COMMON_APPLICATION
    assert any(isinstance(a, Close) for a in actions)
    assert peer.state is PeerState.CLOSED


def test_cer_relay_application_matches() -> None:
    peer = responder()
    actions = peer.receive_data(cer(apps=(Application.RELAY,)).encode(), 0.0)
    assert sent(actions)[0].get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS


def test_cer_missing_origin_host_gets_5005_with_failed_avp() -> None:
    peer = responder()
    msg = cer()
    msg.avps = [a for a in msg.avps if a.key != A.AVP_ORIGIN_HOST]
    [cea] = sent(peer.receive_data(msg.encode(), 0.0))
    assert cea.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_MISSING_AVP
    failed = cea.find(A.AVP_FAILED_AVP)
    assert failed is not None and failed.find(A.AVP_ORIGIN_HOST) is not None


def test_request_before_cer_is_refused_and_closed() -> None:
    peer = responder()
    request = ccr()
    actions = peer.receive_data(request.encode(), 0.0)
    [answer] = sent(actions)
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_UNKNOWN_PEER
    assert answer.flags & FLAG_ERROR
    assert answer.hbh_id == request.hbh_id and answer.e2e_id == request.e2e_id
    assert answer.get(A.AVP_SESSION_ID) == "pgw.test;1;1"
    assert any(isinstance(a, Close) for a in actions)


def test_dwr_gets_dwa() -> None:
    peer = opened_peer()
    [dwa] = sent(peer.receive_data(dwr(7).encode(), 1.0))
    assert dwa.command == Command.DEVICE_WATCHDOG and dwa.hbh_id == 7
    assert dwa.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    assert dwa.get(A.AVP_ORIGIN_HOST) == "ocs.test"


def test_dpr_gets_dpa_then_closing() -> None:
    peer = opened_peer()
    [dpa] = sent(peer.receive_data(dpr().encode(), 1.0))
    assert dpa.command == Command.DISCONNECT_PEER
    assert dpa.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_SUCCESS
    assert peer.state is PeerState.CLOSING
    assert any(isinstance(a, Close) for a in peer.on_timer(1.0 + CONFIG.dpa_timeout))


def test_ccr_is_dispatched_once_open() -> None:
    peer = opened_peer()
    actions = peer.receive_data(ccr().encode(), 1.0)
    assert [type(a) for a in actions] == [Dispatch]


def test_unnegotiated_application_gets_3007() -> None:
    peer = opened_peer()
    [answer] = sent(peer.receive_data(ccr(app_id=16777238).encode(), 1.0))
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_APPLICATION_UNSUPPORTED
    assert answer.flags & FLAG_ERROR


def test_unknown_mandatory_avp_gets_5001_with_failed_avp() -> None:
    peer = opened_peer()
    unknown = Avp(99999, 0x40, b"\x01\x02\x03")
    [answer] = sent(peer.receive_data(ccr(extra=[unknown]).encode(), 1.0))
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_AVP_UNSUPPORTED
    failed = answer.find(A.AVP_FAILED_AVP)
    assert failed is not None and failed.find(99999) is not None
    assert failed.find(99999).data == b"\x01\x02\x03"  # type: ignore[union-attr]


def test_unknown_optional_avp_is_accepted() -> None:
    peer = opened_peer()
    actions = peer.receive_data(ccr(extra=[Avp(99999, 0, b"x")]).encode(), 1.0)
    assert [type(a) for a in actions] == [Dispatch]


def test_invalid_avp_length_gets_5014_and_connection_survives() -> None:
    peer = opened_peer()
    raw = bytearray(ccr().encode())
    # corrupt the length of the first AVP (Session-Id) so it overruns the message
    raw[20 + 5 : 20 + 8] = (0xFFFF).to_bytes(3, "big")
    [answer] = sent(peer.receive_data(bytes(raw), 1.0))
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_INVALID_AVP_LENGTH
    assert answer.find(A.AVP_FAILED_AVP) is not None
    assert peer.state is PeerState.OPEN
    assert [type(a) for a in peer.receive_data(ccr().encode(), 1.0)] == [Dispatch]


def test_reserved_header_bits_get_3008() -> None:
    peer = opened_peer()
    raw = bytearray(ccr().encode())
    raw[4] |= 0x01
    [answer] = sent(peer.receive_data(bytes(raw), 1.0))
    assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_INVALID_HDR_BITS


def test_garbage_closes_only_this_connection_with_an_answer_if_possible() -> None:
    peer = opened_peer()
    actions = peer.receive_data(b"\x02" + b"\x00" * 30, 1.0)
    assert any(isinstance(a, Close) for a in actions)
    assert peer.state is PeerState.CLOSED
    assert peer.receive_data(ccr().encode(), 2.0) == []


def test_watchdog_sends_dwr_after_tw_and_closes_without_dwa() -> None:
    peer = opened_peer()
    deadline = peer.next_deadline()
    assert 28.0 <= deadline <= 32.0
    [dwr_msg] = sent(peer.on_timer(deadline))
    assert dwr_msg.command == Command.DEVICE_WATCHDOG and dwr_msg.is_request
    # RFC 3539: no DWA within Tw makes the peer suspect; a further Tw without it closes.
    assert peer.on_timer(peer.next_deadline()) == []
    assert peer.suspect and peer.state is PeerState.OPEN
    assert any(isinstance(a, Close) for a in peer.on_timer(peer.next_deadline()))


def test_watchdog_dwa_resets() -> None:
    peer = opened_peer()
    [dwr_msg] = sent(peer.on_timer(peer.next_deadline()))
    dwa = dwr_msg.answer_header()
    dwa.avps = list(dwr().avps)
    assert peer.on_timer(peer.next_deadline()) == []  # suspect, not yet closed
    assert peer.suspect
    peer.receive_data(dwa.encode(), 31.0)
    assert peer.state is PeerState.OPEN and not peer.suspect
    assert peer.next_deadline() > 50.0


def test_initiator_sends_cer_and_opens_on_cea() -> None:
    client = PeerConnection(CONFIG, initiator=True, now=0.0)
    ours = PeerTable.of(PeerSpec.of("ocs.test", addresses=["192.0.2.10"]))  # the client
    server = responder(LocalConfig(identity=Identity("srv.test", "test"), peers=ours))
    [cer_bytes] = [a.data for a in client.start(0.0) if isinstance(a, Send)]
    [cea_bytes] = [a.data for a in server.receive_data(cer_bytes, 0.0) if isinstance(a, Send)]
    actions = client.receive_data(cea_bytes, 0.0)
    assert any(isinstance(a, Opened) for a in actions)
    assert client.state is PeerState.OPEN


def test_cer_timeout_closes() -> None:
    peer = responder()
    assert any(isinstance(a, Close) for a in peer.on_timer(CONFIG.cer_timeout))


def test_messages_split_across_reads() -> None:
    peer = responder()
    data = cer().encode() + ccr().encode()
    actions: list[object] = []
    for i in range(0, len(data), 7):
        actions.extend(peer.receive_data(data[i : i + 7], 0.0))
    assert [type(a) for a in actions if not isinstance(a, Send)] == [Opened, Dispatch]
