"""Re-Auth-Request and Abort-Session-Request of the Credit-Control application (RFC 4006
5.5, 5.6; RFC 6733 8.3, 8.5), and what their answers mean for our session records."""

from __future__ import annotations

from typing import Final

from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.diameter.codec import Avp, Message, avp, build_message, text, u32
from ocs.diameter.constants import Application, Command, ReAuthRequestType, ResultCode

UNKNOWN_SESSION: Final = int(ResultCode.DIAMETER_UNKNOWN_SESSION_ID)
SUCCESS: Final = int(ResultCode.DIAMETER_SUCCESS)


def _base(identity: Identity, session_id: str, host: str, realm: str) -> list[Avp]:
    return [
        text(A.AVP_SESSION_ID, session_id),
        *identity.origin_avps(),
        text(A.AVP_DESTINATION_REALM, realm),
        text(A.AVP_DESTINATION_HOST, host),
        u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
    ]


def re_auth_request(identity: Identity, session_id: str, host: str, realm: str) -> Message:
    """RAR: the client should ask for quota again (CCR-U) for every rating group."""
    avps = [
        *_base(identity, session_id, host, realm),
        avp(A.AVP_RE_AUTH_REQUEST_TYPE, int(ReAuthRequestType.AUTHORIZE_ONLY)),
    ]
    return build_message(Command.RE_AUTH, Application.CREDIT_CONTROL, avps)


def abort_session_request(identity: Identity, session_id: str, host: str, realm: str) -> Message:
    """ASR: the client should end the session (and send CCR-T)."""
    avps = _base(identity, session_id, host, realm)
    return build_message(Command.ABORT_SESSION, Application.CREDIT_CONTROL, avps)


def result_code(answer: Message) -> int:
    value = answer.get(A.AVP_RESULT_CODE, 0)
    return int(value) if isinstance(value, int) else 0


def session_is_gone(code: int) -> bool:
    """The client no longer knows the session: forget it."""
    return code == UNKNOWN_SESSION
