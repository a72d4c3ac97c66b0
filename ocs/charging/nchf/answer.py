"""What a charging decision looks like on Nchf: one ``multipleUnitInformation`` per rating
group (TS 32.291 6.1.6.2.1.3, the MSCC of a CCA on Gy), and the ProblemDetails (TS 29.571
5.2.4.1) of a request refused as a whole, with the application error causes of TS 32.291
6.1.7.3. Outcomes map to result codes and causes here, and nowhere else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import orjson

from ocs.balance.models import BucketUnit
from ocs.charging.config import ChargingConfig
from ocs.charging.decision import UnitResult
from ocs.charging.limits import LimitAction
from ocs.charging.nchf.request import ChargingData, UnitUsage
from ocs.diameter.constants import FinalUnitAction
from ocs.http2 import Response
from ocs.rating.errors import NoTwinError, RatingError, SubscriptionInactive, UnknownSubscriber

JSON: Final = "application/json"
PROBLEM: Final = "application/problem+json"

# per rating group: ResultCode (TS 32.291 6.1.6.3.6)
SUCCESS: Final = "SUCCESS"
QUOTA_LIMIT_REACHED: Final = "QUOTA_LIMIT_REACHED"
END_USER_SERVICE_DENIED: Final = "END_USER_SERVICE_DENIED"
QUOTA_MANAGEMENT_NOT_APPLICABLE: Final = "QUOTA_MANAGEMENT_NOT_APPLICABLE"
USER_UNKNOWN: Final = "USER_UNKNOWN"
RATING_FAILED: Final = "RATING_FAILED"

# a request refused as a whole: (HTTP status, cause) of TS 32.291 Table 6.1.7.3-1
REFUSALS: Final[dict[str, tuple[int, str]]] = {
    QUOTA_LIMIT_REACHED: (403, "QUOTA_LIMIT_REACHED"),
    END_USER_SERVICE_DENIED: (403, "END_USER_REQUEST_DENIED"),
    QUOTA_MANAGEMENT_NOT_APPLICABLE: (403, "CHARGING_NOT_APPLICABLE"),
    USER_UNKNOWN: (404, "USER_UNKNOWN"),
    RATING_FAILED: (400, "CHARGING_FAILED"),
}
# the GrantedUnit member and the MultipleUnitInformation threshold of each unit kind
# (TS 32.291 6.1.6.2.1.9, 6.1.6.2.1.3: Time-, Volume-, Unit-Quota-Threshold on Gy)
GRANTED: Final = {
    BucketUnit.BYTES: "totalVolume",
    BucketUnit.SECONDS: "time",
    BucketUnit.EVENTS: "serviceSpecificUnits",
}
THRESHOLD: Final = {
    BucketUnit.BYTES: "volumeQuotaThreshold",
    BucketUnit.SECONDS: "timeQuotaThreshold",
    BucketUnit.EVENTS: "unitQuotaThreshold",
}
TITLES: Final = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 500: "Internal Error"}


def result_code(error: BaseException) -> str:
    """The ResultCode of a rating group the rating refused (as ``result_code_for`` on Gy)."""
    if isinstance(error, UnknownSubscriber):
        return USER_UNKNOWN
    if isinstance(error, SubscriptionInactive | NoTwinError):
        return END_USER_SERVICE_DENIED
    if isinstance(error, RatingError):
        return RATING_FAILED
    return RATING_FAILED


def refusal(code: str, *, update: bool) -> tuple[int, str]:
    """The status and cause of a request all of whose rating groups got ``code``. On an
    update the resource exists: its subscriber no longer being known is a failed
    re-authorisation (400 RE_AUTHORIZATION_FAILED)."""
    if update and code == USER_UNKNOWN:
        return 400, "RE_AUTHORIZATION_FAILED"
    return REFUSALS.get(code, (400, "CHARGING_FAILED"))


def problem(
    status: int,
    cause: str,
    detail: str,
    *,
    invalid: tuple[str, str] | None = None,
) -> Response:
    """A TS 29.571 ProblemDetails."""
    doc: dict[str, Any] = {
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "cause": cause,
    }
    if invalid is not None:
        doc["invalidParams"] = [{"param": invalid[0], "reason": invalid[1]}]
    return Response(status, _dump(doc), (("content-type", PROBLEM),))


class Answers:
    """Builds ``multipleUnitInformation`` entries from the configuration (fixed at start)."""

    def __init__(self, config: ChargingConfig, quota_holding_time: int) -> None:
        self.config = config
        self.quota_holding_time = quota_holding_time
        self.fui = _final_unit(config)

    def unit(
        self, usage: UnitUsage, result: UnitResult, unit: BucketUnit = BucketUnit.BYTES
    ) -> tuple[dict[str, Any], str]:
        """The multipleUnitInformation of one rating group and its ResultCode; ``unit``: the
        kind its grant is in (grantedUnit and the threshold name it)."""
        config = self.config
        info: dict[str, Any] = {"ratingGroup": usage.rating_group}
        if result.error is not None:
            code = result_code(result.error)
        elif result.cap is not None and result.want > 0:
            code = self._at_cap(info, result, result.cap, unit)
        elif result.granted > 0:
            code = SUCCESS
            threshold = result.granted * config.threshold_percent // 100
            info["grantedUnit"] = {GRANTED[unit]: result.granted}
            info["validityTime"] = config.validity_time
            triggers = [_trigger("VALIDITY_TIME"), _trigger("QUOTA_EXHAUSTED")]
            if threshold:
                info[THRESHOLD[unit]] = threshold
                triggers.append(_trigger("QUOTA_THRESHOLD"))
            if self.quota_holding_time:
                info["quotaHoldingTime"] = self.quota_holding_time
                triggers.append(_trigger("QHT"))
            info["triggers"] = triggers
            if result.left == 0:  # nothing left behind this grant: these are the final units
                info["finalUnitIndication"] = self.fui
        elif result.want > 0:
            code = QUOTA_LIMIT_REACHED
            if config.fui_action is not FinalUnitAction.TERMINATE:  # redirect, restrict
                info["validityTime"] = config.validity_time
                info["finalUnitIndication"] = self.fui
        else:
            code = SUCCESS  # a report with no request for more units
        info["resultCode"] = code
        if usage.upf_id is not None:
            info["uPFID"] = usage.upf_id
        return info, code

    def _at_cap(
        self, info: dict[str, Any], result: UnitResult, cap: LimitAction, unit: BucketUnit
    ) -> str:
        """At a per-SIM cap (docs/limits.md), as on Gy: the last grant, cut to what the cap
        leaves, carries the cap's finalUnitIndication (TERMINATE for block); with nothing
        left, QUOTA_LIMIT_REACHED, with the indication of a redirect or restrict action."""
        fui = _cap_unit(cap)
        if result.granted > 0:
            info["grantedUnit"] = {GRANTED[unit]: result.granted}
            info["validityTime"] = self.config.validity_time
            info["finalUnitIndication"] = fui or {"finalUnitAction": "TERMINATE"}
            info["triggers"] = [_trigger("VALIDITY_TIME"), _trigger("QUOTA_EXHAUSTED")]
            return SUCCESS
        if fui is not None:
            info["validityTime"] = self.config.validity_time
            info["finalUnitIndication"] = fui
        return QUOTA_LIMIT_REACHED

    @staticmethod
    def not_applicable(usage: UnitUsage) -> dict[str, Any]:
        """A rating group granted without credit control (``free_rating_groups``)."""
        info: dict[str, Any] = {
            "ratingGroup": usage.rating_group,
            "resultCode": QUOTA_MANAGEMENT_NOT_APPLICABLE,
        }
        if usage.upf_id is not None:
            info["uPFID"] = usage.upf_id
        return info


def response_body(data: ChargingData, units: list[dict[str, Any]]) -> bytes:
    """A ChargingDataResponse (TS 32.291 6.1.6.2.1.2)."""
    doc: dict[str, Any] = {
        "invocationTimeStamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "invocationSequenceNumber": data.sequence,
    }
    if units:
        doc["multipleUnitInformation"] = units
    return _dump(doc)


def _trigger(kind: str) -> dict[str, str]:
    return {"triggerType": kind, "triggerCategory": "IMMEDIATE_REPORT"}


def _cap_unit(cap: LimitAction) -> dict[str, Any] | None:
    """The finalUnitIndication of a cap's action (None: block, terminate)."""
    if cap.kind == "redirect" and cap.redirect_url is not None:
        return {
            "finalUnitAction": "REDIRECT",
            "redirectServer": {
                "redirectAddressType": "URL",
                "redirectServerAddress": cap.redirect_url,
            },
        }
    if cap.kind == "restrict":
        return {"finalUnitAction": "RESTRICT_ACCESS", "filterIdList": list(cap.filter_ids)}
    return None


def _final_unit(config: ChargingConfig) -> dict[str, Any]:
    """FinalUnitIndication (TS 32.291 6.1.6.2.1.8) of the configured Final-Unit-Action."""
    action = config.fui_action
    fui: dict[str, Any] = {"finalUnitAction": action.name}
    if action is FinalUnitAction.REDIRECT:
        fui["redirectServer"] = {
            "redirectAddressType": "URL",
            "redirectServerAddress": config.fui_redirect_url,
        }
    elif action is FinalUnitAction.RESTRICT_ACCESS:
        fui["restrictionFilterRuleList"] = list(config.fui_restriction_rules)
    return fui


def _dump(doc: dict[str, Any]) -> bytes:
    """Compact JSON in UTF-8 (orjson: ~20x json.dumps on these documents)."""
    return orjson.dumps(doc)
