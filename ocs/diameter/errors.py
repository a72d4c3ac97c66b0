"""Protocol errors raised by the codec and the peer. Each carries the RFC 6733 Result-Code it
maps to and, where the RFC asks for one, the offending AVP for Failed-AVP.

Charging outcomes (4010, 4012, 5030, 5031, ...) are not exceptions of this module; the
application maps its own errors to Result-Codes in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import ResultCode

if TYPE_CHECKING:
    from .codec import Avp


class DiameterError(Exception):
    """An error that is answered with ``result_code`` (and Failed-AVP when known)."""

    result_code: int = ResultCode.DIAMETER_UNABLE_TO_COMPLY

    def __init__(
        self, message: str, failed_avp: Avp | None = None, result_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.failed_avp = failed_avp
        if result_code is not None:
            self.result_code = result_code


class FramingError(DiameterError):
    """The byte stream cannot be split into messages any more: answer if possible, then close."""

    def __init__(self, message: str, result_code: int, header: bytes = b"") -> None:
        super().__init__(message, None, result_code)
        self.header = header  # the first 20 bytes of the offending message, if we had them


class InvalidHeaderBits(DiameterError):
    result_code = ResultCode.DIAMETER_INVALID_HDR_BITS


class InvalidAvpBits(DiameterError):
    result_code = ResultCode.DIAMETER_INVALID_AVP_BITS


class InvalidAvpLength(DiameterError):
    result_code = ResultCode.DIAMETER_INVALID_AVP_LENGTH


class InvalidAvpValue(DiameterError):
    result_code = ResultCode.DIAMETER_INVALID_AVP_VALUE


class MissingAvp(DiameterError):
    result_code = ResultCode.DIAMETER_MISSING_AVP


class AvpUnsupported(DiameterError):
    result_code = ResultCode.DIAMETER_AVP_UNSUPPORTED


class AvpOccursTooManyTimes(DiameterError):
    result_code = ResultCode.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES


class CommandUnsupported(DiameterError):
    result_code = ResultCode.DIAMETER_COMMAND_UNSUPPORTED


class ApplicationUnsupported(DiameterError):
    result_code = ResultCode.DIAMETER_APPLICATION_UNSUPPORTED
