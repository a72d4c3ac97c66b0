"""Building answers: every answer carries Session-Id (when the request had one), Result-Code,
Origin-Host, Origin-Realm, and the request's command, application, hop-by-hop and end-to-end ids.
Error answers (RFC 6733 7.1.3) set the E bit for 3xxx codes and carry Failed-AVP / Error-Message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import avp_codes as A
from .codec import Avp, Message, grouped, text, u32
from .constants import FLAG_ERROR, is_protocol_error
from .errors import DiameterError


@dataclass(frozen=True, slots=True)
class Identity:
    """Who we are on the Diameter network."""

    origin_host: str
    origin_realm: str

    def origin_avps(self) -> list[Avp]:
        return [
            text(A.AVP_ORIGIN_HOST, self.origin_host),
            text(A.AVP_ORIGIN_REALM, self.origin_realm),
        ]


def make_answer(
    request: Message, identity: Identity, result_code: int, avps: Iterable[Avp] = ()
) -> Message:
    """Answer to ``request`` with the mandatory leading AVPs, then ``avps`` in order."""
    answer = request.answer_header(FLAG_ERROR if is_protocol_error(result_code) else 0)
    out = answer.avps
    session = request.find(A.AVP_SESSION_ID)
    if session is not None:
        out.append(session)
    out.append(u32(A.AVP_RESULT_CODE, result_code))
    out.extend(identity.origin_avps())
    out.extend(avps)
    return answer


def make_error_answer(
    request: Message,
    identity: Identity,
    result_code: int,
    *,
    failed_avp: Avp | None = None,
    error_message: str | None = None,
    avps: Iterable[Avp] = (),
) -> Message:
    """An error answer; application AVPs that must echo the request (e.g. CC-Request-Type and
    CC-Request-Number in a CCA) are passed in ``avps``."""
    extra: list[Avp] = list(avps)
    if error_message:
        extra.append(text(A.AVP_ERROR_MESSAGE, error_message[:200]))
    if failed_avp is not None:
        extra.append(grouped(A.AVP_FAILED_AVP, [failed_avp]))
    return make_answer(request, identity, result_code, extra)


def answer_for_error(
    request: Message, identity: Identity, error: DiameterError, avps: Iterable[Avp] = ()
) -> Message:
    return make_error_answer(
        request,
        identity,
        error.result_code,
        failed_avp=error.failed_avp,
        error_message=error.message,
        avps=avps,
    )
