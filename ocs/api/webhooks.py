"""Webhook subscriptions (docs/webhooks.md), a hub resource in the TM Forum style: a tenant
registers a callback URL for event types, optionally filtered by payer or SIM, and reads
each subscription's delivery log and dead letters. The secret is shown once, at creation."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Response
from pydantic import Field, StringConstraints

from ocs.api.models import Digits, Id, Model
from ocs.api.problems import Problem, not_found
from ocs.api.state import Admin, Api, Reader
from ocs.events.model import MAX_EVENTS, MAX_URL, SECRET_MAX, SECRET_MIN, SubscriptionError
from ocs.events.model import Subscription as Sub
from ocs.events.subscriptions import Subscriptions

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
MAX_FILTER: Final = 1000
SubId = Annotated[str, StringConstraints(pattern=r"^wh_[0-9a-f]{16}$")]
EventType = Annotated[str, StringConstraints(min_length=1, max_length=64)]


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
    sub_id: SubId, who: Reader, api: Api, limit: Limit = 100
) -> list[Delivery]:
    """Events given up after the last attempt, with the body that was not delivered."""
    await _sub(api, who.tenant, sub_id)
    rows = await Subscriptions(api.redis).dead_letters(who.tenant, sub_id, limit)
    return [Delivery(**r) for r in rows]
