"""``ChargeRequest.priced`` is ``dataclasses.replace`` of the five fields pricing sets, built
by hand for the real-time path: a field added to the request must not be dropped by it."""

from __future__ import annotations

from dataclasses import fields, replace

from ocs.balance.models import BucketUnit, ChargeRequest, LevelCharge, Rate


def test_priced_keeps_every_other_field() -> None:
    request = ChargeRequest(
        request_id="s;1:3:10",
        member="s;1|10",
        unit=BucketUnit.MONEY,
        now_ms=1_700_000_000_000,
        used=5,
        want=7,
        min_grant=2,
        rate=Rate(3, 1000),
        deadline_ms=1_700_000_660_000,
        mode="debit",
        context={"a": 1},
        context_json='{"old":true}',
        price=11,
        counters=(("p|c", 1, 2),),
        limits=("imsi|*|data_day", 100, "d2026-12-06", 1, "block"),
        root="t:wallet:root",
        levels=(LevelCharge("t:wallet:up", True),),
    )
    defaults = ChargeRequest("r", "m", BucketUnit.BYTES, 0)
    for f in fields(ChargeRequest):  # every field above differs from its default
        assert getattr(request, f.name) != getattr(defaults, f.name), f.name
    levels = (LevelCharge("t:prepaid_pool:p", False, Rate(1, 2), 9, 1),)
    priced = request.priced(42, (("q|d", 0, 5),), '{"new":true}', "t:wallet:r2", levels)
    assert priced == replace(
        request,
        price=42,
        counters=(("q|d", 0, 5),),
        context_json='{"new":true}',
        root="t:wallet:r2",
        levels=levels,
    )
