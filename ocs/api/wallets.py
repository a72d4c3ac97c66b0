"""Wallets: create, top-up and debit (Idempotency-Key), balance, transaction history."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ocs.api import cursors
from ocs.api.cursors import MAX_CURSOR
from ocs.api.idempotency import RECORD_TTL_MS, IdempotencyKey, begin, fingerprint, finish
from ocs.api.models import (
    MoneyMove,
    MoneyMoveResult,
    Transaction,
    TransactionPage,
    WalletCreate,
    WalletView,
    known_currency,
)
from ocs.api.problems import Problem, not_found
from ocs.api.state import Admin, Api, ApiState, Reader, TopUp
from ocs.api.usage import reader, unavailable
from ocs.api.views import bucket_views, json_response
from ocs.balance import BucketUnit, ChargeRequest
from ocs.balance.keys import payer_tag
from ocs.balance.models import BucketState, Rate
from ocs.observability.metrics import api_metrics
from ocs.offline.usage_reader import Record
from ocs.offline.usage_reader import Subject as Scope
from ocs.provisioning.catalogues import State
from ocs.rating.models import PayerKind, Wallet

router = APIRouter(prefix="/v1/wallets", tags=["wallets"])
ONE_TO_ONE = Rate(1, 1)  # a money debit: one minor unit per unit


def wallet_tag(tenant: str, wallet_id: str) -> str:
    return payer_tag(tenant, str(PayerKind.WALLET), wallet_id)


async def _wallet(api: ApiState, tenant: str, wallet_id: str) -> Wallet:
    compiled = await api.catalogues.compiled(tenant)
    wallet = compiled.catalogue.wallets.get(wallet_id)
    if wallet is None:
        raise not_found("wallet", wallet_id)
    return wallet


async def _view(api: ApiState, tenant: str, wallet: Wallet) -> WalletView:
    return _view_of(wallet, await api.store.buckets_batched(wallet_tag(tenant, wallet.id)))


def _view_of(wallet: Wallet, buckets: list[BucketState]) -> WalletView:
    money = [b for b in buckets if b.unit == BucketUnit.MONEY]
    return WalletView(
        id=wallet.id,
        account=wallet.account,
        currency=wallet.currency,
        available=sum(b.available for b in money),
        reserved=sum(b.reserved for b in money),
        used=sum(b.used for b in money),
        credited=sum(b.credited for b in money),
        buckets=bucket_views(buckets),
    )


def _check_currency(wallet: Wallet, currency: str) -> None:
    if not known_currency(currency):
        raise Problem(422, "unknown-currency", "Unknown currency", f"{currency!r} is not ISO 4217")
    if currency != wallet.currency:
        raise Problem(
            422,
            "currency-mismatch",
            "Wrong currency",
            f"wallet {wallet.id!r} holds {wallet.currency}, not {currency}",
        )


@router.post("", status_code=201, response_model=WalletView)
async def create_wallet(body: WalletCreate, who: Admin, api: Api) -> WalletView:
    if not known_currency(body.currency):
        raise Problem(422, "unknown-currency", "Unknown currency", f"{body.currency!r}")

    def mutate(state: State) -> None:
        wallets = state.setdefault("wallets", {})
        if body.id in wallets:
            raise Problem(409, "exists", "Wallet exists", f"wallet {body.id!r} exists")
        wallets[body.id] = body.model_dump()

    await api.catalogues.change(who.tenant, mutate, source=f"wallet {body.id} created")
    return await _view(api, who.tenant, await _wallet(api, who.tenant, body.id))


@router.get("/{wallet_id}", response_model=WalletView)
async def get_wallet(wallet_id: str, who: Reader, api: Api) -> Response:
    return json_response(await read_wallet(api, who.tenant, wallet_id))


@router.post("/{wallet_id}/top-ups", status_code=201, response_model=MoneyMoveResult)
async def top_up(
    wallet_id: str, body: MoneyMove, key: IdempotencyKey, who: TopUp, api: Api
) -> Response:
    """Credit the wallet. The same Idempotency-Key never credits twice; active sessions of
    the wallet's subscriptions get a Re-Auth-Request."""
    return json_response(await credit_wallet(api, who.tenant, wallet_id, body, key), 201)


async def read_wallet(api: ApiState, tenant: str, wallet_id: str) -> WalletView:
    """``GET /v1/wallets/{id}`` once the caller is known (also :mod:`ocs.api.hot_routes`)."""
    return await _view(api, tenant, await _wallet(api, tenant, wallet_id))


async def credit_wallet(
    api: ApiState, tenant: str, wallet_id: str, body: MoneyMove, key: str
) -> MoneyMoveResult:
    """A top-up once the caller and the inputs are valid (also :mod:`ocs.api.hot_routes`):
    the Idempotency-Key claim, then the credit and the new balance in one round trip."""
    compiled = await api.catalogues.compiled(tenant)
    wallet = compiled.catalogue.wallets.get(wallet_id)
    if wallet is None:
        raise not_found("wallet", wallet_id)
    _check_currency(wallet, body.currency)
    claimed = await begin(
        api.store.batch, tenant, "wallet", key, fingerprint(wallet_id, "top-up", body.amount)
    )
    if claimed.outcome is not None:  # a replay: the first outcome, nothing runs again
        return MoneyMoveResult.model_validate({**claimed.outcome, "replayed": True})
    tag = wallet_tag(tenant, wallet_id)
    request_id = f"api:topup:{key}"
    now_ms = int(time.time() * 1000)
    context = {"api": "top-up", "reason": body.reason, "currency": body.currency}
    _, buckets = await api.store.adjust_and_read(
        tag,
        request_id,
        [{"op": "credit", "id": wallet_id, "amount": body.amount}],
        now_ms,
        context,
        result_ttl_ms=RECORD_TTL_MS,  # the script's result lives as long as the key
    )
    if claimed.first:
        api_metrics().count_topup(body.currency, body.amount)
        api.signal_payer(compiled, tag, "rar")
    result = MoneyMoveResult(
        transaction_id=request_id,
        wallet=wallet_id,
        kind="top-up",
        amount=body.amount,
        currency=body.currency,
        available=_view_of(wallet, buckets).available,
        replayed=not claimed.first,
    )
    await finish(api.store.batch, claimed, result.model_dump(mode="json", exclude={"replayed"}))
    return result


@router.post("/{wallet_id}/debits", status_code=201, response_model=MoneyMoveResult)
async def debit(
    wallet_id: str, body: MoneyMove, key: IdempotencyKey, who: Admin, api: Api
) -> MoneyMoveResult:
    """A debit adjustment: all or nothing (409 when the wallet has too little)."""
    wallet = await _wallet(api, who.tenant, wallet_id)
    _check_currency(wallet, body.currency)
    claimed = await begin(
        api.store.batch, who.tenant, "wallet", key, fingerprint(wallet_id, "debit", body.amount)
    )
    outcome = claimed.outcome
    if outcome is None:
        tag = wallet_tag(who.tenant, wallet_id)
        request_id = f"api:debit:{key}"
        keys = await api.store.locate(tag)  # a wallet in a reseller chain: its root's slot
        result = await api.store.charge(
            tag,
            ChargeRequest(
                request_id=request_id,
                member=f"api|{key}",
                unit=BucketUnit.MONEY,
                now_ms=int(time.time() * 1000),
                used=body.amount,
                rate=ONE_TO_ONE,
                mode="debit",
                context={"api": "debit", "reason": body.reason, "currency": body.currency},
                root=keys.root,
            ),
            result_ttl_ms=RECORD_TTL_MS,  # the script's result lives as long as the key
        )
        if result.status == "insufficient":
            outcome = {"insufficient": True}
        else:
            view = await _view(api, who.tenant, wallet)
            outcome = MoneyMoveResult(
                transaction_id=request_id,
                wallet=wallet_id,
                kind="debit",
                amount=body.amount,
                currency=body.currency,
                available=view.available,
                replayed=False,
            ).model_dump(mode="json", exclude={"replayed"})
        await finish(api.store.batch, claimed, outcome)
    if outcome.get("insufficient"):  # the first request was refused: so is its replay
        raise Problem(
            409,
            "insufficient-funds",
            "Insufficient funds",
            f"wallet {wallet_id!r} cannot cover {body.amount}",
        )
    return MoneyMoveResult.model_validate({**outcome, "replayed": not claimed.first})


@router.get("/{wallet_id}/transactions", response_model=TransactionPage)
async def transactions(
    wallet_id: str,
    who: Reader,
    api: Api,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> TransactionPage:
    """Newest first, drained or not; pass ``next_cursor`` back as ``cursor`` for the next
    page."""
    await _wallet(api, who.tenant, wallet_id)
    return await history(api, who.tenant, wallet_tag(who.tenant, wallet_id), limit, cursor)


async def history(
    api: ApiState, tenant: str, tag: str, limit: int, cursor: str | None
) -> TransactionPage:
    """A payer's records, newest first by (time stamp, record key): the open ones from its
    stream and the drained ones from PostgreSQL, each once (ocs.offline.usage_reader)."""
    query = {"path": f"transactions/{tag}", "tenant": tenant, "limit": limit}
    before: tuple[int, str] | None = None
    if cursor is not None:
        position = await cursors.decode(api, cursor, query)
        if not (isinstance(position, list) and len(position) == 2):
            raise Problem(400, "invalid-cursor", "Invalid cursor", "no position in the cursor")
        before = (int(position[0]), str(position[1]))
    usage = await reader(api)
    with unavailable():
        records = await usage.page(Scope(tenant, (tag,), payer=tag), limit + 1, before)
    items = [_transaction(r) for r in records[:limit]]
    next_cursor = None
    if len(records) > limit:
        last = records[limit - 1]
        next_cursor = await cursors.encode(api, query, [last.ts, last.key])
    return TransactionPage(items=items, next_cursor=next_cursor)


SIGN = {"usage": -1, "refund": -1, "adjust": 1, "level": -1}  # level: paid as an upper level


def _transaction(r: Record) -> Transaction:
    total = sum(int(a[1]) for a in r.alloc if isinstance(a, list) and len(a) > 1)
    request_id = r.key.removeprefix(f"{r.kind}:")
    if r.kind == "reclaim":  # its key is "reclaim:<member>:<ts>"
        request_id = request_id.rpartition(":")[0]
    return Transaction(
        id=r.entry,
        kind=r.kind,
        request_id=request_id,
        ts=r.ts,
        unit=r.unit or "money",
        amount=SIGN.get(r.kind, 1) * total,
        context=r.ctx,
    )
