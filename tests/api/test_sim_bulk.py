"""Bulk SIM state moves (POST /v1/subscriptions/bulk/state, docs/sim-states.md) over real
HTTP, a real Redis and, for charging, real CCRs through a real Diameter server: SIMs named
by IMSI, ICCID and MSISDN or chosen by a selector, each answered on its own (moved,
unchanged, refused with both states, unknown), in one catalogue revision, journaled per SIM,
idempotent with an Idempotency-Key, bounded, tenant-bound; charging refuses the barred
SIMs as soon as the answer is out while the others go on."""

from __future__ import annotations

import json
from typing import Any

from ocs.api.auth import digest, token_id
from ocs.diameter.constants import ResultCode
from ocs.provisioning.keys import revision_key, sim_history_key, state_moves_key
from tests.api.conftest import TENANT, Api, Gateway
from tests.api.test_sim_states import _ccr, _code, _move, _wallet

RANGE_FIRST = 262010000000000  # the demo's acme-fleet: 1,000 members
BOB = "262019999999999"
PATH = "/v1/subscriptions/bulk/state"


async def _sims(api: Api, states: dict[str, str]) -> None:
    """SIMs of Bob's on a wallet, each with an ICCID and MSISDN derived from its IMSI."""
    await _wallet(api)
    subs = [
        {"imsi": imsi, "account": "bob", "plan": "consumer-data", "state": state,
         "iccid": "8949" + imsi, "msisdn": "49" + imsi[-10:],
         "payer": {"kind": "wallet", "id": "w-states"}}
        for imsi, state in states.items()
    ]  # fmt: skip
    r = await api.request("POST", "/v1/subscriptions/bulk", json={"subscriptions": subs})
    assert r.status_code == 201, r.text


async def _revision(api: Api) -> int:
    return int(await api.redis.get(revision_key(TENANT)))


async def test_each_sim_answered_on_its_own_in_one_revision(demo: Api) -> None:
    sims = {f"2620155000000{n:02d}": s for n, s in enumerate(
        ["active", "active", "active", "inventory", "suspended"])}  # fmt: skip
    await _sims(demo, sims)
    a, b, c, stock, paused = sims
    r = await _move(demo, c, "terminated")
    assert r.status_code == 200
    before = await _revision(demo)
    body = {
        "state": "suspended",
        "reason": "fleet paused",
        "imsis": [a, c, stock, "262019999990000", a],
        "iccids": ["8949" + b],
        "msisdns": ["49" + paused[-10:], "4915000000000"],
    }
    r = await demo.request("POST", PATH, json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["revision"] == before + 1 == await _revision(demo)  # one change
    assert answer["counts"] == {"moved": 2, "unchanged": 2, "refused": 2, "unknown": 2}
    assert answer["results"] == [
        {"imsi": a, "outcome": "moved", "from": "active", "to": "suspended"},
        {"imsi": c, "outcome": "refused", "from": "terminated", "to": "suspended",
         "reason": "cannot move from terminated to suspended (from terminated: none (final))"},
        {"imsi": stock, "outcome": "refused", "from": "inventory", "to": "suspended",
         "reason": "cannot move from inventory to suspended "
                   "(from inventory: active, terminated, test)"},
        {"imsi": "262019999990000", "outcome": "unknown"},
        {"imsi": a, "outcome": "unchanged", "reason": "named twice"},
        {"iccid": "8949" + b, "outcome": "moved", "imsi": b, "from": "active",
         "to": "suspended"},
        {"msisdn": "49" + paused[-10:], "outcome": "unchanged", "imsi": paused,
         "reason": "already suspended"},
        {"msisdn": "4915000000000", "outcome": "unknown"},
    ]  # fmt: skip
    for imsi, state in ((a, "suspended"), (b, "suspended"), (c, "terminated"),
                        (stock, "inventory")):  # fmt: skip
        assert (await demo.request("GET", f"/v1/subscriptions/{imsi}")).json()["status"] == state
    who = f"token:{token_id(digest(demo.tokens['admin']))}"
    for imsi in (a, b):  # the history of each moved SIM, as a single move writes it
        [raw] = await demo.redis.lrange(sim_history_key(TENANT, imsi), 0, -1)
        move = json.loads(raw)
        assert (move["from"], move["to"], move["by"], move["reason"], move["revision"]) == (
            "active", "suspended", who, "fleet paused", before + 1)  # fmt: skip
    assert await demo.redis.lrange(sim_history_key(TENANT, stock), 0, -1) == []
    # nothing at all to move: no change, no revision
    r = await demo.request("POST", PATH, json={"state": "suspended", "imsis": [a, b]})
    assert r.json()["revision"] is None and r.json()["counts"]["unchanged"] == 2
    assert await _revision(demo) == before + 1


async def test_a_retry_with_the_same_idempotency_key_moves_nothing_again(demo: Api) -> None:
    sims = {f"2620155100000{n:02d}": "active" for n in range(3)}
    await _sims(demo, sims)
    body = {"state": "deactivated", "imsis": list(sims)}
    key = {"Idempotency-Key": "bulk-deactivate-1"}
    first = await demo.request("POST", PATH, json=body, headers=key)
    assert first.status_code == 200 and first.json()["counts"]["moved"] == 3
    moves = await demo.redis.xlen(state_moves_key(TENANT))
    again = await demo.request("POST", PATH, json=body, headers=key)
    assert again.json() == first.json()  # the first answer, "moved" and all
    assert await demo.redis.xlen(state_moves_key(TENANT)) == moves
    assert await _revision(demo) == first.json()["revision"]
    other = await demo.request("POST", PATH, json={**body, "state": "terminated"}, headers=key)
    assert other.status_code == 422 and "Idempotency-Key" in other.text
    # without the key, a retry is harmless too: each SIM is already there
    plain = await demo.request("POST", PATH, json=body)
    assert plain.json()["counts"] == {"moved": 0, "unchanged": 3, "refused": 0, "unknown": 0}


async def test_bad_requests_are_problems_and_tenants_stay_apart(demo: Api) -> None:
    many = [f"{262010000000000 + n}" for n in range(10_001)]
    cases: list[dict[str, Any]] = [
        {"state": "suspended"},  # nothing named
        {"state": "suspended", "imsis": [BOB], "select": {"account": "bob"}},  # both
        {"state": "paused", "imsis": [BOB]},
        {"state": "suspended", "imsis": ["12ab"]},
        {"state": "suspended", "iccids": ["123"]},
        {"state": "suspended", "imsis": many},
        {"state": "suspended", "imsis": many[:6000], "msisdns": many[:5000]},
        {"state": "suspended", "select": {}},
        {"state": "suspended", "select": {"colour": "red"}},
        {"state": "suspended", "imsis": [BOB], "reason": "x" * 201},
    ]
    for body in cases:
        r = await demo.request("POST", PATH, json=body)
        assert r.status_code == 422, (body, r.text[:300])
        assert r.headers["content-type"] == "application/problem+json"
    r = await demo.request("POST", PATH, who="read", json={"state": "suspended", "imsis": [BOB]})
    assert r.status_code == 403
    # another tenant names our SIMs, or selects by our account: nothing of ours is moved
    r = await demo.request("POST", PATH, who="other", json={"state": "suspended", "imsis": [BOB]})
    assert r.status_code in (200, 404), r.text  # 404: that tenant has no catalogue at all
    if r.status_code == 200:
        assert r.json()["results"] == [{"imsi": BOB, "outcome": "unknown"}]
    assert (await demo.request("GET", f"/v1/subscriptions/{BOB}")).json()["status"] == "active"


async def test_a_selected_fleet_is_refused_by_charging_right_after_the_answer(
    gateway: Gateway, demo: Api
) -> None:
    """The demo's acme-iot fleet (its 1,000-member range and the vehicle SIM; more moves
    than one journal chunk) suspended by a selector: the next CCR of a member is 4010, Bob
    (another account) is still charged, every member has its history row."""
    await _wallet(demo)
    member = str(RANGE_FIRST + 7)
    cca = await _ccr(gateway, "pgw.test;bulk;before", 0, member, 10_000, 0)
    assert _code(cca) == ResultCode.DIAMETER_SUCCESS
    moves = await demo.redis.xlen(state_moves_key(TENANT))
    body = {"state": "suspended", "reason": "unpaid", "select": {"account": "acme-iot",
            "status": "active"}}  # fmt: skip
    r = await demo.request("POST", PATH, json=body)
    assert r.status_code == 200, r.text
    counts = r.json()["counts"]
    assert counts["moved"] >= 1_001 and counts["refused"] == counts["unknown"] == 0
    cca = await _ccr(gateway, "pgw.test;bulk;after", 0, member, 10_000, 0)
    assert _code(cca) == ResultCode.DIAMETER_END_USER_SERVICE_DENIED
    cca = await _ccr(gateway, "pgw.test;bulk;bob", 0, BOB, 10_000, 0)
    assert _code(cca) == ResultCode.DIAMETER_SUCCESS
    assert await demo.redis.xlen(state_moves_key(TENANT)) == moves + counts["moved"]
    for imsi in (str(RANGE_FIRST), str(RANGE_FIRST + 999)):
        [raw] = await demo.redis.lrange(sim_history_key(TENANT, imsi), 0, -1)
        assert (json.loads(raw)["to"], json.loads(raw)["reason"]) == ("suspended", "unpaid")
    listed = await demo.request(
        "GET", "/v1/subscriptions", params={"account": "acme-iot", "status": "active"}
    )
    assert listed.json()["total"] == 0
    # and back: the members drop their own states (the range's state is active again)
    body = {"state": "active", "select": {"account": "acme-iot", "status": "suspended"}}
    r = await demo.request("POST", PATH, json=body)
    assert r.json()["counts"]["moved"] == counts["moved"]
    state = json.loads(await demo.redis.get(f"ocs:api:{{api:{TENANT}}}:state"))
    assert all(not item.get("states") for item in state["sim_ranges"].values())
    cca = await _ccr(gateway, "pgw.test;bulk;again", 0, member, 10_000, 0)
    assert _code(cca) == ResultCode.DIAMETER_SUCCESS
