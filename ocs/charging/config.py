"""Charging tunables, read once from :class:`ocs.config.Settings` (with defaults for the
fields Settings does not have yet)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocs.balance.models import BucketUnit
from ocs.config import Settings
from ocs.diameter.constants import FinalUnitAction


def _get(settings: Settings, name: str, default: Any) -> Any:
    value = getattr(settings, name, None)
    return default if value is None else value


@dataclass(frozen=True, slots=True)
class ChargingConfig:
    validity_time: int = 600  # seconds, Validity-Time of every grant
    reclaim_grace: int = 60  # seconds after Validity-Time before a reservation is reclaimed
    session_ttl: int = 3600 * 6  # session state lives this long after the last CCR
    answer_ttl: int = 600  # a CCR's stored answer and balance result (retransmissions)
    request_timeout: float = 1.0  # whole-CCR budget for Redis work; then failure handling
    threshold_percent: int = 20  # Volume/Time-Quota-Threshold as a share of the grant
    reclaim_interval: float = 5.0
    lifecycle_interval: float = 60.0  # seconds between lifecycle passes (docs/lifecycle.md)
    failure_handling: str = "grant"
    failure_grant_bytes: int = 1_000_000
    failover_session_bytes: int = 10_000_000  # failover grants to one session, at most
    failover_payer_bytes: int = 100_000_000  # failover grants to one payer, at most
    # the same bounds for CC-Time (seconds) and CC-Service-Specific-Units (events)
    failure_grant_seconds: int = 60
    failover_session_seconds: int = 600
    failover_payer_seconds: int = 6_000
    failure_grant_events: int = 1
    failover_session_events: int = 10
    failover_payer_events: int = 100
    credit_control_failure_handling: str = "retry_and_terminate"  # in every CCA (8.14)
    fui_action: FinalUnitAction = FinalUnitAction.TERMINATE
    fui_redirect_url: str = "http://topup.invalid/"
    fui_restriction_rules: tuple[str, ...] = ("permit out ip from any to any 80,443",)
    free_rating_groups: frozenset[int] = frozenset()
    data_dir: Path = Path(".")
    default_quota: dict[BucketUnit, int] = field(
        default_factory=lambda: {
            BucketUnit.BYTES: 10_000_000,
            BucketUnit.SECONDS: 600,
            BucketUnit.MESSAGES: 1,
            BucketUnit.EVENTS: 1,
        }
    )
    max_quota: dict[BucketUnit, int] = field(
        default_factory=lambda: {
            BucketUnit.BYTES: 100_000_000,
            BucketUnit.SECONDS: 3600,
            BucketUnit.MESSAGES: 100,
            BucketUnit.EVENTS: 10_000,
        }
    )
    min_grant: dict[BucketUnit, int] = field(
        default_factory=lambda: {
            BucketUnit.BYTES: 100_000,
            BucketUnit.SECONDS: 30,
            BucketUnit.MESSAGES: 1,
            BucketUnit.EVENTS: 1,
        }
    )

    def failover_bounds(self, unit: BucketUnit) -> tuple[int, int, int]:
        """Failure handling's (grant, per session, per payer) in ``unit``: bytes, seconds
        (CC-Time) or events (CC-Service-Specific-Units)."""
        if unit is BucketUnit.SECONDS:
            return (
                self.failure_grant_seconds,
                self.failover_session_seconds,
                self.failover_payer_seconds,
            )
        if unit is BucketUnit.BYTES:
            return self.failure_grant_bytes, self.failover_session_bytes, self.failover_payer_bytes
        return self.failure_grant_events, self.failover_session_events, self.failover_payer_events

    @classmethod
    def from_settings(cls, settings: Settings) -> ChargingConfig:
        action = str(_get(settings, "fui_action", "terminate")).upper()
        return cls(
            validity_time=int(_get(settings, "validity_time", 600)),
            reclaim_grace=int(_get(settings, "reclaim_grace", 60)),
            answer_ttl=int(_get(settings, "answer_ttl", 600)),
            reclaim_interval=float(_get(settings, "reclaim_interval", 5.0)),
            lifecycle_interval=float(_get(settings, "lifecycle_interval", 60.0)),
            request_timeout=float(_get(settings, "charging_timeout", 1.0)),
            failure_handling=str(settings.failure_handling),
            failure_grant_bytes=int(settings.failure_grant_bytes),
            failover_session_bytes=int(settings.failover_session_bytes),
            failover_payer_bytes=int(settings.failover_payer_bytes),
            failure_grant_seconds=int(settings.failure_grant_seconds),
            failover_session_seconds=int(settings.failover_session_seconds),
            failover_payer_seconds=int(settings.failover_payer_seconds),
            failure_grant_events=int(settings.failure_grant_events),
            failover_session_events=int(settings.failover_session_events),
            failover_payer_events=int(settings.failover_payer_events),
            credit_control_failure_handling=str(settings.credit_control_failure_handling),
            fui_action=FinalUnitAction[action],
            fui_redirect_url=str(_get(settings, "fui_redirect_url", "http://topup.invalid/")),
            free_rating_groups=frozenset(_get(settings, "free_rating_groups", ())),
            data_dir=Path(settings.data_dir),
        )
