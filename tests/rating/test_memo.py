"""Caching never changes a price: the memoised `resolve`/`rate` against `resolve_uncached`
(no memo, full time-zone conversion, plan versions and bands by their definitions) on random
usage contexts; the local-time cache against `astimezone`; the loader's shortcuts against
the definitions they replace; and the memo's life cycle (one per catalogue)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from ipaddress import ip_address
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocs.rating import (
    Catalogue,
    CatalogueHolder,
    RatingError,
    RatType,
    ServiceKind,
    Slice,
    UsageContext,
    engine,
    rate,
    resolve,
)
from ocs.rating.clock import LocalClock
from ocs.rating.engine import rate_uncached, resolve_uncached
from ocs.rating.filters import ShadowProbe, probe_shadows, shadows
from ocs.rating.models import FilterSpec

from .helpers import DEMO

DEMO_IMSIS = [
    "262019999999999",
    "262010000000042",
    "262010000000999",
    "262010000005000",
    "262010000100000",
    "262010000000001",
    "999999999999999",
]
NETWORKS = [(None, None), ("262", "01"), ("262", "02"), ("208", "01"), ("310", "260"),
            ("232", "03"), ("999", "99")]  # fmt: skip
OFFSETS = [UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5, minutes=-30))]
START = datetime(2024, 6, 1, tzinfo=UTC)
MONDAY = datetime(2025, 3, 10, 9, tzinfo=UTC)


@st.composite
def contexts(draw: st.DrawFn) -> UsageContext:
    mcc, mnc = draw(st.sampled_from(NETWORKS))
    seconds = draw(st.integers(0, 3 * 366 * 86400))
    micros = draw(st.sampled_from([0, 1, 999_999]))
    at = START + timedelta(seconds=seconds, microseconds=micros)
    return UsageContext(
        tenant="demo",
        imsi=draw(st.sampled_from(DEMO_IMSIS)),
        event_time=at.astimezone(draw(st.sampled_from(OFFSETS))),
        service=draw(st.sampled_from(list(ServiceKind))),
        quantity=draw(st.integers(0, 50_000_000)),
        apn=draw(st.sampled_from([None, "internet.demo", "IOT.demo", "iot.demo", "other"])),
        rating_group=draw(st.sampled_from([None, 1, 10, 11, 20, 30])),
        service_id=draw(st.sampled_from([None, 1, 7])),
        mcc=mcc,
        mnc=mnc,
        rat_type=draw(st.sampled_from(list(RatType))),
        destination_ip=draw(st.sampled_from([None, ip_address("10.1.2.3"), ip_address("8.8.8.8")])),
        domain=draw(st.sampled_from([None, "telemetry.acme.example", "example.org"])),
        slice=draw(st.sampled_from([None, Slice(1, 0xA1), Slice(2)])),
        qos_class=draw(st.sampled_from([None, 5, 9])),
    )


def outcome(fn: Any, *args: Any) -> object:
    try:
        return fn(*args)
    except RatingError as exc:
        return (type(exc), str(exc))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ctxs=st.lists(contexts(), min_size=1, max_size=8), counter=st.integers(0, 10**9))
def test_memoised_equals_uncached(demo: Catalogue, ctxs: list[UsageContext], counter: int) -> None:
    for ctx in ctxs * 2:  # the second round hits the memo
        expected = outcome(resolve_uncached, demo, ctx)
        assert outcome(resolve, demo, ctx) == expected
        if isinstance(expected, tuple) and not isinstance(expected, engine.Resolution):
            continue
        counters = dict.fromkeys(expected.counter_keys(), counter)  # type: ignore[union-attr]
        assert rate(demo, ctx, counters) == rate_uncached(demo, ctx, counters)


def test_memo_hit_returns_the_same_resolution(demo: Catalogue) -> None:
    ctx = UsageContext(tenant="demo", imsi="262019999999999", event_time=MONDAY, apn="x")
    first = resolve(demo, ctx)
    assert resolve(demo, ctx) is first
    assert first == resolve_uncached(demo, ctx)


def test_memo_belongs_to_the_catalogue_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    holder = CatalogueHolder.from_path(DEMO)
    old = holder.current
    ctx = UsageContext(tenant="demo", imsi="262019999999999", event_time=MONDAY, apn="x")
    resolve(old, ctx)
    assert old.memo
    holder.reload()
    assert holder.current is not old
    assert not holder.current.memo  # a reload starts with an empty memo
    assert resolve(holder.current, ctx) == resolve(old, ctx)

    monkeypatch.setattr(engine, "MEMO_LIMIT", 3)
    for hour in range(10):
        resolve(old, UsageContext(tenant="demo", imsi="262019999999999",
                                  event_time=MONDAY + timedelta(hours=hour), apn="x"))  # fmt: skip
        assert len(old.memo) <= 3


ZONES = [
    "Europe/Berlin",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Europe/Dublin",
    "Pacific/Chatham",
    "America/Sao_Paulo",
    "UTC",
    "Africa/Monrovia",
]


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(ZONES),
    at=st.datetimes(
        min_value=datetime(1850, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)
    ),
)
def test_local_clock_equals_astimezone(name: str, at: datetime) -> None:
    clock = LocalClock(ZoneInfo(name))
    for instant in (at, at + timedelta(minutes=30), at - timedelta(microseconds=1)):
        local = instant.astimezone(clock.tz)
        assert clock.weekday_minute(instant) == (local.weekday(), local.hour * 60 + local.minute)


@pytest.mark.parametrize("name", ["Europe/Berlin", "Australia/Lord_Howe", "America/St_Johns"])
def test_local_clock_around_every_transition_of_a_year(name: str) -> None:
    clock = LocalClock(ZoneInfo(name))
    at = datetime(2025, 1, 1, tzinfo=UTC)
    while at < datetime(2026, 1, 1, tzinfo=UTC):
        local = at.astimezone(clock.tz)
        assert clock.weekday_minute(at) == (local.weekday(), local.hour * 60 + local.minute)
        at += timedelta(minutes=7, seconds=13)


def test_plan_timeline_equals_definition(demo: Catalogue) -> None:
    histories = [t.plans for s in demo.sims_by_imsi.values() for t in s.twins]
    histories += [u.plans for levels in demo.upper_levels.values() for u in levels]
    instants = sorted({c for h in histories for c in h.cuts} | {c for p in demo.plans.values()
                                                                for c in p.starts})  # fmt: skip
    probes = [p + d for p in instants for d in (timedelta(microseconds=-1), timedelta(0))]
    for history in histories:
        for at in probes:
            assert history.version_at(at) is history.version_by_definition(at)


FILTER_FIELDS: dict[str, Any] = {
    "apn": st.lists(st.sampled_from(["a", "b", "c"]), max_size=2),
    "rat": st.lists(st.sampled_from(["NR", "EUTRAN"]), max_size=2),
    "rating_group": st.lists(st.integers(1, 3), max_size=2),
    "country": st.lists(st.sampled_from(["DE", "FR"]), max_size=2),
}


@st.composite
def filters(draw: st.DrawFn, depth: int = 1) -> FilterSpec:
    fields = {k: draw(v) for k, v in FILTER_FIELDS.items() if draw(st.booleans())}
    if depth and draw(st.integers(0, 3)) == 0:
        fields["not"] = draw(filters(depth=depth - 1))
    if depth and draw(st.integers(0, 3)) == 0:
        fields["any"] = draw(st.lists(filters(depth=depth - 1), max_size=2))
    return FilterSpec.model_validate(fields)


@settings(max_examples=400, deadline=None)
@given(earlier=filters(), later=filters())
def test_shadow_probe_equals_shadows(earlier: FilterSpec, later: FilterSpec) -> None:
    for first, second in ((earlier, later), (later, earlier), (earlier, earlier)):
        probed = probe_shadows(ShadowProbe.of(first), ShadowProbe.of(second))
        assert probed == shadows(first, second)
