"""The lifecycle over the HTTP API: the pool view shows the period and the auto top-off in
force; ``PUT .../auto-renewal`` sets the auto top-off ``charge.lua`` applies."""

from __future__ import annotations

import time

from ocs.balance import BalanceStore, ChargeRequest
from ocs.balance.models import BucketUnit
from tests.api.conftest import Api

POOL = "demo:prepaid_pool:acme-pool"


async def _reserve(store: BalanceStore, rid: str, want: int, used: int = 0) -> int:
    result = await store.charge(
        POOL,
        ChargeRequest(rid, "s|1", BucketUnit.BYTES, int(time.time() * 1000), used, want),
    )
    return result.granted


async def test_auto_top_off_set_over_the_api_is_applied_and_shown(demo: Api) -> None:
    pool = (await demo.request("GET", "/v1/pools/acme-pool")).json()
    life = pool["lifecycle"]
    assert life["top_offs"] == 0 and life["auto_top_off"] is None
    assert life["suspended"] is False and life["period_end"] > 0
    body = {"enabled": True, "addon": "acme-topoff-1gb", "max_per_period": 1}
    r = await demo.request("PUT", "/v1/pools/acme-pool/auto-renewal", json=body)
    assert r.status_code == 200, r.text
    pool = (await demo.request("GET", "/v1/pools/acme-pool")).json()
    assert pool["lifecycle"]["auto_top_off"] == {
        "addon": "acme-topoff-1gb",
        "cap": 1,
        "threshold_percent": 0,
        "source": "api",
    }
    # the 10 GB pool used up: one 1 GB add-on is bought inside the next reservation
    store = BalanceStore(demo.redis)
    assert await _reserve(store, "r1", 10_000_000_000) == 10_000_000_000
    assert await _reserve(store, "r2", 500_000_000, used=10_000_000_000) == 500_000_000
    pool = (await demo.request("GET", "/v1/pools/acme-pool")).json()
    assert pool["size"] == 11_000_000_000 and pool["lifecycle"]["top_offs"] == 1
    # disabled: the next shortfall is the normal exhaustion
    body = {"enabled": False}
    r = await demo.request("PUT", "/v1/pools/acme-pool/auto-renewal", json=body)
    assert r.status_code == 200, r.text
    pool = (await demo.request("GET", "/v1/pools/acme-pool")).json()
    assert pool["lifecycle"]["auto_top_off"] is None
