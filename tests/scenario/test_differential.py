"""One price online and offline, checked differentially (issue 12): for random catalogues
(zones, a day/night band, graduated tiers, increments, minimum quantities and charges,
rounding modes, allowances, a wholesale level above the SIM's account) and random usage
(sizes, times, zones; data by volume, voice by time, events by service-specific units), the
same usage priced four ways must agree to the minor unit:

1. the **online debit**: a session through ``ChargingApplication`` and ``charge.lua`` on a
   real Redis, every other usage over Gy (CCR-I/CCR-T with CC-Total-Octets, CC-Time or
   CC-Service-Specific-Units) or over Nchf (create/release through ``NchfService``, with
   ``totalVolume``, ``time`` or ``serviceSpecificUnits``); the money the script took from
   the wallet for each usage;
2. the **record**: the amount the usage record carries for each level;
3. the **definition**: ``ocs.rating.rate_uncached`` over the usages in order, with the
   period counters advanced by each usage's deltas;
4. **offline**: the records drained into a real PostgreSQL, re-rated per level in event
   order by ``ocs.offline.rerate`` (what the bill run does), and the bill run's usage lines
   of the wholesale buyer (``ocs.offline.usage.usage_lines``, SQL or record path).

The reseller pays its wholesale level from a postpaid pool, a prepaid pool or a wallet
(drawn): a prepaid level is reserved and committed online in the same call as the SIM's
wallet (docs/charging.md, "Multi-level reservations"), and what it paid online (units, or
the record's level-1 amount for a wallet) must be what its records say, in Redis and in
PostgreSQL after the drain, with nothing left reserved.

``./check`` runs ``OCS_DIFFERENTIAL_EXAMPLES`` examples (default 20); set it higher for the
long mode (docs/rating.md records a run).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from ocs.audit.checks import audit_records
from ocs.balance import BalanceStore
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.charging.nchf.service import COLLECTION, NchfService
from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.http2 import Request
from ocs.observability.metrics import ChargingMetrics
from ocs.offline.db import Database, enter_tenant
from ocs.offline.drain import Drainer
from ocs.offline.late import period_holding
from ocs.offline.rerate import rerate_levels
from ocs.offline.usage import FlatRates, usage_lines
from ocs.provisioning.payers import provision_catalogue
from ocs.rating import ServiceKind, UsageContext
from ocs.rating.engine import rate_uncached
from ocs.rating.loader import CatalogueHolder, load_catalogue
from ocs.rating.models import Rounding
from ocs.rating.tariffs import div_round, exact_amount
from tests.charging.ccr import build_ccr
from tests.charging.helpers import wire
from tests.offline.conftest import MASTER, synced

EXAMPLES = int(os.environ.get("OCS_DIFFERENTIAL_EXAMPLES", "20"))
TZ = "Europe/Berlin"
START = datetime(2026, 11, 2, tzinfo=UTC)  # usage in 2026-11-02 .. 2026-11-28: one period
IMSI = "262017700000001"
ZONES = {"home": "26201", "eu": "20801", "world": "31026"}
PRICES = ["0", "0.001", "0.25", "0.5", "1", "1.25", "3", "7"]
ROUNDING = ["up", "down", "half_up", "half_even"]
MB = 1_000_000
UNIT = {"data": "bytes", "voice": "seconds", "event": "events"}


# per service: tier starts, `per`, increments and minimum quantities drawn from
TERMS = {
    "data": ([MB, 5 * MB, 20 * MB], [1000, MB], [1, 1000, 10_000, 100_000], [0, 0, 50_000, MB]),
    "voice": ([60, 600, 3600], [1, 60], [1, 10, 60], [0, 0, 60]),
    "event": ([10, 100, 1000], [1, 10, 100], [1, 1, 5], [0, 0, 2]),
}
KINDS = {  # the unit a usage of each service is reported in: Nchf's, Gy's
    "data": ("totalVolume", {}),
    "voice": ("time", {"time": True}),
    "event": ("serviceSpecificUnits", {"units": True}),
}


def tiers_of(draw: st.DrawFn, service: str = "data") -> list[dict[str, Any]]:
    count = draw(st.integers(1, 3))
    steps = TERMS[service][0]
    starts = [0, *sorted(draw(st.sets(st.sampled_from(steps), min_size=2)))]
    return [{"from": starts[i], "price": draw(st.sampled_from(PRICES))} for i in range(count)]


@st.composite
def tariff(
    draw: st.DrawFn, zone: str, banded: bool, counter: str, service: str = "data"
) -> dict[str, Any]:
    rates = (
        {"day": {"tiers": tiers_of(draw, service)}, "night": {"tiers": tiers_of(draw, service)}}
        if banded
        else {"any": {"tiers": tiers_of(draw, service)}}
    )
    _, per, increment, minimum = TERMS[service]
    return {
        "service": service,
        "zone": zone,
        "per": draw(st.sampled_from(per)),
        "increment": draw(st.sampled_from(increment)),
        "minimum_quantity": draw(st.sampled_from(minimum)),
        "minimum_charge": draw(st.sampled_from([0, 0, 1, 5])),
        "counter": counter if service == "data" else f"{counter}-{service}",
        "rates": rates,
    }


@st.composite
def plan(draw: st.DrawFn, pid: str, counter: str) -> dict[str, Any]:
    banded = draw(st.booleans())
    zones = draw(st.sampled_from([["home", "eu", "*"], ["*"], ["home", "*"]]))
    version: dict[str, Any] = {
        "effective_from": "2026-01-01T00:00:00+01:00",
        "zone_set": "zs",
        "rounding": draw(st.sampled_from(ROUNDING)),
        "tariffs": [
            *(draw(tariff(z, banded, counter)) for z in zones),
            # voice (by the second) and events (by the unit), in every zone
            draw(tariff("*", banded, counter, "voice")),
            draw(tariff("*", banded, counter, "event")),
        ],
    }
    if banded:
        version["time_bands"] = "daynight"
    if draw(st.booleans()):
        version["allowances"] = [
            {
                "id": f"{pid}-free",
                "service": "data",
                "zones": draw(st.sampled_from([["home"], ["home", "eu"]])),
                "units": draw(st.sampled_from([1, 500_000, 3 * MB, 20 * MB])),
            }
        ]
    if draw(st.booleans()):
        version.setdefault("allowances", []).append(
            {
                "id": f"{pid}-minutes",
                "service": "voice",
                "zones": ["home"],
                "units": draw(st.sampled_from([1, 60, 300])),
            }
        )
    return {"id": pid, "name": pid, "currency": "EUR", "versions": [version]}


@dataclass(frozen=True)
class Usage:
    zone: str
    octets: int  # the quantity: bytes, seconds (voice) or events
    at: datetime
    service: str = "data"


SIZES = {
    "data": st.one_of(
        st.integers(0, 30 * MB),
        st.sampled_from([1, 999, 1000, 1001, 9_999, 10_000, 331_667, MB - 1, MB]),
    ),
    "voice": st.one_of(st.integers(0, 7200), st.sampled_from([1, 59, 60, 61, 3600])),
    "event": st.one_of(st.integers(0, 2000), st.sampled_from([1, 2, 9, 10, 11])),
}


@st.composite
def usages(draw: st.DrawFn) -> list[Usage]:
    count = draw(st.integers(1, 7))
    out = []
    for i in range(count):
        service = draw(st.sampled_from(["data", "data", "voice", "event"]))
        size = draw(SIZES[service])
        minute = draw(st.integers(0, 26 * 24 * 60 - 1))
        out.append((minute, i, draw(st.sampled_from(sorted(ZONES))), size, service))
    out.sort()
    return [
        Usage(z, n, START + timedelta(minutes=m, milliseconds=i), service)
        for m, i, z, n, service in out
    ]


RESELLER_PAYERS = ["postpaid_pool", "prepaid_pool", "wallet"]
BIG = 10**12


def catalogue_text(
    tenant: str, retail: dict[str, Any], wholesale: dict[str, Any], reseller: str = "postpaid_pool"
) -> str:
    res_payer = {"kind": reseller, "id": "res-wallet" if reseller == "wallet" else "res-usage"}
    doc = {
        "tenant": {"id": tenant, "home_network": "26201", "time_zone": TZ, "currency": "EUR"},
        "countries": [{"code": "DE", "mcc": ["262"]}, {"code": "FR", "mcc": ["208"]}],
        "zone_sets": [
            {
                "id": "zs",
                "default": "world",
                "zones": [
                    {"id": "home", "name": "Home", "networks": ["26201"]},
                    {"id": "eu", "name": "EU", "countries": ["FR"]},
                    {"id": "world", "name": "World"},
                ],
            }
        ],
        "time_bands": [
            {
                "id": "daynight",
                "default": "night",
                "bands": [
                    {
                        "id": "day",
                        "windows": [
                            {
                                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                "start": "07:00",
                                "end": "22:00",
                            }
                        ],
                    }
                ],
            }
        ],
        "plans": [retail, wholesale],
        "accounts": [
            {
                "id": "res",
                "name": "Reseller",
                "kind": "reseller",
                "currency": "EUR",
                "bill_day": 1,
                "time_zone": TZ,
                "plans": [{"plan": "wholesale", "from": "2026-01-01T00:00:00+01:00"}],
                "payer": res_payer,
            },
            {
                "id": "end",
                "name": "End customer",
                "parent": "res",
                "currency": "EUR",
                "payment": "prepaid",
                "bill_day": 1,
                "time_zone": TZ,
            },
        ],
        "pools": [
            {
                "id": "res-usage",
                "account": "res",
                "kind": "static",
                "payment": "prepaid" if reseller == "prepaid_pool" else "postpaid",
                "service": "data",
                "unit": "bytes",
                "size": BIG if reseller == "prepaid_pool" else 0,
            },
        ],
        "wallets": [
            {"id": "w", "account": "end", "currency": "EUR", "balance": BIG},
            {"id": "res-wallet", "account": "res", "currency": "EUR", "balance": BIG},
        ],
        "sims": [
            {
                "imsi": IMSI,
                "msisdn": "4917770000001",
                "account": "end",
                "twins": [
                    {
                        "id": "main",
                        "payer": {"kind": "wallet", "id": "w"},
                        "plans": [{"plan": "retail", "from": "2026-01-01T00:00:00+01:00"}],
                    }
                ],
            },
        ],
    }
    return json.dumps(doc)


async def nchf_session(nchf: NchfService, u: Usage, kind: str, want: int) -> None:
    """One usage over Nchf: a create asking for ``want`` in ``kind``, a release reporting
    the usage (``NchfService`` called as the HTTP/2 server calls it)."""
    mcc, mnc = ZONES[u.zone][:3], ZONES[u.zone][3:]
    base = {
        "subscriberIdentifier": f"imsi-{IMSI}",
        "nfConsumerIdentification": {"nodeFunctionality": "SMF", "nFName": "smf-diff"},
        "invocationTimeStamp": u.at.isoformat(),
        "pDUSessionChargingInformation": {
            "chargingId": 1,
            "pduSessionInformation": {
                "pduSessionID": 1,
                "dnnId": "iot.demo",
                "servingCNPlmnId": {"mcc": mcc, "mnc": mnc},
            },
        },
    }
    create = base | {
        "invocationSequenceNumber": 0,
        "multipleUnitUsage": [{"ratingGroup": 10, "requestedUnit": {kind: want}}],
    }
    answer = await nchf.handle(nchf_request(COLLECTION, create))
    assert answer.status == 201, answer.body
    granted = json.loads(answer.body)["multipleUnitInformation"][0]["grantedUnit"]
    assert list(granted) == [kind]  # granted in the unit asked
    location = dict(answer.headers)["location"]
    path = location[location.index(COLLECTION) :]
    container: dict[str, Any] = {"localSequenceNumber": 1}
    if u.octets:
        container[kind] = u.octets
    release = base | {
        "invocationSequenceNumber": 1,
        "multipleUnitUsage": [{"ratingGroup": 10, "usedUnitContainer": [container]}],
    }
    answer = await nchf.handle(nchf_request(f"{path}/release", release))
    assert answer.status == 204, answer.body


def nchf_request(path: str, doc: dict[str, Any]) -> Request:
    return Request(
        "POST", path, "", (("content-type", "application/json"),), json.dumps(doc).encode(),
        "2", "ocs.test",
    )  # fmt: skip


def counted(plan_doc: dict[str, Any]) -> bool:
    """A plan whose price reads the period counters (graduated tiers or an allowance):
    online, an upper level's record amount is priced without them (the bill run re-rates)."""
    version = plan_doc["versions"][0]
    tiers = [len(r["tiers"]) for t in version["tariffs"] for r in t["rates"].values()]
    return "allowances" in version or max(tiers) > 1


def write_catalogue(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "catalogue.yaml").write_text(text)  # JSON is YAML
    return folder


async def run_example(
    redis: Redis, db: Database, folder: Path, catalogue_doc: str, items: list[Usage]
) -> None:
    tenant = json.loads(catalogue_doc)["tenant"]["id"]
    catalogue = load_catalogue(write_catalogue(folder, catalogue_doc))
    store = BalanceStore(redis)
    now = [items[0].at.timestamp()]
    try:
        await provision_catalogue(store, catalogue, str(folder), now_ms=int(now[0] * 1000))
        app = ChargingApplication(
            store,
            CatalogueHolder(catalogue),
            # a generous budget a request: the shared machine runs at load 10 at times
            ChargingConfig(data_dir=folder, request_timeout=10.0),
            Identity("ocs.test", "test"),
            ChargingMetrics(CollectorRegistry()),
            clock=lambda: now[0],
        )
        nchf = NchfService(app.core, store.batch)
        for i, u in enumerate(items):
            now[0] = u.at.timestamp()
            sid = f"{tenant};{i}"
            plmn = ZONES[u.zone]
            kind, gy_unit = KINDS[u.service]
            want = 2 * MB if u.service == "data" else 60
            if i % 2:  # over Nchf: create asking for `want`, release reporting the usage
                await nchf_session(nchf, u, kind, want)
                continue
            for number, spec in ((0, (10, want, 0)), (1, (10, -1, u.octets))):
                ccr = build_ccr(
                    sid, request_type=1 + 2 * number, number=number, imsi=IMSI,
                    msccs=[spec], sgsn_mcc_mnc=plmn, when=u.at, **gy_unit,
                )  # fmt: skip
                answer = await app.handle_ccr(wire(ccr), None)
                assert answer.get(A.AVP_RESULT_CODE) == 2001, (i, number)
        wallet_tag = f"{tenant}:wallet:w"
        records = [r for r in await store.records(wallet_tag) if r.fields["kind"] == "usage"]
        assert await store.live_reservations(wallet_tag) == 0
        payer = json.loads(catalogue_doc)["accounts"][0]["payer"]
        res_tag = f"{tenant}:{payer['kind']}:{payer['id']}"
        res_records = {
            r.fields["id"]: r for r in await store.records(res_tag) if r.fields["kind"] == "level"
        }
        res_buckets = {b.id: b for b in await store.buckets(res_tag)}
        assert await store.live_reservations(res_tag) == 0
    finally:
        await store.batch.close()

    # 1 + 2: the online debit of each usage is the record's level-0 amount
    online = [sum(a for _, a in r.alloc) for r in records]
    recorded = [[lv["amount"] for lv in json.loads(r.fields["ctx"])["levels"]] for r in records]
    assert online == [levels[0] for levels in recorded]
    assert all("short" not in r.fields for r in records)

    # the records say what was used, in the unit of its service
    used = [(u.service, u.octets) for u in items if u.octets]
    assert [(json.loads(r.fields["ctx"])["service"], int(r.fields["units"])) for r in records] == (
        used
    )
    assert [r.fields["unit"] for r in records] == [UNIT[s] for s, _ in used]

    # 3: the definition, usage after usage with the period counters
    counters: dict[str, int] = {}
    definition: list[list[int]] = []
    # (service, zone) -> exact level-1 sum: one invoice line each
    wholesale: dict[tuple[str, str], Fraction] = {}
    mode = Rounding.UP
    for u in items:
        if u.octets == 0:
            continue
        mcc, mnc = ZONES[u.zone][:3], ZONES[u.zone][3:]
        ctx = UsageContext(
            tenant=tenant, imsi=IMSI, event_time=u.at, service=ServiceKind(u.service),
            quantity=u.octets, apn="iot.demo", rating_group=10, mcc=mcc, mnc=mnc,
        )  # fmt: skip
        rated = rate_uncached(catalogue, ctx, counters)
        definition.append([line.amount for line in rated.lines])
        top = rated.lines[1]
        exact = exact_amount(top.quote.rate, top.priced)
        line = (u.service, top.quote.zone)
        wholesale[line] = wholesale.get(line, Fraction(0)) + exact
        mode = top.quote.rate.rounding  # one version: one rounding mode
        for line in rated.lines:
            for key, delta in line.deltas:
                counters[key] = counters.get(key, 0) + delta
    assert [r[0] for r in recorded] == [d[0] for d in definition]
    assert all(len(d) == 2 for d in definition)  # the wallet's level and the wholesale one
    # the reseller's level, online: every usage committed there too, at its own terms; a
    # pool holds bytes, and pays voice and events online only with money at a rate (a
    # postpaid pool's credit at a priced tariff; _levels.lua passes it over otherwise), a
    # wallet pays them all
    held = [
        (r, amounts)
        for r, amounts in zip(records, recorded, strict=True)
        if f"{r.fields['id']}#1" in res_records
    ]
    must = {
        f"{r.fields['id']}#1"
        for r in records
        if payer["kind"] == "wallet" or r.fields["unit"] == "bytes"
    }
    assert must <= set(res_records) <= {f"{r.fields['id']}#1" for r in records}
    for r, amounts in held:
        level = res_records[f"{r.fields['id']}#1"]
        assert int(level.fields["units"]) == int(r.fields["units"])
        if payer["kind"] == "wallet":  # debited exactly the record's level-1 amount
            assert sum(a for _, a in level.alloc) == amounts[1]
    assert all(b.reserved == 0 for b in res_buckets.values())
    if payer["kind"] == "prepaid_pool":
        assert res_buckets["res-usage"].used == sum(int(r.fields["units"]) for r, _ in held)
    if payer["kind"] == "wallet":
        assert res_buckets["res-wallet"].used == sum(a[1] for a in recorded)
        if not counted(json.loads(catalogue_doc)["plans"][1]):  # no tier, no allowance
            assert [a[1] for a in recorded] == [d[1] for d in definition]
    # wholesale lines are rounded once per invoice line (docs/rating.md), not per record
    by_line = {
        line: div_round(total.numerator, total.denominator, mode)
        for line, total in wholesale.items()
    }

    # 4: offline, on PostgreSQL: re-rating in event order and the wholesale bill run line
    await synced(db, catalogue)
    await Drainer(redis, db, MASTER).run()
    period = period_holding(1, items[0].at, TZ)
    async with db.pool.acquire() as conn, conn.transaction():
        await enter_tenant(conn, tenant)
        rows = await conn.fetch(
            "SELECT ts, units, rating_group, ctx FROM usage_records WHERE kind = 'usage'"
            " ORDER BY ts, record_key"
        )
        offline_counters: dict[str, int] = {}
        rerated: list[list[int]] = []
        for row in rows:
            ctx_doc = row["ctx"] if isinstance(row["ctx"], dict) else json.loads(row["ctx"])
            charges = rerate_levels(
                catalogue, ctx_doc["levels"], ctx_doc["service"], row["rating_group"],
                row["ts"], int(row["units"]), "sub", offline_counters,
            )  # fmt: skip
            rerated.append([c.amount for c in charges])
        lines = await usage_lines(conn, catalogue, ["res"], period)
        by_record = await usage_lines(conn, catalogue, ["res"], period, rates=FlatRates())
    assert rerated == definition
    # offline, the reseller's level records account for every unit and cent it paid online
    assert await audit_records(redis, db, tenant, [res_tag, wallet_tag]) == []
    billed = {line.description: line.net for line in lines["res"]}
    assert billed == {line.description: line.net for line in by_record["res"]}
    names = {"home": "Home", "eu": "EU", "world": "World"}  # the zones' names (line_words)
    services = {"data": "Data", "voice": "Voice calls", "event": "Events"}
    expected = {
        f"{services[service]}, zone {names.get(zone, zone)}, plan wholesale": net
        for (service, zone), net in by_line.items()
    }
    if payer["kind"] == "wallet":  # a wallet level is paid online, never invoiced
        expected = {}
    assert {k: v for k, v in billed.items() if v} == {k: v for k, v in expected.items() if v}


@pytest.mark.timeout(60 + 3 * EXAMPLES)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=EXAMPLES <= 50,
)
@given(
    retail=plan("retail", "data"),
    wholesale=plan("wholesale", "wdata"),
    items=usages(),
    reseller=st.sampled_from(RESELLER_PAYERS),
)
async def test_online_debit_record_and_bill_run_agree(
    redis: Redis,
    db: Database,
    tmp_path: Path,
    retail: Any,
    wholesale: Any,
    items: list[Usage],
    reseller: str,
) -> None:
    tenant = f"d{uuid.uuid4().hex[:10]}"
    doc = catalogue_text(tenant, retail, wholesale, reseller)
    note(json.dumps({"retail": retail, "wholesale": wholesale}))
    note(repr(items))
    await run_example(redis, db, tmp_path / tenant, doc, items)
