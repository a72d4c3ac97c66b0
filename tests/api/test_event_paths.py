"""Events posted over HTTP and events sent as CCR-Event take one code path
(``ocs.charging.events.debit_event``): the same usage record, every level priced, and the same
debit (issue 12: HTTP events were recorded without ``levels``, so no invoice saw them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ocs.balance import BalanceStore
from ocs.diameter.constants import RequestedAction
from ocs.redis_client import RedisClient
from tests.api.conftest import Api, Gateway
from tests.charging.ccr import build_ccr

IMSI = "262010000000007"  # demo: events paid by the prepaid pool acme-events
PAYER = "demo:prepaid_pool:acme-events"
WHEN = datetime(2026, 12, 3, 10, 15, tzinfo=UTC)


async def test_http_and_ccr_event_write_the_same_record(
    demo: Api, gateway: Gateway, redis: RedisClient
) -> None:
    ccr = build_ccr(
        "pgw.test;ev;1", request_type=4, number=0, imsi=IMSI, msccs=[(1, 3, 0)], apn=None,
        requested_action=int(RequestedAction.DIRECT_DEBITING), units=True, when=WHEN,
    )  # fmt: skip
    assert (await gateway.send(ccr)).get(268) == 2001
    event = {"id": "ev-1", "imsi": IMSI, "units": 3, "rating_group": 1,
             "time": WHEN.isoformat()}  # fmt: skip
    r = await demo.request("POST", "/v1/events", who="topup", json={"events": [event]})
    assert r.status_code == 200, r.text
    (outcome,) = r.json()["results"]
    assert (outcome["status"], outcome["units"]) == ("charged", 3)

    store = BalanceStore(redis)
    try:
        usage = [rec for rec in await store.records(PAYER) if rec.fields["kind"] == "usage"]
    finally:
        await store.batch.close()
    assert len(usage) == 2
    by_ccr, by_http = (json.loads(rec.fields["ctx"]) for rec in usage)
    assert by_http.pop("event") == "ev-1"
    assert by_http["session"] == "api-event:ev-1" and by_http["n"] == 0
    for ctx in (by_ccr, by_http):
        for key in ("session", "n", "msisdn"):
            ctx.pop(key)
    assert by_http == by_ccr
    assert [lv["amount"] for lv in by_http["levels"]] == [2]  # 3 events at 0.5 ct, rounded up
    assert [rec.fields["units"] for rec in usage] == ["3", "3"]
    assert [rec.alloc for rec in usage] == [[("acme-events", 3)], [("acme-events", 3)]]
