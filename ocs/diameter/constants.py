"""Named protocol constants: header flags, command codes, application ids, result codes,
enumerated AVP values. Logic compares against these names, never bare numbers.

AVP codes live in :mod:`ocs.diameter.avp_codes` (generated from ``avps.tsv``).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

DIAMETER_VERSION: Final = 1
HEADER_LENGTH: Final = 20
MAX_MESSAGE_LENGTH: Final = 0xFFFFFF

# Header command flags (RFC 6733 3)
FLAG_REQUEST: Final = 0x80
FLAG_PROXIABLE: Final = 0x40
FLAG_ERROR: Final = 0x20
FLAG_RETRANSMIT: Final = 0x10
FLAGS_RESERVED: Final = 0x0F

# AVP flags (RFC 6733 4.1)
AVP_FLAG_VENDOR: Final = 0x80
AVP_FLAG_MANDATORY: Final = 0x40
AVP_FLAG_PROTECTED: Final = 0x20
AVP_FLAGS_RESERVED: Final = 0x1F

VENDOR_NONE: Final = 0
VENDOR_3GPP: Final = 10415
VENDOR_SHIFT: Final = 32  # AVP key = code | vendor << VENDOR_SHIFT


class Command(IntEnum):
    CAPABILITIES_EXCHANGE = 257
    RE_AUTH = 258
    ACCOUNTING = 271
    CREDIT_CONTROL = 272
    ABORT_SESSION = 274
    SESSION_TERMINATION = 275
    DEVICE_WATCHDOG = 280
    DISCONNECT_PEER = 282


class Application(IntEnum):
    COMMON = 0  # base protocol messages
    NASREQ = 1
    BASE_ACCOUNTING = 3
    CREDIT_CONTROL = 4
    RELAY = 0xFFFFFFFF


class ResultCode(IntEnum):
    DIAMETER_MULTI_ROUND_AUTH = 1001
    DIAMETER_SUCCESS = 2001
    DIAMETER_LIMITED_SUCCESS = 2002
    # protocol errors (E bit set on the answer)
    DIAMETER_COMMAND_UNSUPPORTED = 3001
    DIAMETER_UNABLE_TO_DELIVER = 3002
    DIAMETER_REALM_NOT_SERVED = 3003
    DIAMETER_TOO_BUSY = 3004
    DIAMETER_LOOP_DETECTED = 3005
    DIAMETER_REDIRECT_INDICATION = 3006
    DIAMETER_APPLICATION_UNSUPPORTED = 3007
    DIAMETER_INVALID_HDR_BITS = 3008
    DIAMETER_INVALID_AVP_BITS = 3009
    DIAMETER_UNKNOWN_PEER = 3010
    # transient failures
    DIAMETER_AUTHENTICATION_REJECTED = 4001
    DIAMETER_OUT_OF_SPACE = 4002
    ELECTION_LOST = 4003
    DIAMETER_END_USER_SERVICE_DENIED = 4010
    DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE = 4011
    DIAMETER_CREDIT_LIMIT_REACHED = 4012
    # permanent failures
    DIAMETER_AVP_UNSUPPORTED = 5001
    DIAMETER_UNKNOWN_SESSION_ID = 5002
    DIAMETER_AUTHORIZATION_REJECTED = 5003
    DIAMETER_INVALID_AVP_VALUE = 5004
    DIAMETER_MISSING_AVP = 5005
    DIAMETER_RESOURCES_EXCEEDED = 5006
    DIAMETER_CONTRADICTING_AVPS = 5007
    DIAMETER_AVP_NOT_ALLOWED = 5008
    DIAMETER_AVP_OCCURS_TOO_MANY_TIMES = 5009
    DIAMETER_NO_COMMON_APPLICATION = 5010
    DIAMETER_UNSUPPORTED_VERSION = 5011
    DIAMETER_UNABLE_TO_COMPLY = 5012
    DIAMETER_INVALID_BIT_IN_HEADER = 5013
    DIAMETER_INVALID_AVP_LENGTH = 5014
    DIAMETER_INVALID_MESSAGE_LENGTH = 5015
    DIAMETER_INVALID_AVP_BIT_COMBO = 5016
    DIAMETER_NO_COMMON_SECURITY = 5017
    DIAMETER_USER_UNKNOWN = 5030
    DIAMETER_RATING_FAILED = 5031


def is_protocol_error(result_code: int) -> bool:
    """3xxx answers carry the E bit (RFC 6733 7.1.3)."""
    return 3000 <= result_code < 4000


class DisconnectCause(IntEnum):
    REBOOTING = 0
    BUSY = 1
    DO_NOT_WANT_TO_TALK_TO_YOU = 2


class CcRequestType(IntEnum):
    INITIAL_REQUEST = 1
    UPDATE_REQUEST = 2
    TERMINATION_REQUEST = 3
    EVENT_REQUEST = 4


class RequestedAction(IntEnum):
    DIRECT_DEBITING = 0
    REFUND_ACCOUNT = 1
    CHECK_BALANCE = 2
    PRICE_ENQUIRY = 3


class SubscriptionIdType(IntEnum):
    END_USER_E164 = 0
    END_USER_IMSI = 1
    END_USER_SIP_URI = 2
    END_USER_NAI = 3
    END_USER_PRIVATE = 4


class FinalUnitAction(IntEnum):
    TERMINATE = 0
    REDIRECT = 1
    RESTRICT_ACCESS = 2


class RedirectAddressType(IntEnum):
    IPV4_ADDRESS = 0
    IPV6_ADDRESS = 1
    URL = 2
    SIP_URI = 3


class CreditControlFailureHandling(IntEnum):
    TERMINATE = 0
    CONTINUE = 1
    RETRY_AND_TERMINATE = 2


class CheckBalanceResult(IntEnum):
    ENOUGH_CREDIT = 0
    NO_CREDIT = 1


class ReportingReason(IntEnum):
    """3GPP-Reporting-Reason (TS 32.299 7.2.175)."""

    THRESHOLD = 0
    QHT = 1
    FINAL = 2
    QUOTA_EXHAUSTED = 3
    VALIDITY_TIME = 4
    OTHER_QUOTA_TYPE = 5
    RATING_CONDITION_CHANGE = 6
    FORCED_REAUTHORISATION = 7
    POOL_EXHAUSTED = 8
    UNUSED_QUOTA_TIMER = 9


class TerminationCause(IntEnum):
    DIAMETER_LOGOUT = 1
    DIAMETER_SERVICE_NOT_PROVIDED = 2
    DIAMETER_BAD_ANSWER = 3
    DIAMETER_ADMINISTRATIVE = 4
    DIAMETER_LINK_BROKEN = 5
    DIAMETER_AUTH_EXPIRED = 6
    DIAMETER_USER_MOVED = 7
    DIAMETER_SESSION_TIMEOUT = 8


class ReAuthRequestType(IntEnum):
    AUTHORIZE_ONLY = 0
    AUTHORIZE_AUTHENTICATE = 1


class RatType(IntEnum):
    """RAT-Type AVP (TS 29.212 5.3.31)."""

    WLAN = 0
    VIRTUAL = 1
    TRUSTED_N3GA = 2
    WIRELINE = 3
    UTRAN = 1000
    GERAN = 1001
    GAN = 1002
    HSPA_EVOLUTION = 1003
    EUTRAN = 1004
    EUTRAN_NB_IOT = 1005
    NR = 1006
    LTE_M = 1007
    NR_U = 1008
    EUTRAN_LEO = 1011
    CDMA2000_1X = 2000
    HRPD = 2001
    UMB = 2002
    EHRPD = 2003


class ThreeGppRatType(IntEnum):
    """3GPP-RAT-Type (TS 29.061 16.4.7.2 sub-attribute 21): a single octet."""

    UTRAN = 1
    GERAN = 2
    WLAN = 3
    GAN = 4
    HSPA_EVOLUTION = 5
    EUTRAN = 6
    VIRTUAL = 7
    EUTRAN_NB_IOT = 8
    LTE_M = 9
    NR = 10
