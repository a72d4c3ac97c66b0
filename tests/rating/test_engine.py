"""Rating rules on small catalogues: zones, bands, plan changes, tariffs, twins, levels."""

from __future__ import annotations

from datetime import datetime, timedelta
from ipaddress import ip_address
from typing import Any

import pytest

from ocs.rating import (
    NoPlanError,
    NoTariffError,
    NoTwinError,
    NoZoneError,
    PayerKind,
    RatType,
    ServiceKind,
    Slice,
    SubscriptionInactive,
    TenantMismatch,
    UnknownSubscriber,
    UsageContext,
    rate,
    resolve,
)

from .conftest import Builder
from .helpers import CET, START, flat_tariff

IMSI = "262010000000001"
MONDAY_0900 = datetime(2025, 3, 10, 9, 0, tzinfo=CET)


def ctx(**fields: Any) -> UsageContext:
    base: dict[str, Any] = {"tenant": "t", "imsi": IMSI, "event_time": MONDAY_0900, "quantity": 1}
    return UsageContext(**{**base, **fields})


def zone_prices(doc: dict[str, Any]) -> None:
    version = doc["plans"][0]["versions"][0]
    version["tariffs"] = [
        flat_tariff(zone="home", price="1"),
        flat_tariff(zone="de", price="2"),
        flat_tariff(zone="fr", price="3"),
        flat_tariff(zone="world", price="4"),
    ]


@pytest.mark.parametrize(
    ("mcc", "mnc", "zone", "amount"),
    [
        (None, None, "home", 1),  # no visited network: at home
        ("262", "01", "home", 1),  # by MCC-MNC
        ("262", "02", "de", 2),  # by country
        ("208", "10", "fr", 3),
        ("310", "99", "fr", 3),  # a listed network beats its country's zone
        ("310", "410", "world", 4),  # the zone set's default
        ("999", "99", "world", 4),  # unknown country: default
    ],
)
def test_zones(build: Builder, mcc: str | None, mnc: str | None, zone: str, amount: int) -> None:
    catalogue = build(zone_prices)
    rated = rate(catalogue, ctx(mcc=mcc, mnc=mnc))
    assert rated.lines[0].quote.zone == zone and rated.amounts == (amount,)


def test_no_zone_without_default(build: Builder) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        zone_prices(doc)
        doc["zone_sets"][0]["default"] = None
        doc["zone_sets"][0]["zones"].pop()
        doc["plans"][0]["versions"][0]["tariffs"].pop()

    with pytest.raises(NoZoneError):
        rate(build(mutate), ctx(mcc="310", mnc="410"))


def banded(doc: dict[str, Any]) -> None:
    version = doc["plans"][0]["versions"][0]
    version["time_bands"] = "std"
    version["tariffs"] = [
        {
            "service": "data",
            "zone": "*",
            "rates": {
                "peak": {"tiers": [{"from": 0, "price": "3"}]},
                "weekend": {"tiers": [{"from": 0, "price": "1"}]},
                "any": {"tiers": [{"from": 0, "price": "2"}]},
            },
        }
    ]


@pytest.mark.parametrize(
    ("when", "band", "amount"),
    [
        (datetime(2025, 3, 10, 9, 0, tzinfo=CET), "peak", 3),  # Monday 09:00
        (datetime(2025, 3, 10, 7, 59, tzinfo=CET), "offpeak", 2),
        (datetime(2025, 3, 10, 20, 0, tzinfo=CET), "offpeak", 2),  # end is exclusive
        (datetime(2025, 3, 15, 12, 0, tzinfo=CET), "weekend", 1),  # Saturday
        # 07:30 UTC on a winter Monday is 08:30 in Berlin: peak in the subscriber's zone
        (datetime.fromisoformat("2025-03-10T07:30:00+00:00"), "peak", 3),
        # 06:30 UTC in summer is 08:30 CEST
        (datetime.fromisoformat("2025-07-07T06:30:00+00:00"), "peak", 3),
    ],
)
def test_time_bands_in_subscriber_time(
    build: Builder, when: datetime, band: str, amount: int
) -> None:
    rated = rate(build(banded), ctx(event_time=when))
    assert rated.lines[0].quote.band == band and rated.amounts == (amount,)


def test_plan_assignment_changes_mid_period(build: Builder) -> None:
    change = "2025-03-15T00:00:00+01:00"

    def mutate(doc: dict[str, Any]) -> None:
        doc["plans"].append(
            {
                "id": "p2",
                "currency": "EUR",
                "versions": [
                    {"effective_from": START, "zone_set": "zs", "tariffs": [flat_tariff(price="7")]}
                ],
            }
        )
        doc["sims"][0]["twins"][0]["plans"].append({"plan": "p2", "from": change})

    catalogue = build(mutate)
    moment = datetime.fromisoformat(change)
    before = rate(catalogue, ctx(event_time=moment - timedelta(microseconds=1)))
    after = rate(catalogue, ctx(event_time=moment))
    assert (before.lines[0].quote.plan_id, before.amounts) == ("p1", (1,))
    assert (after.lines[0].quote.plan_id, after.amounts) == ("p2", (7,))
    with pytest.raises(NoPlanError):
        rate(catalogue, ctx(event_time=datetime(2019, 1, 1, tzinfo=CET)))


def test_rating_group_tariff_beats_zone_tariff_and_missing_service_is_not_sold(
    build: Builder,
) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        doc["plans"][0]["versions"][0]["tariffs"] = [
            flat_tariff(zone="home", price="5"),
            flat_tariff(zone="*", price="0", rating_group=20),
        ]

    catalogue = build(mutate)
    assert rate(catalogue, ctx()).amounts == (5,)
    assert rate(catalogue, ctx(rating_group=20)).amounts == (0,)
    with pytest.raises(NoTariffError):
        rate(catalogue, ctx(service=ServiceKind.SMS))


def test_event_pricing_tiered_per_count(build: Builder) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        doc["plans"][0]["versions"][0]["tariffs"] = [
            {
                "service": "event",
                "zone": "*",
                "rates": {
                    "any": {"tiers": [{"from": 0, "price": "0.5"}, {"from": 1000, "price": "0.2"}]}
                },
            }
        ]

    catalogue = build(mutate)
    event = ctx(service=ServiceKind.EVENT, quantity=100, service_id=7001)
    key = resolve(catalogue, event).quotes[0].tier_counter
    # 50 events at 0.5 ct + 50 at 0.2 ct = 25 + 10 = 35 ct
    assert rate(catalogue, event, {key: 950}).amounts == (35,)
    assert rate(catalogue, event).amounts == (50,)
    assert rate(catalogue, event).lines[0].deltas == ((key, 100),)


def twins(doc: dict[str, Any]) -> None:
    template = doc["sims"][0]["twins"][0]
    plans = template["plans"]
    doc["sims"][0]["twins"] = [
        {
            "id": "pool",
            "priority": 1,
            "filter": {"apn": ["iot.demo"]},
            "payer": {"kind": "prepaid_pool", "id": "pre"},
            "plans": plans,
        },
        {
            "id": "wallet",
            "priority": 2,
            "filter": {"apn": ["internet"], "not": {"cidr": ["10.0.0.0/8"]}},
            "payer": {"kind": "wallet", "id": "w"},
            "plans": plans,
        },
        {
            "id": "contract",
            "priority": 3,
            "filter": {"any": [{"cidr": ["10.0.0.0/8"]}, {"domain": ["oem.example"]}]},
            "payer": {"kind": "external_contract", "id": "c"},
            "plans": plans,
        },
        {
            "id": "late",
            "priority": 9,
            "filter": {"rat": ["NR"], "slice": [{"sst": 1, "sd": "0000A1"}]},
            "payer": {"kind": "postpaid_pool", "id": "post"},
            "plans": plans,
        },
    ]


@pytest.mark.parametrize(
    ("fields", "twin", "payer"),
    [
        ({"apn": "IOT.demo"}, "pool", PayerKind.PREPAID_POOL),  # APN is case-insensitive
        ({"apn": "internet", "destination_ip": ip_address("8.8.8.8")}, "wallet", PayerKind.WALLET),
        (
            {"apn": "internet", "destination_ip": ip_address("10.1.2.3")},
            "contract",
            PayerKind.EXTERNAL_CONTRACT,
        ),
        ({"apn": "other", "domain": "api.OEM.example."}, "contract", PayerKind.EXTERNAL_CONTRACT),
        ({"rat_type": RatType.NR, "slice": Slice(1, 0xA1)}, "late", PayerKind.POSTPAID_POOL),
    ],
)
def test_twin_resolution(
    build: Builder, fields: dict[str, Any], twin: str, payer: PayerKind
) -> None:
    resolution = resolve(build(twins), ctx(**fields))
    assert resolution.twin == twin and resolution.payer.kind is payer
    assert resolution.subscription == f"{IMSI}/{twin}"


def test_no_twin_is_a_clear_outcome(build: Builder) -> None:
    with pytest.raises(NoTwinError) as info:
        rate(build(twins), ctx(apn="other", rat_type=RatType.NR, slice=Slice(1, 0xB2)))
    assert info.value.reason == "no_twin"


@pytest.mark.parametrize(
    ("flt", "fields", "matches"),
    [
        ({"region": ["eu"]}, {"mcc": "208", "mnc": "01"}, True),
        ({"region": ["eu"]}, {"mcc": "310", "mnc": "410"}, False),
        ({"country": ["DE"]}, {}, True),  # at home
        ({"network": ["26202"]}, {"mcc": "262", "mnc": "02"}, True),
        (
            {"time": [{"start": "22:00", "end": "06:00"}]},
            {"event_time": datetime(2025, 3, 10, 23, 0, tzinfo=CET)},
            True,
        ),
        ({"time": [{"start": "22:00", "end": "06:00"}]}, {}, False),
        ({"time": [{"days": ["sat"]}]}, {}, False),
        ({"rating_group": [10]}, {"rating_group": 10}, True),
        ({"service_id": [4711]}, {"service_id": 4712}, False),
        ({"qos_class": [9]}, {"qos_class": 9}, True),
        ({"service": ["sms"]}, {"service": ServiceKind.SMS}, True),
        ({"slice": [{"sst": 2}]}, {"slice": Slice(2, 0x123)}, True),
        ({"cidr": ["2001:db8::/32"]}, {"destination_ip": ip_address("2001:db8::1")}, True),
        ({"cidr": ["2001:db8::/32"]}, {"destination_ip": ip_address("10.0.0.1")}, False),
        ({"any": [{"apn": ["x"]}, {"rat": ["LTE_M"]}]}, {"rat_type": RatType.LTE_M}, True),
        ({"not": {"rat": ["NB_IOT"]}}, {"rat_type": RatType.NB_IOT}, False),
    ],
)
def test_filter_predicates(
    build: Builder, flt: dict[str, Any], fields: dict[str, Any], matches: bool
) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        doc["sims"][0]["twins"][0]["filter"] = flt
        doc["plans"][0]["versions"][0]["tariffs"].append(flat_tariff(service="sms"))

    catalogue = build(mutate)
    if matches:
        assert resolve(catalogue, ctx(**fields)).twin == "main"
    else:
        with pytest.raises(NoTwinError):
            resolve(catalogue, ctx(**fields))


def levels(doc: dict[str, Any]) -> None:
    plan = doc["plans"][0]
    doc["plans"] += [
        {
            **plan,
            "id": "w1",
            "versions": [{**plan["versions"][0], "tariffs": [flat_tariff(price="0.5")]}],
        },
        {
            **plan,
            "id": "w2",
            "versions": [
                {
                    **plan["versions"][0],
                    "tariffs": [flat_tariff(price="0.8", counter_scope="account")],
                }
            ],
        },
    ]
    doc["accounts"] = [
        {
            "id": "op-customer",
            "plans": [{"plan": "w1", "from": START}],
            "payer": {"kind": "postpaid_pool", "id": "post"},
        },
        {
            "id": "sub",
            "parent": "op-customer",
            "plans": [{"plan": "w2", "from": START}],
            "payer": {"kind": "wallet", "id": "w"},
        },
        {"id": "a", "parent": "sub"},
    ]


def test_multi_level_one_line_per_level(build: Builder) -> None:
    catalogue = build(levels)
    rated = rate(catalogue, ctx(quantity=10))
    lines = [
        (ln.quote.level, ln.quote.seller, ln.quote.buyer, ln.quote.plan_id, ln.amount)
        for ln in rated.lines
    ]
    assert lines == [
        (0, "sub", "a", "p1", 10),
        (1, "op-customer", "sub", "w2", 8),
        (2, None, "op-customer", "w1", 5),
    ]
    assert rated.resolution.prepaid_levels == (0, 1)
    keys = rated.resolution.counter_keys()
    assert keys == (f"{IMSI}/main|data", "sub|data", "op-customer|data")


def test_lookup_errors(build: Builder) -> None:
    catalogue = build()
    with pytest.raises(TenantMismatch):
        rate(catalogue, ctx(tenant="other"))
    with pytest.raises(UnknownSubscriber):
        rate(catalogue, ctx(imsi="999"))
    assert resolve(catalogue, ctx(imsi="unknown", msisdn="491700000001")).imsi == IMSI

    def suspend(doc: dict[str, Any]) -> None:
        doc["sims"][0]["twins"][0]["status"] = "suspended"

    with pytest.raises(SubscriptionInactive):
        rate(build(suspend), ctx())


def test_usage_context_validates() -> None:
    with pytest.raises(ValueError, match="timezone aware"):
        UsageContext(tenant="t", imsi=IMSI, event_time=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="does not fit"):
        from ocs.rating import Unit

        ctx(unit=Unit.SECONDS)
    assert ctx(mcc="262", mnc="01").plmn == "26201" and ctx().plmn is None


def test_band_table_matches_band_definition(build: Builder) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        doc["time_bands"][0]["bands"].insert(
            0,
            {
                "id": "night",
                "windows": [{"days": ["fri", "sat"], "start": "22:30", "end": "05:15"}],
            },
        )

    bands = build(mutate).band_sets["std"]
    for weekday in range(7):
        for minute in range(1440):
            assert bands.band_at(weekday, minute) == bands.band_by_scan(weekday, minute)
    assert bands.band_at(4, 23 * 60) == "night" and bands.band_at(5, 12 * 60) == "weekend"
