"""Per-SIM limits (docs/limits.md) through the charging application: real Redis, real CCRs
(called directly and through a served node over TCP). Caps are never overshot, by one
session or by two at once; each action answers as documented; a new period starts at
zero; reclaimed reservations give their share of a cap back."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from ocs.balance import BalanceStore
from ocs.balance.keys import PayerKeys
from ocs.charging.application import ChargingApplication
from ocs.charging.config import ChargingConfig
from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.diameter.codec import Avp, Message
from ocs.diameter.constants import FinalUnitAction, ResultCode
from ocs.observability.metrics import ChargingMetrics
from ocs.provisioning.payers import provision_catalogue
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import CatalogueHolder, load_catalogue
from ocs.redis_client import RedisClient
from tests.charging.ccr import build_ccr
from tests.charging.conftest import DEMO, TRANSPORTS, served, settings_for
from tests.charging.helpers import (
    ACME_POOL,
    BOB_IMSI,
    BOB_MSISDN,
    BOB_WALLET,
    bucket,
    granted,
    msccs,
    wire,
)

BLOCK = "262010000000001"  # SIMs of the demo's 1,000-SIM range (acme-fleet)
REDIRECT = "262010000000002"
RESTRICT = "262010000000003"
NOTIFY = "262010000000004"
DAILY = "262010000000005"
EVENTS = "262010000000006"
FREE = "262010000000007"  # no limits
PLAN_SIM = "262010000777001"  # on plan capped-iot (default: 2,000,000 bytes a month)
PLAN_OVERRIDDEN = "262010000777002"  # on capped-iot, with its own cap (3,000,000)
EVENTS_POOL = "demo:prepaid_pool:acme-events"
CAP = 1_000_000
LIMITS = f"""
sim_limits:
  - {{imsi: "{BLOCK}", data_month_bytes: {CAP}, action: block}}
  - {{imsi: "{REDIRECT}", data_month_bytes: {CAP}, action: redirect,
     redirect_url: "http://limits.example/top-up"}}
  - {{imsi: "{RESTRICT}", data_month_bytes: {CAP}, action: restrict,
     filter_ids: [walled-garden]}}
  - {{imsi: "{NOTIFY}", data_month_bytes: {CAP}, action: notify}}
  - {{imsi: "{DAILY}", data_day_bytes: {CAP}}}
  - {{imsi: "{EVENTS}", events_day: 3}}
  - {{imsi: "{PLAN_OVERRIDDEN}", data_month_bytes: 3000000}}
  - {{imsi: "{BOB_IMSI}", sms_day: 2}}
plans:
  - id: capped-iot
    currency: EUR
    limits: {{data_month_bytes: 2000000, action: block}}
    versions:
      - effective_from: "2024-01-01T00:00:00+01:00"
        zone_set: retail
        tariffs:
          - {{service: data, zone: "*", rates: {{any: {{tiers: [{{from: 0, price: "0"}}]}}}}}}
sims:
  - imsi: "{PLAN_SIM}"
    account: acme-iot
    twins:
      - id: data
        payer: {{kind: prepaid_pool, id: acme-pool}}
        plans: [{{plan: capped-iot, from: "2024-01-01T00:00:00+01:00"}}]
  - imsi: "{PLAN_OVERRIDDEN}"
    account: acme-iot
    twins:
      - id: data
        payer: {{kind: prepaid_pool, id: acme-pool}}
        plans: [{{plan: capped-iot, from: "2024-01-01T00:00:00+01:00"}}]
"""
SUCCESS = int(ResultCode.DIAMETER_SUCCESS)
LIMIT = int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)
_sid = itertools.count(1)


@pytest.fixture(scope="module")
def limits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("limits")
    for item in DEMO.glob("*.yaml"):
        (folder / item.name).write_text(item.read_text())
    (folder / "zz-limits.yaml").write_text(LIMITS)
    return folder


@pytest.fixture(scope="module")
def limits_catalogue(limits_dir: Path) -> Catalogue:
    return load_catalogue(limits_dir)


@pytest.fixture
async def limits_store(
    redis: RedisClient, limits_catalogue: Catalogue, limits_dir: Path
) -> AsyncIterator[BalanceStore]:
    store = BalanceStore(redis)
    await provision_catalogue(store, limits_catalogue, str(limits_dir))
    yield store
    await store.batch.close()


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))


@pytest.fixture(params=TRANSPORTS)
async def app(
    request: pytest.FixtureRequest,
    limits_store: BalanceStore,
    limits_catalogue: Catalogue,
    config: ChargingConfig,
    redis_url: str,
    clock: Clock,
) -> AsyncIterator[ChargingApplication]:
    if request.param == "direct":
        yield ChargingApplication(
            limits_store,
            CatalogueHolder(limits_catalogue),
            config,
            Identity("ocs.test", "test"),
            ChargingMetrics(CollectorRegistry()),
            clock=clock,
        )
        return
    async with served(settings_for(redis_url, config)) as gateway:
        gateway.application.clock = clock
        yield cast(ChargingApplication, gateway)


class Session:
    def __init__(self, app: ChargingApplication, imsi: str, clock: Clock) -> None:
        self.app, self.imsi, self.clock = app, imsi, clock
        self.sid = f"pgw.test;limits;{next(_sid)}"
        self.n = 0

    async def send(self, kind: int, want: int, used: int) -> Avp:
        ccr = build_ccr(
            self.sid,
            request_type=kind,
            number=self.n,
            imsi=self.imsi,
            msccs=[(1, want, used)],
            when=datetime.fromtimestamp(self.clock(), UTC),
        )
        self.n += 1
        answer: Message = await self.app.handle_ccr(wire(ccr))
        return msccs(answer)[1]

    async def initial(self, want: int) -> Avp:
        return await self.send(1, want, 0)

    async def update(self, want: int, used: int) -> Avp:
        return await self.send(2, want, used)

    async def terminate(self, used: int) -> Avp:
        return await self.send(3, -1, used)


async def limit_events(store: BalanceStore, payer: str) -> list[dict[str, object]]:
    """The sim.limit_reached events in the payer's outbox (docs/webhooks.md)."""
    out = []
    for _, fields in await store.redis.xrange(PayerKeys(payer).events):
        f = {k.decode(): v.decode() for k, v in fields.items()}
        if f["type"] == "sim.limit_reached":
            out.append({"id": f["id"], **json.loads(f["subject"]), **json.loads(f["data"])})
    return out


def code(mscc: Avp) -> int:
    return int(mscc.get(A.AVP_RESULT_CODE, 0))


def fui(mscc: Avp) -> Avp | None:
    return mscc.find(A.AVP_FINAL_UNIT_INDICATION)


def fui_action(mscc: Avp) -> int | None:
    found = fui(mscc)
    return None if found is None else int(found.get(A.AVP_FINAL_UNIT_ACTION, -1))


async def state(store: BalanceStore, payer: str, imsi: str, cap: str) -> tuple[str, int, int]:
    raw = await store.redis.hget(PayerKeys(payer).limits, f"{imsi}|*|{cap}")
    assert raw is not None
    period, used, reserved, _ = (raw.decode() if isinstance(raw, bytes) else raw).split(":")
    return period, int(used), int(reserved)


async def test_block_cuts_the_last_grant_then_answers_4012(
    app: ChargingApplication, limits_store: BalanceStore, clock: Clock
) -> None:
    s = Session(app, BLOCK, clock)
    first = await s.initial(600_000)
    assert (code(first), granted(first), fui(first)) == (SUCCESS, 600_000, None)
    last = await s.update(600_000, 600_000)  # 400,000 left under the cap
    assert (code(last), granted(last)) == (SUCCESS, 400_000)
    assert fui_action(last) == FinalUnitAction.TERMINATE
    refused = await s.update(600_000, 400_000)
    assert (code(refused), granted(refused), fui(refused)) == (LIMIT, None, None)
    assert (await state(limits_store, ACME_POOL, BLOCK, "data_month_bytes"))[1:] == (CAP, 0)
    [event] = await limit_events(limits_store, ACME_POOL)  # written with the commit, once
    month = datetime.fromtimestamp(clock(), ZoneInfo("Europe/Berlin")).strftime("%Y-%m")
    assert {k: v for k, v in event.items() if k != "id"} == {
        "imsi": BLOCK,
        "payer": "acme-pool",
        "payer_kind": "prepaid_pool",
        "cap": "data_month_bytes",
        "limit": CAP,
        "used": CAP,
        "period": month,
        "action": "block",
    }
    # the other SIMs of the pool keep charging
    other = await Session(app, FREE, clock).initial(600_000)
    assert (code(other), granted(other)) == (SUCCESS, 600_000)
    # a new session of the capped SIM is refused at once
    again = await Session(app, BLOCK, clock).initial(1)
    assert code(again) == LIMIT
    end = await s.terminate(0)
    assert code(end) == SUCCESS


async def test_two_sessions_at_once_never_overshoot(
    app: ChargingApplication, limits_store: BalanceStore, clock: Clock
) -> None:
    sessions = [Session(app, BLOCK, clock) for _ in range(2)]
    grants = await asyncio.gather(*(s.initial(700_000) for s in sessions))
    given = [granted(g) or 0 for g in grants]
    assert sum(given) == CAP  # reservations count against the cap: 700,000 + 300,000
    # both use all they got and ask again, at once: nothing is left
    again = await asyncio.gather(
        *(s.update(700_000, g) for s, g in zip(sessions, given, strict=True))
    )
    assert [code(a) for a in again] == [LIMIT, LIMIT]
    _, used, reserved = await state(limits_store, ACME_POOL, BLOCK, "data_month_bytes")
    assert (used, reserved) == (CAP, 0)
    for s in sessions:
        await s.terminate(0)


async def test_many_concurrent_sessions_stay_under_the_cap(
    app: ChargingApplication, limits_store: BalanceStore, clock: Clock
) -> None:
    sessions = [Session(app, BLOCK, clock) for _ in range(8)]
    given = [granted(g) or 0 for g in await asyncio.gather(*(s.initial(300_000) for s in sessions))]
    assert sum(given) == CAP
    rounds = await asyncio.gather(
        *(s.update(300_000, g) for s, g in zip(sessions, given, strict=True))
    )
    assert all(code(r) == LIMIT for r in rounds)
    _, used, reserved = await state(limits_store, ACME_POOL, BLOCK, "data_month_bytes")
    assert used == CAP and reserved == 0


async def test_redirect_and_restrict_answer_with_their_final_unit_indication(
    app: ChargingApplication, clock: Clock
) -> None:
    for imsi, action in (
        (REDIRECT, FinalUnitAction.REDIRECT),
        (RESTRICT, FinalUnitAction.RESTRICT_ACCESS),
    ):
        s = Session(app, imsi, clock)
        last = await s.initial(2 * CAP)
        assert (code(last), granted(last), fui_action(last)) == (SUCCESS, CAP, action)
        at_cap = await s.update(CAP, CAP)
        assert (code(at_cap), granted(at_cap), fui_action(at_cap)) == (LIMIT, None, action)
        assert at_cap.get(A.AVP_VALIDITY_TIME) is not None
        found = fui(at_cap)
        assert found is not None
        if action is FinalUnitAction.REDIRECT:
            server = found.find(A.AVP_REDIRECT_SERVER)
            assert server is not None
            address = server.get(A.AVP_REDIRECT_SERVER_ADDRESS)
            assert address == "http://limits.example/top-up"
        else:
            assert found.get(A.AVP_FILTER_ID) == "walled-garden"


async def test_notify_lets_usage_go_past_the_cap(
    app: ChargingApplication, limits_store: BalanceStore, clock: Clock
) -> None:
    s = Session(app, NOTIFY, clock)
    first = await s.initial(800_000)
    assert granted(first) == 800_000
    more = await s.update(800_000, 800_000)
    assert (code(more), granted(more), fui(more)) == (SUCCESS, 800_000, None)
    await s.terminate(800_000)
    raw = await limits_store.redis.hget(PayerKeys(ACME_POOL).limits, f"{NOTIFY}|*|data_month_bytes")
    assert raw is not None
    _, used, reserved, reached = raw.decode().split(":")
    assert (int(used), int(reserved), reached) == (1_600_000, 0, "1")
    [event] = await limit_events(limits_store, ACME_POOL)  # once, when used reached the cap
    assert (event["imsi"], event["used"], event["action"]) == (NOTIFY, 1_600_000, "notify")


async def test_a_daily_cap_starts_over_on_the_next_local_day(
    app: ChargingApplication, limits_store: BalanceStore, clock: Clock
) -> None:
    # the demo tenant's time zone is Europe/Berlin: 22:59:59 UTC is 23:59:59 local in winter
    clock.now = datetime(2026, 12, 6, 22, 59, 59, tzinfo=UTC).timestamp()
    s = Session(app, DAILY, clock)
    assert granted(await s.initial(CAP)) == CAP
    refused = await s.update(CAP, CAP)
    assert code(refused) == LIMIT
    clock.now = datetime(2026, 12, 6, 23, 0, 0, tzinfo=UTC).timestamp()  # local midnight
    lifted = await s.update(500_000, 0)
    assert (code(lifted), granted(lifted)) == (SUCCESS, 500_000)
    period, used, reserved = await state(limits_store, ACME_POOL, DAILY, "data_day_bytes")
    assert (period, used, reserved) == ("d2026-12-07", 0, 500_000)


async def test_events_over_a_daily_cap_are_refused_whole(
    app: ChargingApplication, limits_store: BalanceStore, clock: Clock
) -> None:
    codes = []
    for units in (2, 2, 1, 1):
        ccr = build_ccr(
            f"pgw.test;ev;{next(_sid)}",
            request_type=4,
            number=0,
            imsi=EVENTS,
            msccs=[(1, units, 0)],
            apn=None,
            units=True,
        )
        answer = await app.handle_ccr(wire(ccr))
        codes.append(int(answer.get(A.AVP_RESULT_CODE, 0)))
    # 2 fits (2 of 3); 2 more would pass 3: refused whole; 1 fits (3 of 3); then nothing
    assert codes == [SUCCESS, LIMIT, SUCCESS, LIMIT]
    assert (await state(limits_store, EVENTS_POOL, EVENTS, "events_day"))[1:] == (3, 0)


async def test_a_reclaimed_reservation_gives_its_share_back(
    app: ChargingApplication, limits_store: BalanceStore, clock: Clock
) -> None:
    s = Session(app, BLOCK, clock)
    assert granted(await s.initial(CAP)) == CAP
    assert (await state(limits_store, ACME_POOL, BLOCK, "data_month_bytes"))[1:] == (0, CAP)
    later = int((clock() + 3600) * 1000)
    assert await limits_store.reclaim(ACME_POOL, later) == 1
    assert (await state(limits_store, ACME_POOL, BLOCK, "data_month_bytes"))[1:] == (0, 0)
    fresh = await Session(app, BLOCK, clock).initial(CAP)
    assert granted(fresh) == CAP


async def test_a_plan_default_caps_each_twin_unless_the_sim_has_its_own(
    app: ChargingApplication, limits_store: BalanceStore, clock: Clock
) -> None:
    on_plan = await Session(app, PLAN_SIM, clock).initial(5_000_000)
    assert (code(on_plan), granted(on_plan)) == (SUCCESS, 2_000_000)
    assert fui_action(on_plan) == FinalUnitAction.TERMINATE
    raw = await limits_store.redis.hget(
        PayerKeys(ACME_POOL).limits, f"{PLAN_SIM}|data|data_month_bytes"
    )  # the plan's caps count per twin
    assert raw is not None and raw.decode().split(":")[2] == "2000000"
    own = await Session(app, PLAN_OVERRIDDEN, clock).initial(5_000_000)
    assert (code(own), granted(own)) == (SUCCESS, 3_000_000)  # its own cap, not the plan's


async def test_sms_over_a_daily_cap_are_refused_and_not_debited(
    app: ChargingApplication, limits_store: BalanceStore
) -> None:
    codes = []
    for _ in range(3):
        sms = build_ccr(
            f"pgw.test;sms;{next(_sid)}",
            request_type=4,
            number=0,
            imsi=BOB_IMSI,
            msisdn=BOB_MSISDN,
            msccs=[(1, 1, 0)],
            apn=None,
            units=True,
            sms_recipient="4917",
        )
        codes.append(int((await app.handle_ccr(wire(sms))).get(A.AVP_RESULT_CODE, 0)))
    assert codes == [SUCCESS, SUCCESS, LIMIT]
    assert (await bucket(limits_store, BOB_WALLET, "bob-wallet")).used == 18  # 9 ct each, 2
