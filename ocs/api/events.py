"""Batch ingestion of IoT events (sensor measurements) for event-based billing.

Each event is rated like a CCR-Event (service ``event``, its units as service-specific
units) and debited all or nothing from its twin's payer through the CCR-Event's own code
path (``ocs.charging.events.debit_event``: the same record, every level priced, a wallet
debited exactly the price), with the request id ``api-event:<event id>``, session
``api-event:<event id>`` and request number 0; the outcome is kept for a week under the
event id, so a replayed event is reported ``duplicate`` and never charged twice."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Final

from fastapi import APIRouter

from ocs.api.keys import event_key
from ocs.api.models import Event, EventBatch, EventBatchResult, EventOutcome
from ocs.api.state import Api, ApiState, TopUp
from ocs.balance import BucketUnit
from ocs.charging.events import debit_event
from ocs.charging.states import TEST, TestSims, admit, allowance_payer, debit_test_event
from ocs.charging.usage import payer_key
from ocs.provisioning.catalogues import Compiled
from ocs.rating.context import ServiceKind, UsageContext
from ocs.rating.engine import resolve
from ocs.rating.errors import RatingError

router = APIRouter(prefix="/v1/events", tags=["events"])
EVENT_TTL: Final = 7 * 24 * 3600
CONCURRENCY: Final = 32
STORED: Final = frozenset(
    {"charged", "insufficient", "limited"}
)  # outcomes kept under the event id


@router.post("", response_model=EventBatchResult)
async def ingest(body: EventBatch, who: TopUp, api: Api) -> EventBatchResult:
    """Rate and debit a batch of events; one outcome per event, in order."""
    compiled = await api.catalogues.compiled(who.tenant)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(event: Event) -> EventOutcome:
        async with gate:
            return await _ingest_one(api, who.tenant, compiled, event)

    # an id twice in one batch is charged once, its repeats reported as a replayed event is
    # (``duplicate`` of a stored outcome); run concurrently, both copies said "charged"
    unique: dict[str, Event] = {}
    for event in body.events:
        unique.setdefault(event.id, event)
    done = await asyncio.gather(*(one(e) for e in unique.values()))
    outcomes = dict(zip(unique, done, strict=True))
    results: list[EventOutcome] = []
    for event in body.events:
        outcome = outcomes[event.id]
        if unique[event.id] is not event and outcome.status in STORED:
            outcome = outcome.model_copy(update={"status": "duplicate"})
        results.append(outcome)
    return EventBatchResult(results=results)


async def _ingest_one(api: ApiState, tenant: str, compiled: Compiled, event: Event) -> EventOutcome:
    key = event_key(tenant, event.id)
    seen = await api.redis.get(key)
    if seen is not None:
        previous = EventOutcome.model_validate(json.loads(seen))
        return previous.model_copy(update={"status": "duplicate"})
    if event.imsi is None and event.msisdn is None:
        return EventOutcome(id=event.id, status="rejected", reason="imsi or msisdn required")
    catalogue = compiled.catalogue
    imsi = event.imsi
    if imsi is None:
        sim = catalogue.sims_by_msisdn.get(event.msisdn or "")
        imsi = sim.imsi if sim is not None else ""
    ctx = UsageContext(
        tenant=tenant,
        imsi=imsi,
        event_time=event.time or datetime.now(UTC),
        service=ServiceKind.EVENT,
        quantity=event.units,
        msisdn=event.msisdn,
        rating_group=event.rating_group,
        service_id=event.service_id,
    )
    try:
        resolution = resolve(catalogue, ctx)
        state = admit(catalogue.sims_by_imsi[resolution.imsi])  # docs/sim-states.md
    except RatingError as exc:
        return EventOutcome(id=event.id, status="rejected", reason=str(exc)[:200])
    payer = payer_key(tenant, resolution.payer)
    session = f"api-event:{event.id}"
    msisdn = event.msisdn or (sim.msisdn if (sim := catalogue.sims_by_imsi.get(imsi)) else None)
    if state == TEST:
        status = await debit_test_event(
            TestSims(api.store),
            catalogue,
            resolution,
            unit=BucketUnit.EVENTS,
            units=event.units,
            request_id=session,
            now_ms=int(time.time() * 1000),
            session=session,
            n=0,
            rg=event.rating_group or 0,
            msisdn=msisdn,
        )
        if status is not None:
            tag = allowance_payer(tenant, resolution.imsi)
            outcome = EventOutcome(
                id=event.id,
                status="charged" if status == "ok" else "insufficient",
                payer=tag,
                units=event.units if status == "ok" else 0,
            )
            await api.redis.set(key, outcome.model_dump_json(), ex=EVENT_TTL)
            return outcome
        session += ":active"
    result, _ = await debit_event(
        api.store,
        catalogue,
        api.counters,
        resolution,
        payer=payer,
        unit=BucketUnit.EVENTS,
        units=event.units,
        request_id=session,
        now_ms=int(time.time() * 1000),
        session=session,
        n=0,
        rg=event.rating_group or 0,
        msisdn=msisdn,
        extra={"event": event.id},
    )
    if result.status == "insufficient":
        outcome = EventOutcome(id=event.id, status="insufficient", payer=payer)
    elif result.status == "limited":  # a per-SIM cap refused it (docs/limits.md)
        outcome = EventOutcome(id=event.id, status="limited", payer=payer)
    else:
        outcome = EventOutcome(
            id=event.id, status="charged", payer=payer, units=result.units, amount=result.cost
        )
    await api.redis.set(key, outcome.model_dump_json(), ex=EVENT_TTL)
    return outcome
