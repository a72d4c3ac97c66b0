"""Rating: product catalogue, zones, tariffs, tiers, SIM-twin filters, multi-level pricing.

Pure functions over an immutable compiled `Catalogue` (only `loader` reads files). Imports
nothing else from `ocs`. Typical use::

    holder = CatalogueHolder.from_path("policies/demo")
    rated = rate(holder.current, UsageContext(tenant="demo", imsi=..., event_time=..., ...))
"""

from __future__ import annotations

from ocs.rating.catalogue import Catalogue
from ocs.rating.context import SERVICE_UNIT, RatType, ServiceKind, Slice, Unit, UsageContext
from ocs.rating.engine import (
    NoTwin,
    RatedLine,
    RatedUsage,
    Resolution,
    find_sim,
    rate,
    resolve,
    resolve_twin,
    subscription_id,
)
from ocs.rating.errors import (
    CatalogueError,
    Issue,
    NoPlanError,
    NoTariffError,
    NoTwinError,
    NoZoneError,
    RatingError,
    Severity,
    SubscriptionInactive,
    TenantMismatch,
    UnknownSubscriber,
)
from ocs.rating.fees import FeeLine, recurring_fees, subscription_fees
from ocs.rating.loader import (
    CatalogueHolder,
    CheckReport,
    check_catalog,
    load_catalogue,
    main_check,
)
from ocs.rating.models import PayerKind, Rounding
from ocs.rating.quote import NO_COUNTERS, Counters, Quote
from ocs.rating.tariffs import Priced
from ocs.rating.uli import (
    Plmn,
    UliDecodeError,
    UserLocation,
    decode_sgsn_mcc_mnc,
    decode_user_location_info,
)

__all__ = [
    "NO_COUNTERS",
    "SERVICE_UNIT",
    "Catalogue",
    "CatalogueError",
    "CatalogueHolder",
    "CheckReport",
    "Counters",
    "FeeLine",
    "Issue",
    "NoPlanError",
    "NoTariffError",
    "NoTwin",
    "NoTwinError",
    "NoZoneError",
    "PayerKind",
    "Plmn",
    "Priced",
    "Quote",
    "RatType",
    "RatedLine",
    "RatedUsage",
    "RatingError",
    "Resolution",
    "Rounding",
    "ServiceKind",
    "Severity",
    "Slice",
    "SubscriptionInactive",
    "TenantMismatch",
    "UliDecodeError",
    "Unit",
    "UnknownSubscriber",
    "UsageContext",
    "UserLocation",
    "check_catalog",
    "decode_sgsn_mcc_mnc",
    "decode_user_location_info",
    "find_sim",
    "load_catalogue",
    "main_check",
    "rate",
    "recurring_fees",
    "resolve",
    "resolve_twin",
    "subscription_fees",
    "subscription_id",
]
