"""Gy/Ro application: CCR-I/U/T/E -> MSCC answers, sessions, failure handling."""

from __future__ import annotations

from ocs.charging.application import ChargingApplication
from ocs.charging.runtime import ChargingRuntime, NoCatalogue, create_charging
from ocs.provisioning.folder import apply_catalog
from ocs.provisioning.payers import show_balance

__all__ = [
    "ChargingApplication",
    "ChargingRuntime",
    "NoCatalogue",
    "apply_catalog",
    "create_charging",
    "show_balance",
]
