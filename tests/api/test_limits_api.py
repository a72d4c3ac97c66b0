"""``/v1/subscriptions/{imsi}/limits`` (docs/limits.md) against a real API, Redis and a
served Diameter node: a cap set over HTTP on a SIM of a range is enforced on the next CCR
(4012 at the cap, the other SIMs of the pool go on), the subscription view shows used and
remaining units, and bad input gets a problem document."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Avp
from ocs.diameter.constants import Command, ResultCode
from tests.api.conftest import Api, Gateway
from tests.charging.ccr import build_ccr
from tests.charging.helpers import granted, msccs

RANGE_SIM = "262010000000042"  # one of the demo's 1,000-SIM range
OTHER_SIM = "262010000000043"
CAP = 10_000_000
SUCCESS = int(ResultCode.DIAMETER_SUCCESS)
LIMIT = int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)
_n = itertools.count(1)


class Session:
    def __init__(self, gateway: Gateway, imsi: str) -> None:
        self.gateway, self.imsi = gateway, imsi
        self.sid = f"pgw.test;limits-api;{next(_n)}"
        self.n = 0

    async def send(self, kind: int, want: int, used: int) -> Avp:
        ccr = build_ccr(
            self.sid, request_type=kind, number=self.n, imsi=self.imsi, msccs=[(1, want, used)]
        )
        self.n += 1
        return msccs(await self.gateway.send(ccr))[1]


def code(mscc: Avp) -> int:
    return int(mscc.get(A.AVP_RESULT_CODE, 0))


async def caps_of(demo: Api, imsi: str) -> list[dict[str, Any]]:
    r = await demo.request("GET", f"/v1/subscriptions/{imsi}", who="read")
    assert r.status_code == 200, r.text
    caps: list[dict[str, Any]] = r.json()["limits"]
    return caps


async def test_a_monthly_cap_set_over_http_blocks_one_sim_of_a_range(
    demo: Api, gateway: Gateway
) -> None:
    s = Session(gateway, RANGE_SIM)
    first = await s.send(1, 6_000_000, 0)  # a session open before the cap is set
    assert (code(first), granted(first)) == (SUCCESS, 6_000_000)

    r = await demo.request(
        "PUT", f"/v1/subscriptions/{RANGE_SIM}/limits", json={"data_month_bytes": CAP}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "subscription"
    assert body["limits"]["action"] == "block"
    [cap] = body["caps"]
    assert (cap["twin"], cap["cap"], cap["limit"], cap["action"]) == (
        None,
        "data_month_bytes",
        CAP,
        "block",
    )
    rar = await asyncio.wait_for(gateway.received.get(), 10)  # the open session re-authorises
    assert rar.command == Command.RE_AUTH

    # the open grant was made before the cap: the next grant counts it as used from here on
    last = await s.send(2, 6_000_000, 6_000_000)
    assert (code(last), granted(last)) == (SUCCESS, 4_000_000)
    refused = await s.send(2, 6_000_000, 4_000_000)
    assert code(refused) == LIMIT
    other = await Session(gateway, OTHER_SIM).send(1, 6_000_000, 0)
    assert (code(other), granted(other)) == (SUCCESS, 6_000_000)

    [view] = await caps_of(demo, RANGE_SIM)
    assert (view["used"], view["reserved"], view["remaining"]) == (CAP, 0, 0)
    assert await caps_of(demo, OTHER_SIM) == []

    r = await demo.request("GET", f"/v1/subscriptions/{RANGE_SIM}/limits", who="read")
    assert r.status_code == 200 and r.json()["caps"][0]["used"] == CAP

    # removed: the SIM charges again
    r = await demo.request("DELETE", f"/v1/subscriptions/{RANGE_SIM}/limits")
    assert r.status_code == 204
    await asyncio.wait_for(gateway.received.get(), 10)
    lifted = await s.send(2, 1_000_000, 0)
    assert (code(lifted), granted(lifted)) == (SUCCESS, 1_000_000)
    r = await demo.request("GET", f"/v1/subscriptions/{RANGE_SIM}/limits", who="read")
    assert r.json() == {"imsi": RANGE_SIM, "source": "none", "limits": None, "caps": []}


async def test_per_twin_caps_and_actions_are_kept_as_given(demo: Api) -> None:
    body = {
        "twins": {"events": {"events_day": 100, "action": "notify"}},
        "data_day_bytes": 5_000_000,
        "action": "redirect",
        "redirect_url": "https://portal.example/limit",
    }
    r = await demo.request("PUT", f"/v1/subscriptions/{RANGE_SIM}/limits", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["limits"]["twins"]["events"]["events_day"] == 100
    caps = {(c["twin"], c["cap"]): c for c in got["caps"]}
    assert set(caps) == {(None, "data_day_bytes"), ("events", "events_day")}
    assert caps[(None, "data_day_bytes")]["action"] == "redirect"
    assert caps[("events", "events_day")]["action"] == "notify"
    assert len(caps[(None, "data_day_bytes")]["period"]) == 10  # the local day, YYYY-MM-DD


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({}, 422, "at least one cap"),
        ({"data_month_bytes": -1}, 422, "greater than or equal"),
        ({"data_month_bytes": "10"}, 422, "integer"),
        ({"data_month_bytes": 10.5}, 422, "integer"),
        ({"data_month_bytes": 10**16}, 422, "less than or equal"),
        ({"data_month_bytes": 1, "action": "redirect"}, 422, "redirect_url"),
        ({"data_month_bytes": 1, "action": "restrict"}, 422, "filter_ids"),
        ({"data_month_bytes": 1, "action": "explode"}, 422, "action"),
        ({"data_month_bytes": 1, "colour": "red"}, 422, "colour"),
        ({"twins": {"no-such-twin": {"sms_day": 1}}}, 422, "no twin"),
        ({"twins": {"data": {}}}, 422, "at least one cap"),
    ],
)
async def test_bad_limits_get_a_problem_document(
    demo: Api, body: dict[str, Any], status: int, words: str
) -> None:
    r = await demo.request("PUT", f"/v1/subscriptions/{RANGE_SIM}/limits", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert words in r.text


async def test_unknown_sims_and_scopes_are_refused(demo: Api) -> None:
    r = await demo.request("PUT", "/v1/subscriptions/262019000000000/limits", json={"sms_day": 1})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    r = await demo.request(
        "PUT", f"/v1/subscriptions/{RANGE_SIM}/limits", who="read", json={"sms_day": 1}
    )
    assert r.status_code == 403
    r = await demo.request("DELETE", f"/v1/subscriptions/{RANGE_SIM}/limits", who="topup")
    assert r.status_code == 403
