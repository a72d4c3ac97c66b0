"""A scripted day of usage against policies/demo, with totals checked by hand.

Monday 2025-03-10, Berlin time (CET, UTC+01:00). Period counters start empty and are updated
with each rated usage's deltas, as the charging layer does. Every expected amount is worked
out in the comment next to it; prices are euro cents.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from ipaddress import ip_address
from typing import Any

import pytest

from ocs.rating import (
    Catalogue,
    NoTwinError,
    RatType,
    ServiceKind,
    Slice,
    UsageContext,
    rate,
    resolve,
)

from .helpers import CET

BOB = "262019999999999"
ACME_42 = "262010000000042"
FLEET = "262010000005000"
FARM = "262010000100000"


def t(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 3, 10, hour, minute, second, tzinfo=CET)


def use(imsi: str, when: datetime, quantity: int, **fields: Any) -> UsageContext:
    return UsageContext(tenant="demo", imsi=imsi, event_time=when, quantity=quantity, **fields)


HOME = {"apn": "internet.demo"}
SCRIPT: list[tuple[str, UsageContext, str, tuple[int, ...]]] = [
    # --- Bob, B2C, wallet, plan consumer-data -----------------------------------------
    # 07:30 offpeak, version 1. 30 MB all inside the 50 MB home allowance -> 0.
    ("bob-1", use(BOB, t(7, 30), 30_000_000, **HOME), "main", (0,)),
    # 09:00 peak, v1. 25,004,321 B -> per started 10 kB: 25,010,000 B. Allowance left
    # 20 MB -> free; billable 5,010,000 B x 2 ct/MB = 10.02 ct -> rounded up: 11.
    ("bob-2", use(BOB, t(9), 25_004_321, **HOME), "main", (11,)),
    # 11:59:59 peak, still v1: 1 MB x 2 ct = 2.
    ("bob-3", use(BOB, t(11, 59, 59), 1_000_000, **HOME), "main", (2,)),
    # 12:00:00 peak, v2 applies from this instant: 1 MB x 3 ct = 3.
    ("bob-4", use(BOB, t(12), 1_000_000, **HOME), "main", (3,)),
    # 13:00 two SMS x 9 ct = 18.
    ("bob-5", use(BOB, t(13), 2, service=ServiceKind.SMS), "main", (18,)),
    # 18:30 voice 61 s -> per started minute 120 s x 10 ct/min = 20.
    ("bob-6", use(BOB, t(18, 30), 61, service=ServiceKind.VOICE), "main", (20,)),
    # 21:00 in France (208-01, zone eu), v2: 2.5 MB x 3 ct = 7.5 -> up: 8.
    ("bob-7", use(BOB, t(21), 2_500_000, mcc="208", mnc="01", **HOME), "main", (8,)),
    # 22:00 in France, 1 byte -> 10 kB x 3 ct/MB = 0.03 -> 1 -> minimum charge 2.
    ("bob-8", use(BOB, t(22), 1, mcc="208", mnc="01", **HOME), "main", (2,)),
    # Bob: 0 + 11 + 2 + 3 + 18 + 20 + 8 + 2 = 64 ct.
    # --- acme-iot fleet SIM #42 (range entry), prepaid pools --------------------------
    # 08:00 950 sensor events (CCR-Event, no APN) -> twin "events", 950 x 0.5 ct = 475.
    (
        "acme-1",
        use(ACME_42, t(8), 950, service=ServiceKind.EVENT, service_id=7001),
        "events",
        (475,),
    ),
    # 10:00 1.5 MB on iot.demo at home -> twin "data", pooled data at 0 ct.
    ("acme-2", use(ACME_42, t(10), 1_500_000, apn="iot.demo"), "data", (0,)),
    # 10:05 100 events: counter at 950 -> 50 x 0.5 + 50 x 0.2 = 25 + 10 = 35.
    (
        "acme-3",
        use(ACME_42, t(10, 5), 100, service=ServiceKind.EVENT, service_id=7001),
        "events",
        (35,),
    ),
    # --- vehicle SIM with three twins --------------------------------------------------
    # 11:00 telemetry: iot.demo, RG 10, LTE-M, in Austria (232-01, eu): 2 MB x 0.5 ct = 1.
    (
        "fleet-1",
        use(
            FLEET,
            t(11),
            2_000_000,
            apn="iot.demo",
            rating_group=10,
            rat_type=RatType.LTE_M,
            mcc="232",
            mnc="01",
        ),
        "telemetry",
        (1,),
    ),
    # 14:00 infotainment in the Netherlands (204-08, region europe), to 198.51.100.7:
    # consumer-data v2 eu: 3 MB x 3 ct = 9.
    (
        "fleet-2",
        use(
            FLEET,
            t(14),
            3_000_000,
            apn="internet.demo",
            mcc="204",
            mnc="08",
            destination_ip=ip_address("198.51.100.7"),
        ),
        "infotainment",
        (9,),
    ),
    # 15:00 same APN to the OEM's 203.0.113.9: infotainment excludes it (not cidr), the
    # diagnostics twin takes it: 1 MB x 0.1 ct = 0.1 -> up: 1.
    (
        "fleet-3",
        use(FLEET, t(15), 1_000_000, apn="internet.demo", destination_ip=ip_address("203.0.113.9")),
        "diagnostics",
        (1,),
    ),
    # 15:30 on the OEM's 5G slice (SST 1, SD 0000A1), RG 99 is not telemetry's:
    # 0.5 MB x 0.1 ct = 0.05 -> up: 1.
    (
        "fleet-4",
        use(
            FLEET,
            t(15, 30),
            500_000,
            apn="iot.demo",
            rating_group=99,
            rat_type=RatType.NR,
            slice=Slice(1, 0xA1),
        ),
        "diagnostics",
        (1,),
    ),
    # --- farm-co SIM, B2B2B: retail line (farm-co <- reseller), wholesale line ----------
    # 10:00 day twin, agri-retail 5 MB x 4 ct = 20; wholesale-iot domestic 5 x 0.8 = 4.
    ("farm-1", use(FARM, t(10), 5_000_000), "day", (20, 4)),
    # 23:30 night twin (22:00-06:00 on 262-01), agri-night 2.5 MB x 1 ct = 2.5 -> half_up
    # 3; wholesale 2.5 x 0.8 = 2.0 -> 2.
    ("farm-2", use(FARM, t(23, 30), 2_500_000), "night-upload", (3, 2)),
]


def test_scripted_day(demo: Catalogue) -> None:
    counters: Counter[str] = Counter()
    money: Counter[str] = Counter()  # minor units per payer id (all levels)
    units: Counter[str] = Counter()  # rated units per pool
    for label, ctx, twin, amounts in SCRIPT:
        rated = rate(demo, ctx, counters)
        assert rated.resolution.twin == twin, label
        assert rated.amounts == amounts, label
        for line in rated.lines:
            money[line.quote.payer.id] += line.amount
            units[line.quote.payer.id] += line.priced.rated
            counters.update(dict(line.deltas))

    assert money == {
        "bob-wallet": 64,  # 0 + 11 + 2 + 3 + 18 + 20 + 8 + 2
        "acme-events": 510,  # 475 + 35
        "acme-pool": 1,  # 0 + 1
        "fleet-wallet": 9,
        "oem-contract": 2,  # 1 + 1
        "farm-pool": 23,  # 20 + 3
        "reseller-postpaid": 6,  # 4 + 2
    }
    assert units["acme-pool"] == 3_500_000  # 1.5 MB + 2 MB
    assert units["acme-events"] == 1_050
    # period counters after the day
    assert counters[f"{BOB}/main|allowance:home-data"] == 50_000_000
    assert counters[f"{BOB}/main|data"] == 9_520_000  # 5.01 + 1 + 1 + 2.5 + 0.01 MB
    assert counters["connect-reseller|data"] == 7_500_000  # wholesale, account scope

    # 23:00: Bob's wallet holds 1000 - 64 = 936 ct. At home, offpeak, v2 (1.5 ct/MB, the
    # allowance used up) that buys 936 / 1.5 = 624 MB, and 624 MB costs exactly 936 ct.
    quote = resolve(demo, use(BOB, t(23), 0, **HOME)).quotes[0]
    assert (quote.plan_id, quote.band, quote.zone) == ("consumer-data", "offpeak", "home")
    grant = quote.units_for(1000 - money["bob-wallet"], counters, max_units=10**12)
    assert grant == 624_000_000
    assert quote.price(grant, counters).amount == 936


def test_demo_prepaid_levels_and_no_twin(demo: Catalogue) -> None:
    farm = resolve(demo, use(FARM, t(10), 1))
    assert [q.payer.id for q in farm.quotes] == ["farm-pool", "reseller-postpaid"]
    assert farm.prepaid_levels == (0,)
    assert resolve(demo, use(BOB, t(10), 1)).prepaid_levels == (0,)
    diag = resolve(
        demo, use(FLEET, t(15), 1, apn="internet.demo", destination_ip=ip_address("203.0.113.1"))
    )
    assert diag.prepaid_levels == ()  # external contract: granted by policy, not reserved
    with pytest.raises(NoTwinError):
        rate(demo, use(ACME_42, t(10), 1, apn="internet.demo"))
