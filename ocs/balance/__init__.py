"""Redis balance store: wallets, pools, reservations; Lua scripts in ``lua/``."""

from __future__ import annotations

from ocs.balance.models import (
    FREE,
    NOT_PRICED,
    BucketSpec,
    BucketState,
    BucketUnit,
    ChargeRequest,
    ChargeResult,
    LevelCharge,
    LevelResult,
    Rate,
)
from ocs.balance.store import BalanceStore, StreamRecord

__all__ = [
    "FREE",
    "NOT_PRICED",
    "BalanceStore",
    "BucketSpec",
    "BucketState",
    "BucketUnit",
    "ChargeRequest",
    "ChargeResult",
    "LevelCharge",
    "LevelResult",
    "Rate",
    "StreamRecord",
]
