"""RFC 6733 peer state machine, sans I/O: bytes and clock readings in, actions out.

One :class:`PeerConnection` per transport connection. It frames and decodes the byte stream,
runs capabilities exchange (CER/CEA) as responder or initiator, answers DWR and DPR itself,
runs the device watchdog (RFC 3539 Tw), validates requests at the base-protocol level and hands
application requests and answers upward as actions. It never touches a socket, a task or a
clock of its own: the transport feeds it and carries out what it returns.

Deliberate simplifications (documented for operators):
* No election (RFC 6733 5.6.4): a second connection from the same Origin-Host is accepted
  alongside the first; the routing agent in front of us chooses which one to use.
* TLS is negotiated at connection set-up (RFC 6733 "TLS/TCP" on a dedicated port), not in band;
  CER Inband-Security-Id other than NO_INBAND_SECURITY is ignored.

Who may connect (responder side): :mod:`ocs.diameter.peers`. Before its CER a connection may
buffer at most ``max_cer_size`` bytes and must send the CER within ``cer_timeout``; after it,
messages are up to ``max_message_size`` and a message that has started must be complete within
``message_timeout`` (a peer trickling a byte a second is closed; only whole messages count as
traffic for the watchdog). Every refusal is reported as a :class:`Refused` action, which the
transport counts.
"""

from __future__ import annotations

import enum
import ipaddress
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import avp_codes as A
from .answers import Identity, answer_for_error, make_answer, make_error_answer
from .codec import Avp, Message, avp, decode, find_unknown_mandatory, grouped, text, u32
from .constants import (
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    VENDOR_3GPP,
    Application,
    Command,
    DisconnectCause,
    ResultCode,
)
from .errors import DiameterError, FramingError, MissingAvp
from .framer import DEFAULT_MAX_CER, DEFAULT_MAX_MESSAGE, Framer
from .peers import (
    REFUSED_APPLICATION,
    REFUSED_CER_SIZE,
    REFUSED_CER_TIMEOUT,
    REFUSED_FORGED_ORIGIN_HOST,
    REFUSED_MESSAGE_SIZE,
    REFUSED_SLOW_MESSAGE,
    ConnectionOrigin,
    PeerRefused,
    PeerSpec,
    PeerTable,
)

BASE_COMMANDS = frozenset(
    {Command.CAPABILITIES_EXCHANGE, Command.DEVICE_WATCHDOG, Command.DISCONNECT_PEER}
)


class PeerState(enum.Enum):
    WAIT_CER = "wait-cer"  # responder: connection accepted, CER not yet received
    WAIT_CEA = "wait-cea"  # initiator: CER sent
    OPEN = "open"
    CLOSING = "closing"  # DPR sent or received
    CLOSED = "closed"


@dataclass(slots=True)
class LocalConfig:
    """What we announce in CER/CEA and accept from peers."""

    identity: Identity
    host_ip_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    vendor_id: int = 0
    product_name: str = "ocs"
    firmware_revision: int = 1
    origin_state_id: int = 1
    auth_applications: frozenset[int] = frozenset({Application.CREDIT_CONTROL})
    acct_applications: frozenset[int] = frozenset()
    vendor_specific: tuple[tuple[int, int], ...] = ((VENDOR_3GPP, Application.CREDIT_CONTROL),)
    supported_vendors: tuple[int, ...] = (VENDOR_3GPP,)
    watchdog_interval: float = 30.0
    cer_timeout: float = 10.0
    dpa_timeout: float = 5.0
    max_message_size: int = DEFAULT_MAX_MESSAGE
    max_cer_size: int = DEFAULT_MAX_CER  # what a connection may send before its CER is whole
    message_timeout: float = 10.0  # seconds from a message's first byte to its last
    peers: PeerTable = field(default_factory=PeerTable)  # who may connect to us


@dataclass(frozen=True, slots=True)
class RemotePeer:
    """What the other side told us in its CER/CEA; ``spec`` is the configured peer it was
    admitted as (None when we initiated the connection)."""

    origin_host: str
    origin_realm: str
    product_name: str = ""
    applications: frozenset[int] = frozenset()
    spec: PeerSpec | None = None


# -- actions returned to the transport ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class Dispatch:
    """An application request to answer (through :meth:`PeerConnection.answer`)."""

    request: Message
    raw: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    """An answer to an application request we sent."""

    answer: Message


@dataclass(frozen=True, slots=True)
class Opened:
    peer: RemotePeer


@dataclass(frozen=True, slots=True)
class Close:
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A connection or a request refused, for the metrics: ``reason`` is a label of
    :mod:`ocs.diameter.peers` (``unknown_peer``, ``forged_origin_host``, ...)."""

    reason: str
    detail: str = ""


Action = Send | Dispatch | Deliver | Opened | Close | Refused


class PeerConnection:
    """The state of one Diameter connection. All methods return a list of actions."""

    def __init__(
        self,
        config: LocalConfig,
        *,
        initiator: bool,
        now: float,
        origin: ConnectionOrigin | None = None,
    ) -> None:
        self.config = config
        self.initiator = initiator
        self.origin = origin if origin is not None else ConnectionOrigin()
        self.state = PeerState.WAIT_CEA if initiator else PeerState.WAIT_CER
        self.remote: RemotePeer | None = None
        self.common_applications: frozenset[int] = frozenset()
        # Origin-Hosts (lower-case bytes) a request on this connection may carry, once open
        self._origin_hosts: frozenset[bytes] = frozenset()
        self._framer = Framer(config.max_message_size if initiator else config.max_cer_size)
        self._next_id = random.getrandbits(32)
        self._last_rx = now  # the last whole message (or the connection's start)
        self._partial_since: float | None = None  # first byte of an unfinished message
        self._opened_at = now
        self._dwr_sent_at: float | None = None
        self._dwr_hbh: int | None = None
        self.suspect = False  # RFC 3539: a DWR went unanswered for Tw
        self._closing_since: float | None = None
        self._base_pending: dict[int, int] = {}  # hbh -> command, for CER/DWR/DPR we sent
        self._tw = self._jittered(config.watchdog_interval)

    # -- identifiers ---------------------------------------------------------------------
    def next_id(self) -> int:
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        return self._next_id

    @staticmethod
    def _jittered(tw: float) -> float:
        # RFC 3539 3.4.1: jitter of +/- 2 s around Tw (kept proportional for short test Tw)
        spread = min(2.0, tw / 10)
        return tw + random.uniform(-spread, spread)

    @property
    def is_open(self) -> bool:
        return self.state is PeerState.OPEN

    @property
    def closed(self) -> bool:
        return self.state is PeerState.CLOSED

    # -- inputs --------------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        """Initiator: send CER."""
        if not self.initiator:
            return []
        self._opened_at = now
        return [self._send_base_request(Command.CAPABILITIES_EXCHANGE, self._capabilities())]

    def receive_data(self, data: bytes, now: float) -> list[Action]:
        if self.state is PeerState.CLOSED:
            return []
        framer = self._framer
        try:
            raws = framer.feed(data)
        except FramingError as exc:
            return [
                *self._refused_size(exc),
                *self._answer_framing_error(exc),
                Close(f"framing error: {exc.message}"),
            ]
        if raws:
            self._last_rx = now
            self._partial_since = now if framer.buffered else None
        elif self._partial_since is None:
            self._partial_since = now
        actions: list[Action] = []
        for raw in raws:
            actions.extend(self._receive_message(raw, now))
            if self.closed:
                break
        return actions

    def on_timer(self, now: float) -> list[Action]:
        """Call periodically (the transport uses :meth:`next_deadline`). Deadlines are compared
        as ``now >= start + interval``, the very sum next_deadline returns, so a timer firing
        exactly at its deadline always acts (``now - start >= interval`` can round below)."""
        cfg = self.config
        if self.state is PeerState.WAIT_CER and now >= self._opened_at + cfg.cer_timeout:
            self.state = PeerState.CLOSED
            return [Refused(REFUSED_CER_TIMEOUT), Close("no CER received in time")]
        if self.state is PeerState.WAIT_CEA and now >= self._opened_at + cfg.cer_timeout:
            self.state = PeerState.CLOSED
            return [Close("no CEA received in time")]
        if self.state is PeerState.CLOSING:
            if self._closing_since is not None and now >= self._closing_since + cfg.dpa_timeout:
                self.state = PeerState.CLOSED
                return [Close("disconnect completed")]
            return []
        if self.state is not PeerState.OPEN:
            return []
        partial = self._partial_since
        if partial is not None and now >= partial + cfg.message_timeout:
            self.state = PeerState.CLOSED
            detail = f"a message still incomplete after {cfg.message_timeout:g} s"
            return [Refused(REFUSED_SLOW_MESSAGE, detail), Close(detail)]
        if self._dwr_sent_at is not None:
            if now >= self._dwr_sent_at + self._tw:
                if not self.suspect:
                    # RFC 3539 3.4.1: no answer within Tw makes the peer SUSPECT; it is closed
                    # only if the DWA is still missing after a further Tw.
                    self.suspect = True
                    self._dwr_sent_at = now
                    return []
                self.state = PeerState.CLOSED
                return [Close("watchdog: no DWA within 2 x Tw")]
            return []
        if now >= self._last_rx + self._tw:
            self._dwr_sent_at = now
            action = self._send_base_request(Command.DEVICE_WATCHDOG, self._origin_with_state())
            self._dwr_hbh = next(reversed(self._base_pending))
            return [action]
        return []

    def next_deadline(self) -> float:
        """The clock reading at which :meth:`on_timer` has something to do."""
        cfg = self.config
        if self.state in (PeerState.WAIT_CER, PeerState.WAIT_CEA):
            return self._opened_at + cfg.cer_timeout
        if self.state is PeerState.CLOSING and self._closing_since is not None:
            return self._closing_since + cfg.dpa_timeout
        deadline = self._dwr_sent_at + self._tw if self._dwr_sent_at is not None else None
        if deadline is None:
            deadline = self._last_rx + self._tw
        if self._partial_since is not None:
            deadline = min(deadline, self._partial_since + cfg.message_timeout)
        return deadline

    def disconnect(self, now: float, cause: int = DisconnectCause.REBOOTING) -> list[Action]:
        """Send DPR (graceful shutdown); the connection closes on DPA or after a timeout."""
        if self.state is not PeerState.OPEN:
            self.state = PeerState.CLOSED
            return [Close("disconnect before open")]
        self.state = PeerState.CLOSING
        self._closing_since = now
        avps = [*self.config.identity.origin_avps(), u32(A.AVP_DISCONNECT_CAUSE, cause)]
        return [self._send_base_request(Command.DISCONNECT_PEER, avps)]

    def answer(self, answer: Message) -> bytes:
        """Encode an application answer for sending (the caller writes it)."""
        return answer.encode()

    def request(self, message: Message) -> tuple[int, bytes]:
        """Prepare an application request we originate (RAR, ASR): assign ids, encode."""
        message.hbh_id = self.next_id()
        if not message.e2e_id:
            message.e2e_id = self.next_id()
        message.flags |= FLAG_REQUEST
        return message.hbh_id, message.encode()

    # -- message handling ----------------------------------------------------------------
    def _receive_message(self, raw: bytes, now: float) -> list[Action]:
        try:
            msg = decode(raw)
        except FramingError as exc:
            self.state = PeerState.CLOSED
            return [*self._answer_framing_error(exc), Close(exc.message)]
        except DiameterError as exc:
            return self._answer_undecodable(raw, exc)
        if msg.is_request:
            return self._receive_request(msg, raw, now)
        return self._receive_answer(msg)

    def _receive_request(self, msg: Message, raw: bytes, now: float) -> list[Action]:
        command = msg.command
        identity = self.config.identity
        if command == Command.CAPABILITIES_EXCHANGE:
            return self._receive_cer(msg)
        if self.state in (PeerState.WAIT_CER, PeerState.WAIT_CEA):
            self.state = PeerState.CLOSED
            error = make_error_answer(
                msg,
                identity,
                ResultCode.DIAMETER_UNKNOWN_PEER,
                error_message="capabilities exchange (CER) must come first",
            )
            return [Send(error.encode()), Close("request before CER")]
        if self._origin_hosts:
            origin = msg.find(A.AVP_ORIGIN_HOST)
            if origin is None or origin.data is None:
                missing = MissingAvp("request without Origin-Host", text(A.AVP_ORIGIN_HOST, ""))
                return [Send(answer_for_error(msg, identity, missing).encode())]
            if origin.data.lower() not in self._origin_hosts:
                claimed = origin.data.decode("utf-8", "replace")
                detail = f"request Origin-Host {claimed!r} is not the peer's"
                error = make_error_answer(
                    msg, identity, ResultCode.DIAMETER_UNKNOWN_PEER, error_message=detail
                )
                return [Send(error.encode()), Refused(REFUSED_FORGED_ORIGIN_HOST, detail)]
        if command == Command.DEVICE_WATCHDOG:
            return [
                Send(
                    make_answer(
                        msg, identity, ResultCode.DIAMETER_SUCCESS, self._state_avp()
                    ).encode()
                )
            ]
        if command == Command.DISCONNECT_PEER:
            self.state = PeerState.CLOSING
            self._closing_since = now
            return [Send(make_answer(msg, identity, ResultCode.DIAMETER_SUCCESS).encode())]
        if (
            msg.app_id not in self.common_applications
            and Application.RELAY not in self.common_applications
        ):
            error = make_error_answer(
                msg,
                identity,
                ResultCode.DIAMETER_APPLICATION_UNSUPPORTED,
                error_message=f"application {msg.app_id} was not negotiated",
            )
            return [Send(error.encode())]
        unknown = find_unknown_mandatory(msg.avps)
        if unknown is not None:
            error = make_error_answer(
                msg,
                identity,
                ResultCode.DIAMETER_AVP_UNSUPPORTED,
                failed_avp=unknown,
                error_message=f"unsupported mandatory AVP {unknown.name}",
            )
            return [Send(error.encode())]
        return [Dispatch(msg, raw)]

    def _receive_answer(self, msg: Message) -> list[Action]:
        command = self._base_pending.pop(msg.hbh_id, None)
        if command is None:
            return [Deliver(msg)]
        if command == Command.CAPABILITIES_EXCHANGE:
            return self._receive_cea(msg)
        if command == Command.DEVICE_WATCHDOG:
            if msg.hbh_id == self._dwr_hbh:
                self._dwr_sent_at = None
                self._dwr_hbh = None
                self.suspect = False
                self._tw = self._jittered(self.config.watchdog_interval)
            return []
        if command == Command.DISCONNECT_PEER:
            self.state = PeerState.CLOSED
            return [Close("disconnected (DPA received)")]
        return []

    # -- capabilities exchange -----------------------------------------------------------
    def _receive_cer(self, msg: Message) -> list[Action]:
        identity = self.config.identity
        if self.state is not PeerState.WAIT_CER:
            # A CER on an open connection is a protocol error; answer and keep the connection.
            error = make_error_answer(
                msg,
                identity,
                ResultCode.DIAMETER_UNABLE_TO_COMPLY,
                error_message="capabilities already exchanged",
                avps=self._capabilities(with_origin=False),
            )
            return [Send(error.encode())]
        try:
            remote = _remote_from_capabilities(msg)
        except DiameterError as exc:
            self.state = PeerState.CLOSED
            error = answer_for_error(msg, identity, exc, self._capabilities(with_origin=False))
            return [Send(error.encode()), Close(f"invalid CER: {exc.message}")]
        try:
            spec = self.config.peers.admit(
                remote.origin_host,
                remote.origin_realm,
                self.origin,
                own_host=identity.origin_host,
            )
        except PeerRefused as refused:
            self.state = PeerState.CLOSED
            error = make_error_answer(
                msg,
                identity,
                ResultCode.DIAMETER_UNKNOWN_PEER,
                error_message="unknown peer",
                avps=self._capabilities(with_origin=False),
            )
            return [
                Send(error.encode()),
                Refused(refused.reason, refused.detail),
                Close(refused.detail),
            ]
        common = self._common(remote.applications)
        if spec.applications:
            common &= spec.applications
        if not common:
            self.state = PeerState.CLOSED
            error = make_error_answer(
                msg,
                identity,
                ResultCode.DIAMETER_NO_COMMON_APPLICATION,
                error_message="no common application (we serve Diameter Credit-Control, 4)",
                avps=self._capabilities(with_origin=False),
            )
            actions: list[Action] = [Send(error.encode())]
            if spec.applications:
                detail = f"CER {remote.origin_host!r}: no application it is allowed"
                actions.append(Refused(REFUSED_APPLICATION, detail))
            return [*actions, Close("no common application")]
        remote = RemotePeer(
            remote.origin_host, remote.origin_realm, remote.product_name, remote.applications, spec
        )
        self.remote = remote
        self.common_applications = common
        self._origin_hosts = frozenset(
            h.lower().encode() for h in (spec.origin_host, remote.origin_host, *spec.relays_for)
        )
        self._framer.max_length = self.config.max_message_size
        self.state = PeerState.OPEN
        cea = make_answer(
            msg, identity, ResultCode.DIAMETER_SUCCESS, self._capabilities(with_origin=False)
        )
        return [Send(cea.encode()), Opened(remote)]

    def _receive_cea(self, msg: Message) -> list[Action]:
        result = msg.get(A.AVP_RESULT_CODE)
        if result != ResultCode.DIAMETER_SUCCESS:
            self.state = PeerState.CLOSED
            return [Close(f"CEA result {result}")]
        try:
            remote = _remote_from_capabilities(msg)
        except DiameterError as exc:
            self.state = PeerState.CLOSED
            return [Close(f"invalid CEA: {exc.message}")]
        self.remote = remote
        self.common_applications = self._common(remote.applications) or frozenset(
            self.config.auth_applications
        )
        self.state = PeerState.OPEN
        return [Opened(remote)]

    def _common(self, theirs: frozenset[int]) -> frozenset[int]:
        ours = frozenset(self.config.auth_applications | self.config.acct_applications) | {
            app for _vendor, app in self.config.vendor_specific
        }
        if Application.RELAY in theirs:
            return ours
        if Application.RELAY in ours:
            return theirs
        return ours & theirs

    def _capabilities(self, *, with_origin: bool = True) -> list[Avp]:
        cfg = self.config
        avps: list[Avp] = list(cfg.identity.origin_avps()) if with_origin else []
        avps.extend(
            avp(A.AVP_HOST_IP_ADDRESS, ipaddress.ip_address(a)) for a in cfg.host_ip_addresses
        )
        avps.append(u32(A.AVP_VENDOR_ID, cfg.vendor_id))
        avps.append(text(A.AVP_PRODUCT_NAME, cfg.product_name))
        avps.append(u32(A.AVP_ORIGIN_STATE_ID, cfg.origin_state_id))
        avps.extend(u32(A.AVP_SUPPORTED_VENDOR_ID, v) for v in cfg.supported_vendors)
        avps.extend(u32(A.AVP_AUTH_APPLICATION_ID, a) for a in sorted(cfg.auth_applications))
        avps.extend(u32(A.AVP_ACCT_APPLICATION_ID, a) for a in sorted(cfg.acct_applications))
        for vendor, app in cfg.vendor_specific:
            avps.append(
                grouped(
                    A.AVP_VENDOR_SPECIFIC_APPLICATION_ID,
                    [u32(A.AVP_VENDOR_ID, vendor), u32(A.AVP_AUTH_APPLICATION_ID, app)],
                )
            )
        avps.append(u32(A.AVP_FIRMWARE_REVISION, cfg.firmware_revision))
        return avps

    def _state_avp(self) -> list[Avp]:
        return [u32(A.AVP_ORIGIN_STATE_ID, self.config.origin_state_id)]

    def _origin_with_state(self) -> list[Avp]:
        return [*self.config.identity.origin_avps(), *self._state_avp()]

    def _send_base_request(self, command: int, avps: Iterable[Avp]) -> Send:
        hbh = self.next_id()
        msg = Message(command, Application.COMMON, FLAG_REQUEST, hbh, self.next_id(), list(avps))
        self._base_pending[hbh] = command
        return Send(msg.encode())

    # -- errors ----------------------------------------------------------------------------
    def _refused_size(self, exc: FramingError) -> list[Action]:
        """A message longer than this connection may send (before or after its CER)."""
        header = exc.header
        if len(header) < 4 or int.from_bytes(header[1:4], "big") <= self._framer.max_length:
            return []
        if self.state is PeerState.WAIT_CER:
            return [
                Refused(REFUSED_CER_SIZE, f"more than {self._framer.max_length} bytes before CER")
            ]
        return [Refused(REFUSED_MESSAGE_SIZE, f"a message over {self._framer.max_length} bytes")]

    def _answer_framing_error(self, exc: FramingError) -> list[Action]:
        """Best effort: answer a request whose header we could read, then close."""
        self.state = PeerState.CLOSED
        header = exc.header
        if len(header) < 20 or not header[4] & FLAG_REQUEST:
            return []
        request = _header_only(header)
        if request is None:
            return []
        error = make_error_answer(
            request, self.config.identity, exc.result_code, error_message=exc.message
        )
        return [Send(error.encode())]

    def _answer_undecodable(self, raw: bytes, exc: DiameterError) -> list[Action]:
        request = _header_only(raw)
        if request is None or not request.is_request:
            return []  # an undecodable answer: nothing to say back
        error = answer_for_error(request, self.config.identity, exc)
        return [Send(error.encode())]


def _header_only(raw: bytes) -> Message | None:
    """An empty message with a request's ids, command and application, to answer it."""
    if len(raw) < 20:
        return None
    command = int.from_bytes(raw[5:8], "big")
    app_id, hbh, e2e = (int.from_bytes(raw[i : i + 4], "big") for i in (8, 12, 16))
    return Message(command, app_id, raw[4] & (FLAG_REQUEST | FLAG_PROXIABLE), hbh, e2e)


def _remote_from_capabilities(msg: Message) -> RemotePeer:
    origin_host = msg.find(A.AVP_ORIGIN_HOST)
    origin_realm = msg.find(A.AVP_ORIGIN_REALM)
    if origin_host is None:
        raise MissingAvp("CER/CEA without Origin-Host", text(A.AVP_ORIGIN_HOST, ""))
    if origin_realm is None:
        raise MissingAvp("CER/CEA without Origin-Realm", text(A.AVP_ORIGIN_REALM, ""))
    if msg.find(A.AVP_HOST_IP_ADDRESS) is None:
        raise MissingAvp("CER/CEA without Host-IP-Address", avp(A.AVP_HOST_IP_ADDRESS, "0.0.0.0"))
    apps: set[int] = set()
    for a in msg.avps:
        if a.key in (A.AVP_AUTH_APPLICATION_ID, A.AVP_ACCT_APPLICATION_ID):
            apps.add(int(a.value))
        elif a.key == A.AVP_VENDOR_SPECIFIC_APPLICATION_ID:
            for key in (A.AVP_AUTH_APPLICATION_ID, A.AVP_ACCT_APPLICATION_ID):
                value = a.get(key)
                if value is not None:
                    apps.add(int(value))
    return RemotePeer(
        origin_host=str(origin_host.value),
        origin_realm=str(origin_realm.value),
        product_name=str(msg.get(A.AVP_PRODUCT_NAME, "")),
        applications=frozenset(apps),
    )
