"""Recurring fees priced by subscription properties (sensors x measurement frequency band)."""

from __future__ import annotations

from datetime import datetime

import pytest

from ocs.rating import Catalogue, NoPlanError, UnknownSubscriber, subscription_fees
from ocs.rating.fees import property_fee
from ocs.rating.models import PropertyBand, PropertyFee

from .helpers import CET

FEE = PropertyFee(
    id="sensor-fee",
    count_property="sensors",
    band_property="measurements_per_hour",
    bands=[
        PropertyBand(from_=0, amount=10),
        PropertyBand(from_=6, amount=25),
        PropertyBand(from_=60, amount=50),
    ],
)


@pytest.mark.parametrize(
    ("sensors", "frequency", "amount"),
    [(4, 1, 40), (4, 5, 40), (4, 6, 100), (4, 12, 100), (3, 60, 150), (0, 60, 0)],
)
def test_property_fee(sensors: int, frequency: int, amount: int) -> None:
    line = property_fee(FEE, {"sensors": sensors, "measurements_per_hour": frequency})
    assert line.amount == amount and line.quantity == sensors


def test_demo_subscription_fees(demo: Catalogue) -> None:
    at = datetime(2025, 3, 10, tzinfo=CET)
    plan, currency, lines = subscription_fees(demo, "262010000000042", "events", at)
    assert (plan, currency) == ("iot-pool", "EUR")
    # 1.00 EUR SIM fee; 4 sensors x 12 measurements/hour -> band from 6 at 25 ct -> 100 ct
    assert {line.fee_id: line.amount for line in lines} == {"sim-fee": 100, "sensor-fee": 100}
    with pytest.raises(UnknownSubscriber):
        subscription_fees(demo, "262010000000042", "nope", at)
    with pytest.raises(NoPlanError):
        subscription_fees(demo, "262010000000042", "events", datetime(2020, 1, 1, tzinfo=CET))
