"""Charging outcomes as exceptions, and the ONE function that maps any exception met while
charging to a Result-Code.

Two families stay apart (STYLE.md #4): protocol errors (:class:`DiameterError`, 3xxx/5xxx,
raised by the codec and the views) and charging outcomes (this module's
:class:`ChargingError` and the rating engine's :class:`RatingError`).
"""

from __future__ import annotations

from typing import Final

from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ocs.diameter.constants import ResultCode
from ocs.diameter.errors import DiameterError
from ocs.rating.errors import (
    NoTwinError,
    RatingError,
    SubscriptionInactive,
    UnknownSubscriber,
)


class ChargingError(Exception):
    """A charging outcome other than success, answered with ``result_code``."""

    result_code: int = ResultCode.DIAMETER_UNABLE_TO_COMPLY


class CreditLimitReached(ChargingError):
    result_code = ResultCode.DIAMETER_CREDIT_LIMIT_REACHED


class ServiceDenied(ChargingError):
    result_code = ResultCode.DIAMETER_END_USER_SERVICE_DENIED


class NotApplicable(ChargingError):
    """The service is granted without credit control (zero-rated rating groups)."""

    result_code = ResultCode.DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE


class UserUnknown(ChargingError):
    result_code = ResultCode.DIAMETER_USER_UNKNOWN


class RatingFailed(ChargingError):
    result_code = ResultCode.DIAMETER_RATING_FAILED


class StoreUnavailable(ChargingError):
    """The balance store cannot be reached in time: failure handling applies."""

    result_code = ResultCode.DIAMETER_UNABLE_TO_COMPLY


def result_code_for(exc: BaseException) -> int:
    """The Result-Code answering ``exc``; the only place exceptions become Result-Codes."""
    if isinstance(exc, ChargingError | DiameterError):
        return int(exc.result_code)
    if isinstance(exc, UnknownSubscriber):
        return ResultCode.DIAMETER_USER_UNKNOWN
    if isinstance(exc, SubscriptionInactive | NoTwinError):
        # a suspended SIM, or no twin of the SIM covers this usage
        return ResultCode.DIAMETER_END_USER_SERVICE_DENIED
    if isinstance(exc, RatingError):
        return ResultCode.DIAMETER_RATING_FAILED
    return ResultCode.DIAMETER_UNABLE_TO_COMPLY


STORE_OUTAGES: Final[tuple[type[BaseException], ...]] = (
    StoreUnavailable,
    RedisConnectionError,  # refused, reset, closed, AUTH, loading, max connections
    RedisTimeoutError,  # a command's socket timeout
    ConnectionError,  # the builtin (OSError) family: refused, reset, broken pipe
    TimeoutError,  # the CCR's deadline (``Deadlines``; asyncio.TimeoutError is this class)
    ClusterDownError,  # CLUSTERDOWN, MASTERDOWN: the cluster is failing over
    TryAgainError,  # TRYAGAIN: a slot is migrating
    ReadOnlyError,  # READONLY: we reached a replica that was the master a moment ago
    SlotNotCoveredError,
    RedisClusterUnreachableError,
)
"""THE set of exceptions that mean the balance store cannot be reached (or not in time).
Only these take the Credit-Control failure-handling path (a failover grant, journaled).
Anything else met while charging (a script error such as "value is not an integer", a bug,
a malformed stored result) is a charging failure: 5012 (``unexpected_error_code``), an ERROR
log line with the Session-Id and ``ocs_charging_errors_total``, never a grant."""


def is_store_outage(exc: BaseException) -> bool:
    """Redis unreachable or too slow (:data:`STORE_OUTAGES`): failure handling answers."""
    return isinstance(exc, STORE_OUTAGES)
