"""CCR-Event (RFC 4006 6.3, 5.4): DIRECT_DEBITING (SMS, IoT sensor events), REFUND_ACCOUNT,
CHECK_BALANCE and PRICE_ENQUIRY. Events have no session state and no reservation: a debit is
one all-or-nothing script call that also writes the rated record.

``debit_event`` is the one code path of an event debit: CCR-Event here and events posted over
HTTP (``ocs.api.events``) both call it, so both write the same record (``usage_record``,
every level priced) and a wallet is debited exactly the level-0 price."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

from ocs.balance import BalanceStore, BucketUnit, ChargeRequest, ChargeResult
from ocs.charging.errors import result_code_for
from ocs.charging.levels import level_refunds
from ocs.charging.limits import limits_arg, usage_caps
from ocs.charging.pricing import CounterCache, Prices, charge_at_price, reservation_rate
from ocs.charging.states import TEST, allowance_payer, debit_test_event
from ocs.charging.usage import UNIT_OF, payer_key, service_of, usage_record, used_units
from ocs.diameter import avp_codes as A
from ocs.diameter.codec import grouped, i32
from ocs.diameter.constants import CheckBalanceResult, RequestedAction, ResultCode
from ocs.diameter.dcca import (
    CreditControlRequest,
    MultipleServicesCreditControl,
    cost_information,
    granted_service_unit,
    mscc_answer,
)
from ocs.rating.catalogue import Catalogue
from ocs.rating.engine import Resolution
from ocs.rating.errors import RatingError
from ocs.rating.models import PayerKind
from ocs.rating.quote import Quote

if TYPE_CHECKING:
    from ocs.charging.application import ChargingApplication, Outcome

SUCCESS: Final = int(ResultCode.DIAMETER_SUCCESS)
CURRENCY_NUMERIC: Final = {"EUR": 978, "USD": 840, "GBP": 826, "CHF": 756, "SEK": 752}


def _event_msccs(view: CreditControlRequest) -> list[MultipleServicesCreditControl]:
    """The MSCCs, or the top-level RSU/USU as one pseudo-MSCC (events often carry no MSCC)."""
    msccs = view.mscc
    if msccs:
        return msccs
    kids = [
        a
        for a in view.msg.avps
        if a.key
        in (A.AVP_REQUESTED_SERVICE_UNIT, A.AVP_USED_SERVICE_UNIT, A.AVP_SERVICE_IDENTIFIER)
    ]
    return [MultipleServicesCreditControl(grouped(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, kids))]


def _units(mscc: MultipleServicesCreditControl, unit: BucketUnit) -> int:
    """Units of an event: RSU (or USU) service-specific units / octets / time, default 1."""
    rsu = mscc.requested
    if rsu is not None and not rsu.empty:
        value = (
            rsu.octets
            if unit is BucketUnit.BYTES
            else rsu.time
            if unit is BucketUnit.SECONDS
            else rsu.service_specific_units
        )
        if value:
            return value
    return used_units(mscc, unit) or 1


async def debit_event(
    store: BalanceStore,
    catalogue: Catalogue,
    cache: CounterCache,
    resolution: Resolution,
    *,
    payer: str,
    unit: BucketUnit,
    units: int,
    request_id: str,
    now_ms: int,
    session: str,
    n: int,
    rg: int,
    msisdn: str | None,
    extra: dict[str, object] | None = None,
) -> tuple[ChargeResult, Prices]:
    """Debit ``units`` of an event all or nothing from its payer, with its rated record
    (every level priced; a wallet pays exactly the level-0 price)."""

    def context(amounts: tuple[int, ...]) -> str:
        record = usage_record(resolution, amounts, session=session, n=n, rg=rg, msisdn=msisdn)
        if extra:
            record.update(extra)
        return json.dumps(record, separators=(",", ":"), default=str)

    return await charge_at_price(
        store,
        payer,
        ChargeRequest(
            request_id=request_id,
            member=f"{session}|{rg}",
            unit=unit,
            now_ms=now_ms,
            used=units,
            rate=reservation_rate(resolution.quotes[0]),
            mode="debit",
            limits=limits_arg(
                usage_caps(catalogue, resolution, unit), catalogue.tenant.time_zone, now_ms
            ),
        ),
        catalogue,
        resolution,
        cache,
        context,
    )


class EventCharging:
    __slots__ = ("app",)

    def __init__(self, app: ChargingApplication) -> None:
        self.app = app

    async def handle(self, view: CreditControlRequest, out: Outcome) -> None:
        action = view.requested_action
        action = RequestedAction.DIRECT_DEBITING if action is None else action
        unit = UNIT_OF[service_of(view)]
        for mscc in _event_msccs(view):
            await self._one(view, mscc, unit, RequestedAction(action), out)

    async def _one(
        self,
        view: CreditControlRequest,
        mscc: MultipleServicesCreditControl,
        unit: BucketUnit,
        action: RequestedAction,
        out: Outcome,
    ) -> None:
        app = self.app
        rg = mscc.rating_group
        units = _units(mscc, unit)
        try:
            resolution = app.rate(view, mscc, units)
        except RatingError as exc:
            code = result_code_for(exc)
            out.add(mscc_answer(code, rating_group=rg), code)
            return
        quote = resolution.quotes[0]
        catalogue = app.catalogue.of(view.imsi, view.msisdn)  # the SIM's tenant's
        tenant = catalogue.tenant.id
        payer = payer_key(tenant, resolution.payer)
        request_id = f"{view.session_id}:{view.request_number}:{rg or 0}"
        now_ms = int(app.clock() * 1000)
        rate = reservation_rate(quote)
        gsu = (
            granted_service_unit(total_octets=units)
            if unit is BucketUnit.BYTES
            else granted_service_unit(service_specific_units=units)
        )
        if action is RequestedAction.PRICE_ENQUIRY:
            amount = quote.price(units).amount
            currency = CURRENCY_NUMERIC.get(quote.currency, 978)
            out.extra.append(cost_information(amount, currency))
            out.add(mscc_answer(SUCCESS, rating_group=rg, granted=gsu), SUCCESS)
            return
        if action is RequestedAction.CHECK_BALANCE:
            enough = await self._enough(payer, unit, units, rate.denominator > 0, quote, now_ms)
            for q in resolution.quotes[1:] if enough else ():  # and every level above it
                up, up_rate = payer_key(tenant, q.payer), reservation_rate(q)
                enough = await self._enough(
                    up, unit, units, up_rate.denominator > 0, q, now_ms, upper=True
                )
                if not enough:
                    break
            verdict = CheckBalanceResult.ENOUGH_CREDIT if enough else CheckBalanceResult.NO_CREDIT
            if not any(a.key == A.AVP_CHECK_BALANCE_RESULT for a in out.extra):
                out.extra.append(i32(A.AVP_CHECK_BALANCE_RESULT, verdict))
            out.add(mscc_answer(SUCCESS, rating_group=rg), SUCCESS)
            return
        if action is RequestedAction.REFUND_ACCOUNT:
            context = app.record_context(view, rg or 0, resolution, units)
            money = resolution.payer.kind is PayerKind.WALLET
            amount = quote.price(units).amount if money else units
            op = {"op": "refund", "unit": "money" if money else str(unit), "amount": amount}
            status = await app.store.adjust(payer, request_id, [op], now_ms, context)
            # and every prepaid level above it that the debit moved, each idempotent by level
            for i, up, level_op in level_refunds(catalogue, resolution, units, str(unit)):
                if status == "ok":
                    rid = f"{request_id}#{i}"
                    status = await app.store.adjust(up, rid, [level_op], now_ms, context)
            code = SUCCESS if status == "ok" else int(ResultCode.DIAMETER_RATING_FAILED)
            out.add(mscc_answer(code, rating_group=rg), code)
            return
        if catalogue.sims_by_imsi[resolution.imsi].state == TEST:
            paid = await self._test_debit(
                view, resolution, unit, units, request_id, now_ms, rg or 0
            )
            if paid is not None:
                out.add(
                    mscc_answer(paid, rating_group=rg, granted=gsu if paid == SUCCESS else None),
                    paid,
                )
                return
            request_id += ":active"
        result, _ = await debit_event(
            app.store,
            catalogue,
            app.counters,
            resolution,
            payer=payer,
            unit=unit,
            units=units,
            request_id=request_id,
            now_ms=now_ms,
            session=view.session_id,
            n=view.request_number,
            rg=rg or 0,
            msisdn=view.msisdn,
        )
        if result.status == "limited":  # a per-SIM cap (docs/limits.md)
            code = int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)
            out.add(mscc_answer(code, rating_group=rg), code)
            return
        if result.status == "insufficient":
            app.metrics.count_exhausted(payer)
            code = int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)
            out.add(mscc_answer(code, rating_group=rg), code)
            return
        out.add(mscc_answer(SUCCESS, rating_group=rg, granted=gsu), SUCCESS)

    async def _test_debit(
        self,
        view: CreditControlRequest,
        resolution: Resolution,
        unit: BucketUnit,
        units: int,
        request_id: str,
        now_ms: int,
        rg: int,
    ) -> int | None:
        """A test SIM's event on its test allowance: the Result-Code, or None when it is
        charged as active (``states.debit_test_event``)."""
        app = self.app
        catalogue = app.catalogue.of(view.imsi, view.msisdn)
        status = await debit_test_event(
            app.tests,
            catalogue,
            resolution,
            unit=unit,
            units=units,
            request_id=request_id,
            now_ms=now_ms,
            session=view.session_id,
            n=view.request_number,
            rg=rg,
            msisdn=view.msisdn,
        )
        if status is None:
            return None
        if status == "insufficient":
            app.metrics.count_exhausted(allowance_payer(catalogue.tenant.id, resolution.imsi))
            return int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)
        return SUCCESS

    async def _enough(
        self,
        payer: str,
        unit: BucketUnit,
        units: int,
        priced: bool,
        quote: Quote,
        now_ms: int,
        *,
        upper: bool = False,
    ) -> bool:
        """Whether the payer could pay ``units`` now (no reservation is made). ``upper``: a
        level above 0, passed over (True) when it holds nothing of the unit, as
        ``charge.lua`` passes it over (_levels.lua)."""
        cost = quote.price(units).amount if priced else 0
        have_units = have_money = 0
        buckets = await self.app.store.buckets(payer)
        if upper and not any(
            b.unit == str(unit) or (priced and b.unit == "money") for b in buckets
        ):
            return True
        for b in buckets:
            if b.valid_from > now_ms or (b.valid_to and b.valid_to <= now_ms):
                continue
            if b.unlimited and (b.unit == str(unit) or (priced and b.unit == "money")):
                return True
            if b.unit == str(unit):
                have_units += b.available
            elif b.unit == "money" and priced:
                have_money += b.available
        return have_units >= units or (priced and have_money >= cost)
