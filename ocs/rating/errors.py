"""Two error families: catalogue issues (found while loading files) and rating outcomes
(raised per usage; the charging layer maps each to a Result-Code in one place)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in a catalogue: the file, the path inside it (`plans[2].versions[0]`) and
    the reason. Errors refuse the catalogue; warnings do not."""

    file: str
    path: str
    reason: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{self.severity}: {where}: {self.reason}"


class CatalogueError(Exception):
    """A catalogue folder could not be loaded; `issues` lists every error found."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__(f"{len(issues)} catalogue error(s); first: {issues[0] if issues else ''}")


class RatingError(Exception):
    """A usage could not be rated. `reason` is a stable machine-readable code."""

    reason = "rating_failed"


class TenantMismatch(RatingError):
    reason = "tenant_mismatch"


class UnknownSubscriber(RatingError):
    reason = "unknown_subscriber"


class NoTwinError(RatingError):
    """No twin of the SIM accepts this usage (no filter matched)."""

    reason = "no_twin"


class SubscriptionInactive(RatingError):
    reason = "subscription_inactive"


class NoPlanError(RatingError):
    """No plan (or plan version) is in force at the event time."""

    reason = "no_plan"


class NoZoneError(RatingError):
    reason = "no_zone"


class NoTariffError(RatingError):
    """The plan has no tariff for this service in this zone: the service is not sold there."""

    reason = "no_tariff"
