"""Webhook subscriptions (docs/webhooks.md), a hub resource in the TM Forum style: a tenant
registers a callback URL for event types, optionally filtered by payer or SIM, and reads
each subscription's delivery log and dead letters. The secret is shown once, at creation."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Response
from pydantic import Field, StringConstraints, model_validator

from ocs.api.models import Digits, Id, Model
from ocs.api.problems import Problem, not_found
from ocs.api.state import Admin, Api, Reader
from ocs.events.dead import MAX_SELECT, DeadLetters
from ocs.events.metrics import webhook_metrics
from ocs.events.model import MAX_EVENTS, MAX_URL, SECRET_MAX, SECRET_MIN, SubscriptionError
from ocs.events.model import Subscription as Sub
from ocs.events.subscriptions import Subscriptions

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
MAX_FILTER: Final = 1000
SubId = Annotated[str, StringConstraints(pattern=r"^wh_[0-9a-f]{16}$")]
EventType = Annotated[str, StringConstraints(min_length=1, max_length=64)]
EntryId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")]
"""A dead letter's ``entry`` (its Redis stream id, as the list answers it)."""


class WebhookFilter(Model):
    """Only the events of these payers (pool or wallet ids: a pool is the group of SIMs
    sharing it) and of these SIMs (IMSI); empty: every subject."""

    payers: list[Id] = Field(default_factory=list, max_length=MAX_FILTER)
    imsis: list[Digits] = Field(default_factory=list, max_length=MAX_FILTER)


class WebhookCreate(Model):
    url: Annotated[str, StringConstraints(min_length=8, max_length=MAX_URL)]
    events: list[EventType] = Field(min_length=1, max_length=MAX_EVENTS)
    secret: (
        Annotated[str, StringConstraints(min_length=SECRET_MIN, max_length=SECRET_MAX)] | None
    ) = None
    filter: WebhookFilter = Field(default_factory=WebhookFilter)


class WebhookView(Model):
    id: str
    url: str
    events: list[str]
    filter: WebhookFilter
    created_ms: int


class WebhookCreated(WebhookView):
    secret: str  # HMAC-SHA256 key of Ocs-Signature; shown only here


class Delivery(Model):
    entry: str
    event_id: str
    type: str
    attempt: int
    outcome: str  # delivered | retried | failed
    status: int | None = None  # the receiver's HTTP status (0: none)
    error: str = ""
    ms: int | None = None
    at_ms: int | None = None
    event: dict[str, Any] | None = None  # dead letters: the body that was not delivered


def _view(sub: Sub) -> dict[str, Any]:
    return {
        "id": sub.id,
        "url": sub.url,
        "events": list(sub.events),
        "filter": WebhookFilter(payers=list(sub.payers), imsis=list(sub.imsis)),
        "created_ms": sub.created_ms,
    }


@router.post("", status_code=201, response_model=WebhookCreated)
async def create_webhook(body: WebhookCreate, who: Admin, api: Api) -> WebhookCreated:
    """Subscribe ``url`` to ``events`` (or ``["*"]``). It receives the events written from
    now on, each POSTed with ``Ocs-Event-Id`` and ``Ocs-Signature`` (docs/webhooks.md)."""
    if body.filter.payers:
        catalogue = (await api.catalogues.compiled(who.tenant)).catalogue
        known = set(catalogue.pools) | set(catalogue.wallets) | set(catalogue.contracts)
        unknown = sorted(set(body.filter.payers) - known)
        if unknown:
            raise not_found("payer", unknown[0])
    try:
        sub = await Subscriptions(api.redis).create(
            who.tenant,
            body.url,
            body.events,
            secret=body.secret,
            payers=body.filter.payers,
            imsis=body.filter.imsis,
            private_targets=api.settings.webhook_private_targets,
        )
    except SubscriptionError as exc:
        status = 409 if exc.field == "subscriptions" else 422
        raise Problem(status, "invalid-webhook", "Webhook refused", str(exc)) from None
    return WebhookCreated(**_view(sub), secret=sub.secret)


@router.get("", response_model=list[WebhookView])
async def list_webhooks(who: Reader, api: Api) -> list[WebhookView]:
    return [WebhookView(**_view(s)) for s in await Subscriptions(api.redis).all(who.tenant)]


class DeadLetterSummary(Model):
    webhook: str
    count: int  # dead letters kept (about the last 10,000)
    oldest_ms: int | None  # when the oldest kept one was dead-lettered
    newest_ms: int | None
    queue: int  # redeliveries asked for, not yet delivered (or dead again)


@router.get("/dead-letters", response_model=list[DeadLetterSummary])
async def dead_letter_summary(who: Reader, api: Api) -> list[DeadLetterSummary]:
    """The tenant's dead letters, per subscription: how many, since when, how many
    redeliveries wait (docs/webhooks.md)."""
    dead = DeadLetters(api.redis)
    subs = await Subscriptions(api.redis).all(who.tenant)
    return [DeadLetterSummary(webhook=s.id, **await dead.summary(who.tenant, s.id)) for s in subs]


async def _sub(api: Api, tenant: str, sub_id: str) -> Sub:
    sub = await Subscriptions(api.redis).get(tenant, sub_id)
    if sub is None:
        raise not_found("webhook", sub_id)
    return sub


@router.get("/{sub_id}", response_model=WebhookView)
async def get_webhook(sub_id: SubId, who: Reader, api: Api) -> WebhookView:
    return WebhookView(**_view(await _sub(api, who.tenant, sub_id)))


@router.delete("/{sub_id}", status_code=204)
async def delete_webhook(sub_id: SubId, who: Admin, api: Api) -> Response:
    if not await Subscriptions(api.redis).delete(who.tenant, sub_id):
        raise not_found("webhook", sub_id)
    return Response(status_code=204)


Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("/{sub_id}/deliveries", response_model=list[Delivery])
async def list_deliveries(
    sub_id: SubId, who: Reader, api: Api, limit: Limit = 100
) -> list[Delivery]:
    """Every delivery attempt (the newest ``limit``, newest first; about 1000 kept)."""
    await _sub(api, who.tenant, sub_id)
    rows = await Subscriptions(api.redis).deliveries(who.tenant, sub_id, limit)
    return [Delivery(**r) for r in rows]


@router.get("/{sub_id}/dead-letters", response_model=list[Delivery])
async def list_dead_letters(
    sub_id: SubId,
    who: Reader,
    api: Api,
    limit: Limit = 100,
    before: Annotated[EntryId | None, Query(description="the next page: older than")] = None,
) -> list[Delivery]:
    """Events given up after the last attempt, with the body that was not delivered, newest
    first; the next page is ``before=<entry of the last one>``."""
    await _sub(api, who.tenant, sub_id)
    rows = await Subscriptions(api.redis).dead_letters(who.tenant, sub_id, limit, before)
    return [Delivery(**r) for r in rows]


class DeadLetterSelection(Model):
    """Which dead letters: ``entries`` (their ``entry`` ids, at most 1,000) or ``all``."""

    entries: list[EntryId] = Field(default_factory=list, max_length=MAX_SELECT)
    all: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _one_of(self) -> DeadLetterSelection:
        if bool(self.entries) == self.all:
            raise ValueError("give either a non-empty 'entries' or 'all': true")
        return self

    def chosen(self) -> list[str] | None:
        return None if self.all else list(dict.fromkeys(self.entries))


class Redelivered(Model):
    redelivered: int  # dead letters queued for redelivery by this request
    unknown: list[str]  # entries asked for that are not dead letters (any more)
    queue: int  # redeliveries of this subscription not delivered yet, these included


class Dropped(Model):
    dropped: int
    unknown: list[str]


@router.post("/{sub_id}/dead-letters/redeliver", status_code=202, response_model=Redelivered)
async def redeliver_dead_letters(
    sub_id: SubId, body: DeadLetterSelection, who: Admin, api: Api
) -> Redelivered:
    """Send dead letters again (after fixing the receiver): each leaves the dead letters
    and is delivered by the dispatcher's next pass with its original ``id`` and ``time``,
    the header ``Ocs-Redelivered: 1``, in the order they died, retried with backoff and
    dead-lettered again after the last attempt. They arrive after the newer events of
    their subject delivered meanwhile (docs/webhooks.md)."""
    await _sub(api, who.tenant, sub_id)
    dead = DeadLetters(api.redis)
    outcome = await dead.redeliver(who.tenant, sub_id, body.chosen())
    webhook_metrics().dead_letter_actions.labels("redelivered").inc(outcome.done)
    queue = (await dead.summary(who.tenant, sub_id))["queue"]
    return Redelivered(redelivered=outcome.done, unknown=outcome.unknown, queue=queue)


@router.post("/{sub_id}/dead-letters/drop", response_model=Dropped)
async def drop_dead_letters(
    sub_id: SubId, body: DeadLetterSelection, who: Admin, api: Api
) -> Dropped:
    """Delete dead letters for good (``entries``, or ``all``)."""
    await _sub(api, who.tenant, sub_id)
    outcome = await DeadLetters(api.redis).drop(who.tenant, sub_id, body.chosen())
    webhook_metrics().dead_letter_actions.labels("dropped").inc(outcome.done)
    return Dropped(dropped=outcome.done, unknown=outcome.unknown)


@router.delete("/{sub_id}/dead-letters/{entry}", status_code=204)
async def drop_dead_letter(sub_id: SubId, entry: EntryId, who: Admin, api: Api) -> Response:
    await _sub(api, who.tenant, sub_id)
    outcome = await DeadLetters(api.redis).drop(who.tenant, sub_id, [entry])
    if not outcome.done:
        raise not_found("dead letter", entry)
    webhook_metrics().dead_letter_actions.labels("dropped").inc()
    return Response(status_code=204)
