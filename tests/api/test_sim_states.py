"""SIM lifecycle states (docs/sim-states.md) over real HTTP, a real Redis and, for what they
mean to charging, real CCRs through a real Diameter server: every allowed and refused
transition, who made each (history), a SIM of a range, and what each state is charged."""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
from pathlib import Path
from typing import Any

from ocs.api.auth import digest, token_id
from ocs.balance import BalanceStore
from ocs.balance.keys import PayerKeys
from ocs.charging.states import allowance_payer, apply_activations
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Message
from ocs.diameter.constants import CcRequestType, Command, ResultCode
from ocs.provisioning.states import STATES, TRANSITIONS
from ocs.redis_client import RedisClient
from tests.api.conftest import DEMO, TENANT, Api, Gateway, demo_documents
from tests.api.test_provisioning import apply_catalog_cli
from tests.charging.ccr import build_ccr

RANGE_IMSI = "262010000000001"  # a member of the demo's sim_range
PATH_TO: dict[str, list[str]] = {  # how a SIM created active reaches each state
    "inventory": ["deactivated", "inventory"],
    "test": ["deactivated", "inventory", "test"],
    "active": [],
    "suspended": ["suspended"],
    "deactivated": ["deactivated"],
    "terminated": ["terminated"],
}


async def _create(api: Api, imsi: str, state: str | None = None, msisdn: str | None = None) -> None:
    body: dict[str, Any] = {
        "imsi": imsi,
        "account": "bob",
        "plan": "consumer-data",
        "payer": {"kind": "wallet", "id": "w-states"},
    }
    if state is not None:
        body["state"] = state
    if msisdn is not None:
        body["msisdn"] = msisdn
    r = await api.request("POST", "/v1/subscriptions", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["subscriptions"][0]["status"] == (state or "active")


async def _wallet(api: Api, balance: int = 100_000) -> None:
    r = await api.request(
        "POST",
        "/v1/wallets",
        json={"id": "w-states", "account": "bob", "currency": "EUR", "balance": balance},
    )
    assert r.status_code == 201, r.text


async def _move(api: Api, imsi: str, state: str, reason: str = "", who: str = "admin") -> Any:
    return await api.request(
        "POST", f"/v1/subscriptions/{imsi}/state", who=who, json={"state": state, "reason": reason}
    )


async def test_every_allowed_and_refused_transition(demo: Api) -> None:
    await _wallet(demo)
    n = 0
    for current in STATES:
        for to in STATES:
            n += 1
            imsi = f"2620188{n:08d}"
            await _create(demo, imsi)
            for step in PATH_TO[current]:
                assert (await _move(demo, imsi, step)).status_code == 200
            r = await _move(demo, imsi, to, reason=f"{current} to {to}")
            got = (await demo.request("GET", f"/v1/subscriptions/{imsi}")).json()["status"]
            if to in TRANSITIONS[current]:
                assert r.status_code == 200, (current, to, r.text)
                assert r.json()["subscriptions"][0]["status"] == to
                assert got == to
            else:
                assert r.status_code == 409, (current, to, r.text)
                problem = r.json()
                assert problem["type"].endswith("state-transition")
                assert (problem["from"], problem["to"]) == (current, to)
                assert f"from {current} to {to}" in problem["detail"]
                assert got == current  # nothing written
    assert n == 36


async def test_history_says_who_when_and_why(demo: Api) -> None:
    await _wallet(demo)
    imsi = "262018800000901"
    await _create(demo, imsi, state="inventory")
    assert (await _move(demo, imsi, "test", reason="shipped to the OEM")).status_code == 200
    assert (await _move(demo, imsi, "active", reason="sold")).status_code == 200
    assert (await demo.request("POST", f"/v1/subscriptions/{imsi}/suspend")).status_code == 200
    assert (await _move(demo, imsi, "inventory")).status_code == 409  # refused: not journaled
    r = await demo.request("GET", f"/v1/subscriptions/{imsi}/history", who="read")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "suspended"
    who = f"token:{token_id(digest(demo.tokens['admin']))}"
    moves = [(m["from"], m["to"], m["by"], m["reason"]) for m in body["items"]]
    assert moves == [
        ("active", "suspended", who, "subscription suspended"),
        ("test", "active", who, "sold"),
        ("inventory", "test", who, "shipped to the OEM"),
    ]
    assert all(m["at"] and m["revision"] > 0 for m in body["items"])
    revisions = [m["revision"] for m in body["items"]]
    assert revisions == sorted(revisions, reverse=True)
    # each move is a sim.state_changed event in the outbox of the SIM's payer
    events = await _events(demo, "wallet", "w-states", imsi)
    assert [(e["data"]["from"], e["data"]["to"], e["data"]["by"]) for e in events] == [
        ("inventory", "test", who),
        ("test", "active", who),
        ("active", "suspended", who),
    ]
    assert events[0]["subject"] == {"imsi": imsi, "payer": "w-states", "payer_kind": "wallet"}
    assert events[0]["tenant"] == TENANT and events[0]["id"].startswith("evt_")
    assert len({e["id"] for e in events}) == 3


async def _events(api: Api, kind: str, pid: str, imsi: str) -> list[dict[str, Any]]:
    """The sim.state_changed events of ``imsi`` in a payer's outbox (docs/webhooks.md)."""
    raw = await api.redis.xrange(PayerKeys(f"{TENANT}:{kind}:{pid}").events)
    out = []
    for _, fields in raw:
        f = {k.decode(): v.decode() for k, v in fields.items()}
        subject = json.loads(f["subject"])
        if f["type"] == "sim.state_changed" and subject.get("imsi") == imsi:
            out.append({**f, "subject": subject, "data": json.loads(f["data"])})
    return out


async def test_a_sim_of_a_range_moves_alone(demo: Api) -> None:
    r = await _move(demo, RANGE_IMSI, "deactivated", reason="device returned")
    assert r.status_code == 200, r.text
    view = r.json()["subscriptions"][0]
    assert view["status"] == "deactivated" and view["range"] == "acme-fleet"
    payer = view["twins"][0]["payer"]
    events = await _events(demo, payer["kind"], payer["id"], RANGE_IMSI)
    assert [(e["data"]["from"], e["data"]["to"]) for e in events] == [("active", "deactivated")]
    neighbour = str(int(RANGE_IMSI) + 1)
    other = (await demo.request("GET", f"/v1/subscriptions/{neighbour}")).json()
    assert other["status"] == "active"
    assert (await _move(demo, RANGE_IMSI, "suspended")).status_code == 409
    assert (await _move(demo, RANGE_IMSI, "inventory")).status_code == 200
    history = (await demo.request("GET", f"/v1/subscriptions/{RANGE_IMSI}/history")).json()
    assert [(m["from"], m["to"]) for m in history["items"]] == [
        ("deactivated", "inventory"),
        ("active", "deactivated"),
    ]
    assert (await demo.request("GET", f"/v1/subscriptions/{neighbour}/history")).json()[
        "items"
    ] == []
    listed = await demo.request("GET", "/v1/subscriptions", params={"status": "inventory"})
    assert [s["imsi"] for s in listed.json()["items"]] == [RANGE_IMSI]
    # back to the range's own state: the member has no state of its own any more
    assert (await _move(demo, RANGE_IMSI, "active")).status_code == 200
    state = json.loads(await demo.redis.get(f"ocs:api:{{api:{TENANT}}}:state"))
    assert all(not item.get("states") for item in state["sim_ranges"].values())


async def test_another_tenant_can_neither_read_nor_move_a_sim(demo: Api) -> None:
    for imsi in ("262019999999999", RANGE_IMSI):
        r = await _move(demo, imsi, "deactivated", who="other")
        assert r.status_code == 404, r.text
        r = await demo.request("GET", f"/v1/subscriptions/{imsi}/history", who="other")
        assert r.status_code == 404, r.text
        assert (await demo.request("GET", f"/v1/subscriptions/{imsi}")).json()["status"] == "active"
    r = await _move(demo, RANGE_IMSI, "deactivated", who="topup")
    assert r.status_code == 403


async def test_a_catalogue_of_before_states_keeps_working(demo: Api) -> None:
    """A SIM whose twins were suspended the old way is suspended; its first move lifts the
    twins' status to the SIM's state."""
    docs = demo_documents()
    sims = docs["subscribers.yaml"]["sims"]
    legacy = next(s for s in sims if s["imsi"] == "262019999999999")
    for twin in legacy["twins"]:
        twin["status"] = "suspended"
    r = await demo.request("POST", "/v1/catalogue", json={"documents": docs})
    assert r.status_code == 200, r.text
    view = (await demo.request("GET", "/v1/subscriptions/262019999999999")).json()
    assert view["status"] == "suspended"
    r = await demo.request("POST", "/v1/subscriptions/262019999999999/resume")
    assert r.status_code == 200, r.text
    view = r.json()["subscriptions"][0]
    assert view["status"] == "active" and {t["status"] for t in view["twins"]} == {"active"}
    # and a catalogue naming a move the table refuses is refused whole
    for twin in legacy["twins"]:
        twin["status"] = "active"
    legacy["state"] = "inventory"
    r = await demo.request("POST", "/v1/catalogue", json={"documents": docs})
    assert r.status_code == 409, r.text
    assert (r.json()["from"], r.json()["to"]) == ("active", "inventory")


# -- what each state means for charging, with real CCRs ------------------------------------
def _code(answer: Message) -> int:
    mscc = answer.find(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
    if mscc is not None:
        for child in mscc.children or []:
            if child.key == A.AVP_RESULT_CODE:
                return int(child.value)
    return int(answer.get(A.AVP_RESULT_CODE))


def _granted(answer: Message) -> int:
    mscc = answer.find(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
    for child in (mscc.children or []) if mscc is not None else []:
        if child.key == A.AVP_GRANTED_SERVICE_UNIT:
            for unit in child.children or []:
                if unit.key == A.AVP_CC_TOTAL_OCTETS:
                    return int(unit.value)
    return 0


async def _ccr(gw: Gateway, sid: str, n: int, imsi: str, want: int, used: int) -> Message:
    kind = CcRequestType.INITIAL_REQUEST if n == 0 else CcRequestType.UPDATE_REQUEST
    return await gw.send(
        build_ccr(sid, request_type=kind, number=n, imsi=imsi, msccs=[(1, want, used)])
    )


async def _sms(gw: Gateway, sid: str, imsi: str) -> Message:
    return await gw.send(
        build_ccr(
            sid,
            request_type=CcRequestType.EVENT_REQUEST,
            number=0,
            imsi=imsi,
            msccs=[(1, 1, 0)],
            requested_action=0,
            units=True,
            service_context="32274@3gpp.org",
        )
    )


async def _with_test_allowance(api: Api, activate: str) -> None:
    docs = demo_documents()
    plan = next(p for p in docs["plans.yaml"]["plans"] if p["id"] == "consumer-data")
    plan["test_allowance"] = {"data_bytes": 30_000, "sms": 1, "activate": activate}
    r = await api.request("POST", "/v1/catalogue", json={"documents": docs})
    assert r.status_code == 200, r.text


async def _status(api: Api, imsi: str, was: str = "test") -> str:
    """The SIM's state as the API sees it once it is no longer ``was`` (the API trusts its
    compiled catalogue for a second: a change made by another process shows within it)."""
    for _ in range(40):
        r = await api.request("GET", f"/v1/subscriptions/{imsi}")
        if r.json()["status"] != was:
            break
        await asyncio.sleep(0.1)
    return str(r.json()["status"])


async def _wallet_available(redis: RedisClient) -> int:
    store = BalanceStore(redis)
    return sum(b.available for b in await store.buckets(f"{TENANT}:wallet:w-states"))


async def test_states_refused_by_charging_get_4010_and_nothing_moves(
    gateway: Gateway, demo: Api
) -> None:
    await _wallet(demo)
    for n, state in enumerate(("inventory", "suspended", "deactivated", "terminated")):
        imsi = f"26201770000{n:04d}"
        await _create(demo, imsi)
        for step in PATH_TO[state]:
            assert (await _move(demo, imsi, step)).status_code == 200
        before = await _wallet_available(demo.redis)
        cca = await _ccr(gateway, f"pgw.test;st;{state}", 0, imsi, 10_000, 0)
        assert _code(cca) == ResultCode.DIAMETER_END_USER_SERVICE_DENIED, state
        assert _granted(cca) == 0
        assert await _wallet_available(demo.redis) == before
    # and an active one is charged as usual from its wallet
    await _create(demo, "262017700009999")
    cca = await _ccr(gateway, "pgw.test;st;active", 0, "262017700009999", 10_000, 0)
    assert _code(cca) == ResultCode.DIAMETER_SUCCESS and _granted(cca) > 0


async def test_a_test_sim_uses_its_allowance_free_then_gets_4012(
    gateway: Gateway, demo: Api, settings: Settings
) -> None:
    await _with_test_allowance(demo, "never")
    await _wallet(demo)
    imsi = "262017700010001"
    await _create(demo, imsi, state="test")
    wallet = await _wallet_available(demo.redis)
    sid = "pgw.test;st;test"
    cca = await _ccr(gateway, sid, 0, imsi, 20_000, 0)
    assert _code(cca) == ResultCode.DIAMETER_SUCCESS and _granted(cca) == 20_000
    cca = await _ccr(gateway, sid, 1, imsi, 20_000, 20_000)
    assert _code(cca) == ResultCode.DIAMETER_SUCCESS and _granted(cca) == 10_000
    cca = await _ccr(gateway, sid, 2, imsi, 20_000, 10_000)
    assert _code(cca) == ResultCode.DIAMETER_CREDIT_LIMIT_REACHED and _granted(cca) == 0
    assert await _wallet_available(demo.redis) == wallet  # never billed
    store = BalanceStore(demo.redis)
    tag = allowance_payer(TENANT, imsi)
    used = {b.unit: b.used for b in await store.buckets(tag)}
    assert used["bytes"] == 30_000  # counted
    records = [r.fields for r in await store.records(tag) if r.fields["kind"] == "usage"]
    assert sum(int(r["units"]) for r in records) == 30_000
    assert all(json.loads(r["ctx"])["levels"] == [] for r in records)
    assert all(json.loads(r["ctx"])["test"] is True for r in records)
    # one SMS free, the second refused
    assert _code(await _sms(gateway, "pgw.test;st;sms1", imsi)) == ResultCode.DIAMETER_SUCCESS
    assert (
        _code(await _sms(gateway, "pgw.test;st;sms2", imsi))
        == ResultCode.DIAMETER_CREDIT_LIMIT_REACHED
    )
    # nothing asked to activate it (activate: never)
    assert await apply_activations(BalanceStore(demo.redis), settings.data_dir) == 0


async def test_a_test_sim_s_allowance_lost_by_the_store_is_made_again(
    gateway: Gateway, demo: Api
) -> None:
    """The store lost the allowance (a failover to a replica that had not got it yet, a
    FLUSHALL): the next CCR makes it again, as a process started after the loss would,
    instead of a 4012 from a process that remembers having made it."""
    await _with_test_allowance(demo, "never")
    await _wallet(demo)
    imsi = "262017700010005"
    await _create(demo, imsi, state="test")
    cca = await _ccr(gateway, "pgw.test;st;lost1", 0, imsi, 20_000, 0)
    assert _code(cca) == ResultCode.DIAMETER_SUCCESS and _granted(cca) == 20_000
    tag = allowance_payer(TENANT, imsi)
    lost = [key async for key in demo.redis.scan_iter(match=f"ocs:{{{tag}}}:*")]
    assert lost
    await demo.redis.delete(*lost)
    cca = await _ccr(gateway, "pgw.test;st;lost2", 0, imsi, 20_000, 0)
    assert _code(cca) == ResultCode.DIAMETER_SUCCESS and _granted(cca) == 20_000
    buckets = {b.unit: b for b in await BalanceStore(demo.redis).buckets(tag)}
    assert (buckets["bytes"].credited, buckets["bytes"].reserved) == (30_000, 20_000)


async def test_a_test_sim_activates_itself_once_the_allowance_is_used(
    gateway: Gateway, demo: Api, settings: Settings
) -> None:
    await _with_test_allowance(demo, "exhausted")
    await _wallet(demo)
    imsi = "262017700010002"
    await _create(demo, imsi, state="test")
    wallet = await _wallet_available(demo.redis)
    sid = "pgw.test;st;exhausted"
    cca = await _ccr(gateway, sid, 0, imsi, 30_000, 0)
    assert _granted(cca) == 30_000
    # the allowance is used: the next grant is charged as active, from the wallet
    cca = await _ccr(gateway, sid, 1, imsi, 10_000, 30_000)
    assert _code(cca) == ResultCode.DIAMETER_SUCCESS and _granted(cca) == 10_000
    assert await _wallet_available(demo.redis) < wallet
    assert await apply_activations(BalanceStore(demo.redis), settings.data_dir) == 1
    assert await _status(demo, imsi) == "active"
    view = (await demo.request("GET", f"/v1/subscriptions/{imsi}/history")).json()
    assert [(m["from"], m["to"], m["by"], m["reason"]) for m in view["items"]] == [
        ("test", "active", "system", "test allowance used")
    ]


async def test_a_test_sim_activates_itself_on_first_use(
    gateway: Gateway, demo: Api, settings: Settings
) -> None:
    await _with_test_allowance(demo, "first_use")
    await _wallet(demo)
    imsi = "262017700010003"
    await _create(demo, imsi, state="test")
    wallet = await _wallet_available(demo.redis)
    cca = await _ccr(gateway, "pgw.test;st;first", 0, imsi, 10_000, 0)
    assert _code(cca) == ResultCode.DIAMETER_SUCCESS and _granted(cca) == 10_000
    assert await _wallet_available(demo.redis) < wallet  # reserved as active
    assert await apply_activations(BalanceStore(demo.redis), settings.data_dir) == 1
    assert await _status(demo, imsi) == "active"


# -- the other front doors: CRM import and the catalogue folder ------------------------------
async def test_crm_import_moves_range_sims_and_rejects_refused_moves(demo: Api) -> None:
    second = str(int(RANGE_IMSI) + 1)
    rows = f"imsi,status\n{RANGE_IMSI},suspended\n{second},inventory\n"
    r = await demo.request(
        "POST",
        "/v1/imports/subscriptions",
        content=rows,
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["updated"] == 1
    [rejected] = body["rejected"]
    assert (rejected["line"], rejected["field"]) == (3, "status")
    assert "from active to inventory" in rejected["reason"]
    assert (await demo.request("GET", f"/v1/subscriptions/{RANGE_IMSI}")).json()[
        "status"
    ] == "suspended"
    assert (await demo.request("GET", f"/v1/subscriptions/{second}")).json()["status"] == "active"
    history = (await demo.request("GET", f"/v1/subscriptions/{RANGE_IMSI}/history")).json()
    who = f"token:{token_id(digest(demo.tokens['admin']))}"
    assert [(m["from"], m["to"], m["by"]) for m in history["items"]] == [
        ("active", "suspended", who)
    ]
    # the same row again is unchanged
    r = await demo.request(
        "POST",
        "/v1/imports/subscriptions",
        content=f"imsi,status\n{RANGE_IMSI},suspended\n",
        headers={"Content-Type": "text/csv"},
    )
    assert (r.json()["updated"], r.json()["unchanged"]) == (0, 1)


async def test_the_catalogue_folder_moves_states_as_the_cli_user(
    demo: Api, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder)
    subscribers = folder / "subscribers.yaml"
    text = subscribers.read_text()
    anchor = '  - imsi: "262019999999999"\n    msisdn: "491709999999"\n    account: bob\n'
    subscribers.write_text(text.replace(anchor, anchor + "    state: suspended\n"))
    assert await apply_catalog_cli(settings, str(folder)) == 0
    history = (await demo.request("GET", "/v1/subscriptions/262019999999999/history")).json()
    [move] = history["items"]
    assert (move["from"], move["to"]) == ("active", "suspended")
    assert move["by"] == f"cli:{getpass.getuser()}"
    # a move the table refuses fails the apply and writes nothing
    subscribers.write_text(text.replace(anchor, anchor + "    state: inventory\n"))
    assert await apply_catalog_cli(settings, str(folder)) == 1
    assert await _status(demo, "262019999999999", was="active") == "suspended"
    history = (await demo.request("GET", "/v1/subscriptions/262019999999999/history")).json()
    assert len(history["items"]) == 1


async def test_a_flexible_pool_grows_with_active_sims_only(demo: Api) -> None:
    """A flexible pool's size is the allowance each active SIM brings: a SIM leaving active
    (suspended, deactivated) or not yet active (inventory, test) brings nothing."""
    docs = demo_documents()
    docs["subscribers.yaml"]["pools"].append(
        {"id": "flex", "account": "bob", "kind": "flexible", "unit": "bytes", "size": 1000}
    )
    r = await demo.request("POST", "/v1/catalogue", json={"documents": docs})
    assert r.status_code == 200, r.text
    for n, state in enumerate(("active", "active", "inventory", "test")):
        r = await demo.request(
            "POST",
            "/v1/subscriptions",
            json={
                "imsi": f"26201660000000{n}",
                "account": "bob",
                "state": state,
                "plan": "iot-pool",
                "payer": {"kind": "prepaid_pool", "id": "flex"},
            },
        )
        assert r.status_code == 201, r.text

    async def size() -> int:
        return int((await demo.request("GET", "/v1/pools/flex")).json()["size"])

    assert await size() == 2000
    assert (await _move(demo, "262016600000000", "suspended")).status_code == 200
    assert await size() == 1000
    assert (await _move(demo, "262016600000002", "active")).status_code == 200
    assert (await _move(demo, "262016600000003", "active")).status_code == 200
    assert await size() == 3000


async def test_events_over_http_follow_the_state(demo: Api) -> None:
    """POST /v1/events: an inventory SIM's events are rejected; a test SIM's are counted on
    its allowance (2 events here) and never reach its pool."""
    docs = demo_documents()
    plan = next(p for p in docs["plans.yaml"]["plans"] if p["id"] == "iot-pool")
    plan["test_allowance"] = {"events": 2}
    r = await demo.request("POST", "/v1/catalogue", json={"documents": docs})
    assert r.status_code == 200, r.text
    for imsi, state in (("262016500000001", "test"), ("262016500000002", "inventory")):
        r = await demo.request(
            "POST",
            "/v1/subscriptions",
            json={
                "imsi": imsi,
                "account": "acme-iot",
                "state": state,
                "plan": "iot-pool",
                "payer": {"kind": "prepaid_pool", "id": "acme-events"},
            },
        )
        assert r.status_code == 201, r.text
    pool = f"{TENANT}:prepaid_pool:acme-events"
    store = BalanceStore(demo.redis)
    before = sum(b.used for b in await store.buckets(pool))
    events = [{"id": f"t{i}", "imsi": "262016500000001"} for i in range(3)]
    events.append({"id": "stock", "imsi": "262016500000002"})
    r = await demo.request("POST", "/v1/events", json={"events": events})
    assert r.status_code == 200, r.text
    got = {e["id"]: (e["status"], e.get("payer")) for e in r.json()["results"]}
    tag = f"{TENANT}:test:262016500000001"
    # a batch's events are charged concurrently (docs/api.md): which two of the three the
    # allowance covers is not their order in the batch
    assert sorted(got[f"t{i}"] for i in range(3)) == [
        ("charged", tag), ("charged", tag), ("insufficient", tag)
    ]  # fmt: skip
    assert got["stock"][0] == "rejected"
    assert sum(b.used for b in await store.buckets(pool)) == before
    assert {b.unit: b.used for b in await store.buckets(tag)}["events"] == 2


async def test_a_test_sim_moved_to_active_mid_session_gets_an_rar_and_its_payer(
    gateway: Gateway, demo: Api
) -> None:
    """test -> active over the API: the open session gets an RAR (ocs/network); its next
    CCR settles what the allowance granted on the allowance (never billed) and reserves on
    the SIM's wallet from then on."""
    await _with_test_allowance(demo, "never")
    await _wallet(demo)
    imsi = "262017700010004"
    await _create(demo, imsi, state="test", msisdn="491707700004")
    sid = "pgw.test;st;rar"
    cca = await gateway.send(
        build_ccr(
            sid,
            request_type=CcRequestType.INITIAL_REQUEST,
            number=0,
            imsi=imsi,
            msisdn="491707700004",
            msccs=[(1, 10_000, 0)],
        )
    )
    assert _granted(cca) == 10_000
    await asyncio.sleep(0.2)  # the session record is written after the answer
    wallet = await _wallet_available(demo.redis)
    r = await _move(demo, imsi, "active", reason="sold")
    assert r.status_code == 200, r.text
    rar = await _next_request(gateway, Command.RE_AUTH)
    assert rar.get(A.AVP_SESSION_ID) == sid
    cca = await gateway.send(
        build_ccr(
            sid,
            request_type=CcRequestType.UPDATE_REQUEST,
            number=1,
            imsi=imsi,
            msisdn="491707700004",
            msccs=[(1, 10_000, 10_000)],
        )
    )
    assert _code(cca) == ResultCode.DIAMETER_SUCCESS and _granted(cca) == 10_000
    tag = allowance_payer(TENANT, imsi)
    store = BalanceStore(demo.redis)
    assert {b.unit: b.used for b in await store.buckets(tag)}["bytes"] == 10_000
    assert await _wallet_available(demo.redis) < wallet  # reserved on the wallet now


async def _next_request(gw: Gateway, command: int) -> Message:
    while True:
        msg = await asyncio.wait_for(gw.received.get(), 10)
        if msg.command == command:
            return msg


async def test_a_re_apply_of_the_folder_keeps_the_states_the_api_set(
    demo: Api, settings: Settings, tmp_path: Path
) -> None:
    """A SIM's state is operational data: the folder re-applied without a `state` for the
    SIM keeps what the API set (a terminated SIM would otherwise make every later apply a
    refused move), and a range member keeps its own state too."""
    assert (await demo.request("POST", "/v1/subscriptions/262019999999999/terminate")).is_success
    assert (await _move(demo, RANGE_IMSI, "deactivated")).status_code == 200
    assert await apply_catalog_cli(settings, str(DEMO)) == 0
    assert await _status(demo, "262019999999999", was="active") == "terminated"
    assert await _status(demo, RANGE_IMSI, was="active") == "deactivated"
    history = (await demo.request("GET", "/v1/subscriptions/262019999999999/history")).json()
    assert [(m["from"], m["to"]) for m in history["items"]] == [("active", "terminated")]
