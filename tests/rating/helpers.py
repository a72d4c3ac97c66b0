"""Helpers for rating tests: a tiny valid catalogue document to mutate per test."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

DEMO = Path(__file__).resolve().parents[2] / "policies" / "demo"
CET = timezone(timedelta(hours=1))
START = "2020-01-01T00:00:00+00:00"


def flat_tariff(service: str = "data", zone: str = "*", price: str = "1", **extra: Any) -> dict:
    return {
        "service": service,
        "zone": zone,
        "rates": {"any": {"tiers": [{"from": 0, "price": price}]}},
        **extra,
    }


def base_document() -> dict[str, Any]:
    """A tiny valid catalogue: tenant t, one plan p1, one SIM 001 with a catch-all twin."""
    return {
        "tenant": {"id": "t", "home_network": "26201", "time_zone": "Europe/Berlin"},
        "countries": [
            {"code": "DE", "mcc": ["262"]},
            {"code": "FR", "mcc": ["208"]},
            {"code": "US", "mcc": ["310"]},
        ],
        "regions": [{"id": "eu", "countries": ["DE", "FR"]}],
        "zone_sets": [
            {
                "id": "zs",
                "default": "world",
                "zones": [
                    {"id": "home", "networks": ["26201"]},
                    {"id": "de", "countries": ["DE"]},
                    {"id": "fr", "countries": ["FR"], "networks": ["31099"]},
                    {"id": "world"},
                ],
            }
        ],
        "time_bands": [
            {
                "id": "std",
                "default": "offpeak",
                "bands": [
                    {
                        "id": "peak",
                        "windows": [
                            {
                                "days": ["mon", "tue", "wed", "thu", "fri"],
                                "start": "08:00",
                                "end": "20:00",
                            }
                        ],
                    },
                    {"id": "weekend", "windows": [{"days": ["sat", "sun"]}]},
                ],
            }
        ],
        "plans": [
            {
                "id": "p1",
                "currency": "EUR",
                "versions": [
                    {"effective_from": START, "zone_set": "zs", "tariffs": [flat_tariff()]},
                ],
            }
        ],
        "accounts": [{"id": "a"}],
        "wallets": [{"id": "w", "account": "a", "currency": "EUR", "balance": 1000}],
        "pools": [
            {"id": "pre", "account": "a", "payment": "prepaid", "size": 1000},
            {"id": "post", "account": "a", "payment": "postpaid", "size": 1000},
        ],
        "contracts": [{"id": "c", "account": "a"}],
        "sims": [
            {
                "imsi": "262010000000001",
                "msisdn": "491700000001",
                "account": "a",
                "twins": [
                    {
                        "id": "main",
                        "payer": {"kind": "wallet", "id": "w"},
                        "plans": [{"plan": "p1", "from": START}],
                    }
                ],
            }
        ],
    }


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)
