"""The Gy/Ro credit-control application: CCR-Initial/Update/Terminate/Event in, CCA out.

``handle_ccr`` validates the request type, answers retransmissions from the stored answer,
and dispatches by name to ``handle_initial``, ``handle_update``, ``handle_terminate`` and
``handle_event``. Each MSCC is rated (``ocs.rating``) and reserved/committed on its payer by
one balance script call (``ocs.balance``); each gets its own Result-Code in the answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from ocs.balance import BalanceStore, BucketUnit, ChargeRequest, ChargeResult
from ocs.balance.keys import reservation_member
from ocs.balance.models import NOT_PRICED, Rate
from ocs.charging.config import ChargingConfig
from ocs.charging.deadlines import Deadlines
from ocs.charging.errors import is_store_outage, result_code_for
from ocs.charging.events import EventCharging
from ocs.charging.failover import FailureHandling
from ocs.charging.levels import release_chain
from ocs.charging.limits import CapRef, LimitAction, binding, limits_arg, usage_caps
from ocs.charging.pricing import CounterCache, charge_at_price, reservation_rate
from ocs.charging.sessions import SessionStore
from ocs.charging.states import (
    ACTIVE,
    TEST,
    TestSims,
    admit,
    allowance_of,
    allowance_record,
    is_test_payer,
)
from ocs.charging.usage import (
    RatingInputs,
    context_of,
    payer_key,
    rating_inputs,
    requested_units,
    service_of,
    usage_record,
    used_units,
)
from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity, answer_for_error
from ocs.diameter.codec import Avp, Message, decode
from ocs.diameter.constants import (
    FLAG_RETRANSMIT,
    CcRequestType,
    FinalUnitAction,
    ReportingReason,
    ResultCode,
)
from ocs.diameter.dcca import (
    CcaBuilder,
    CreditControlRequest,
    MultipleServicesCreditControl,
    RedirectServer,
    credit_control_answer,
    final_unit_indication,
    granted_service_unit,
    mscc_answer,
)
from ocs.diameter.errors import DiameterError, InvalidAvpValue
from ocs.observability.logs import request_fields
from ocs.observability.metrics import ChargingMetrics
from ocs.observability.outage import outage_log
from ocs.rating.catalogue import Catalogue
from ocs.rating.context import ServiceKind
from ocs.rating.engine import Resolution, find_sim, resolve
from ocs.rating.errors import RatingError
from ocs.rating.loader import Catalogues
from ocs.rating.models import TestAllowance

log = logging.getLogger(__name__)

SUCCESS: Final = int(ResultCode.DIAMETER_SUCCESS)
CREDIT_LIMIT_REACHED: Final = int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)
TYPE_NAMES: Final = {int(t): t.name.split("_")[0].lower() for t in CcRequestType}
RATED_CACHE_SIZE: Final = 200_000  # (session, rating group) rating results kept
OPEN_SESSIONS_KEPT: Final = 1_000_000  # sessions counted in ocs_active_sessions, at most
MSCC_CACHE_SIZE: Final = 4096  # encoded MSCC answers kept (grants repeat)
_N = "\x00n\x00"  # placeholders in the record context template
_AMOUNT = "\x00a\x00"
HANDLER_NAMES: Final = {
    CcRequestType.INITIAL_REQUEST: "handle_initial",
    CcRequestType.UPDATE_REQUEST: "handle_update",
    CcRequestType.TERMINATION_REQUEST: "handle_terminate",
    CcRequestType.EVENT_REQUEST: "handle_event",
}


@dataclass(slots=True)
class _Rated:
    """The rating of one (session, rating group), kept while its inputs stay the same: the
    resolution, the payer, the reservation rate and the record context as a JSON template
    (split around the request number and the per-level amounts)."""

    catalogue: Catalogue
    inputs: RatingInputs
    resolution: Resolution
    payer: str
    rate: Rate
    template: list[str] | None  # None: a field held a placeholder, the JSON is built per CCR
    caps: tuple[CapRef, ...] = ()  # the per-SIM caps of the usage (ocs.charging.limits)
    state: str = ACTIVE  # the SIM's lifecycle state (active or test: ``states.admit``)

    def context_json(self, number: int, amounts: tuple[int, ...]) -> str:
        parts = self.template
        assert parts is not None
        out = [parts[0], str(number)]
        for i, amount in enumerate(amounts, start=1):
            out += (parts[i], str(amount))
        out.append(parts[-1])
        return "".join(out)


@dataclass(slots=True)
class Outcome:
    """What one CCR did: the MSCC answers, their codes, extra AVPs and the session's payers."""

    msccs: list[Avp] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    extra: list[Avp] = field(default_factory=list)
    payers: dict[int, str] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)
    result_code: int | None = None  # overrides the code derived from the MSCCs

    def add(self, avp: Avp, code: int) -> None:
        self.msccs.append(avp)
        self.codes.append(code)

    def top_level(self) -> int:
        if self.result_code is not None:
            return self.result_code
        if self.codes and all(c == self.codes[0] for c in self.codes):
            return self.codes[0]
        return SUCCESS


class ChargingApplication:
    """Credit-Control application (RFC 4006, Auth-Application-Id 4) over Redis balances."""

    def __init__(
        self,
        store: BalanceStore,
        catalogue: Catalogues,
        config: ChargingConfig,
        identity: Identity,
        metrics: ChargingMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        self.config = config
        self.identity = identity
        self.metrics = metrics
        self.clock = clock
        self.sessions = SessionStore(
            store.redis,
            config.session_ttl,
            answer_ttl=min(config.answer_ttl, config.session_ttl),
            batch=store.batch,
            on_error=self._store_failed,
        )
        self.outage = outage_log()  # one log line per outage state change (issue 14)
        self.failover = FailureHandling(self)
        self.journal = self.failover.journal
        self.events = EventCharging(self)
        self.answers = CcaBuilder(identity)
        self.deadlines = Deadlines()
        self._rated: dict[tuple[str, int], _Rated] = {}
        # sessions counted in ocs_active_sessions (opened here by a CCR-I answered 2001), with
        # the monotonic time they opened: a CCR-T of a session refused at CCR-I (or opened by
        # another process) is not subtracted, so the gauge never goes below 0; a session not
        # heard of for session_ttl (its state expired) stops counting
        self._open: dict[str, float] = {}
        self.counters = CounterCache()  # wallet period counters last seen (pricing)
        self.tests = TestSims(store)  # test SIMs' allowances and activations (charging.states)
        self._mscc_cache: dict[tuple[object, ...], Avp] = {}
        self._handlers: dict[int, Callable[[CreditControlRequest, Outcome], Awaitable[None]]] = {
            int(t): getattr(self, name) for t, name in HANDLER_NAMES.items()
        }

    # -- entry point -----------------------------------------------------------------------
    async def handle_ccr(self, request: Message, peer: object = None) -> Message:
        started = time.perf_counter()
        view = CreditControlRequest(request)
        kind = "unknown"
        try:
            rtype = view.request_type
            handler = self._handlers.get(rtype)
            if handler is None:
                found = request.find(A.AVP_CC_REQUEST_TYPE)
                raise InvalidAvpValue(f"CC-Request-Type {rtype} is not defined", found)
            kind = TYPE_NAMES[rtype]
            answer = await self._answer(view, rtype, handler)
            if self.outage.down_since is not None:
                self.outage.succeeded()
        except DiameterError as err:
            answer = answer_for_error(request, self.identity, err, avps=view.echo_avps())
        except Exception as exc:
            if is_store_outage(exc):  # only an unreachable store takes failure handling
                self._store_failed(exc)
                answer = self.failover.answer(view)
            else:  # a bug, a script error: never a grant (docs/charging.md)
                answer = self._error_answer(view, kind, exc)
        code = answer.get(A.AVP_RESULT_CODE, 0)
        self.metrics.count_ccr(kind, code, time.perf_counter() - started)
        return answer

    async def _answer(
        self,
        view: CreditControlRequest,
        rtype: int,
        handler: Callable[[CreditControlRequest, Outcome], Awaitable[None]],
    ) -> Message:
        request = view.msg
        sid, number = view.session_id, view.request_number
        async with self.deadlines(self.config.request_timeout):
            new = rtype == CcRequestType.INITIAL_REQUEST and not request.flags & FLAG_RETRANSMIT
            origin = view.origin_host  # the peer's own or one it relays for (diameter.peer)
            # a session is its opener's: another peer's CCR gets 5002 (charging.sessions)
            payers, stored = await self.sessions.lookup(sid, number, origin, new=new)
            if stored is not None:  # a retransmission: the same answer, charged once
                return _replay(stored, request)
            outcome = Outcome(payers=payers)
            await handler(view, outcome)
            outcome.extra.append(self.failover.ccfh)  # RFC 4006 8.14, as configured
            answer = self.answers.answer(request, outcome.top_level(), outcome.msccs, outcome.extra)
            closed = rtype in (CcRequestType.TERMINATION_REQUEST, CcRequestType.EVENT_REQUEST)
            if closed:
                for rg in (*outcome.dropped, *outcome.payers):
                    self._rated.pop((sid, rg), None)
            await self.sessions.save(
                sid,
                number,
                answer.encode(),
                outcome.payers,
                origin,
                closed=closed,
                dropped=tuple(outcome.dropped),
            )
        for code in outcome.codes:
            self.metrics.count_mscc(code)
        return answer

    def _store_failed(self, exc: BaseException) -> None:
        self.metrics.redis_errors.inc()
        self.outage.failed(exc)

    def _opened(self, sid: str) -> None:
        now = time.monotonic()
        if self._open.pop(sid, None) is None:
            self.metrics.active_sessions.inc()
        self._open[sid] = now
        horizon = now - self.config.session_ttl
        while self._open:
            first = next(iter(self._open))
            if self._open[first] > horizon and len(self._open) <= OPEN_SESSIONS_KEPT:
                break
            del self._open[first]
            self.metrics.active_sessions.dec()

    # -- handlers by name ------------------------------------------------------------------
    async def handle_initial(self, view: CreditControlRequest, out: Outcome) -> None:
        msccs = view.mscc
        if not msccs:
            self._check_subscriber(view, out)
        for mscc in msccs:
            await self._charge_mscc(view, mscc, out, final=False, initial=True)
        if out.top_level() == SUCCESS:
            self._opened(view.session_id)

    async def handle_update(self, view: CreditControlRequest, out: Outcome) -> None:
        sid = view.session_id
        if self._open.pop(sid, None) is not None:  # still active: counted, last in line
            self._open[sid] = time.monotonic()
        for mscc in view.mscc:
            await self._charge_mscc(view, mscc, out, final=False, initial=False)

    async def handle_terminate(self, view: CreditControlRequest, out: Outcome) -> None:
        reported: set[int] = set()
        for mscc in view.mscc:
            reported.add(mscc.rating_group or 0)
            await self._charge_mscc(view, mscc, out, final=True, initial=False)
        # reservations of rating groups the CCR-T does not mention are released
        for rg, payer in sorted(out.payers.items()):
            if rg not in reported:
                await self._release(view, rg, payer)
        if self._open.pop(view.session_id, None) is not None:  # opened here: counted
            self.metrics.active_sessions.dec()

    async def handle_event(self, view: CreditControlRequest, out: Outcome) -> None:
        await self.events.handle(view, out)

    # -- one MSCC --------------------------------------------------------------------------
    def _check_subscriber(self, view: CreditControlRequest, out: Outcome) -> None:
        inputs = rating_inputs(view, None)
        catalogue = self.catalogue.of(inputs.imsi, inputs.msisdn)  # the SIM's tenant's
        try:
            admit(find_sim(catalogue, context_of(catalogue.tenant.id, inputs, service_of(view), 0)))
        except RatingError as exc:
            out.result_code = result_code_for(exc)

    def rate(
        self,
        view: CreditControlRequest,
        mscc: MultipleServicesCreditControl | None,
        quantity: int,
    ) -> Resolution:
        inputs = rating_inputs(view, mscc)
        catalogue = self.catalogue.of(inputs.imsi, inputs.msisdn)
        resolution = resolve(
            catalogue, context_of(catalogue.tenant.id, inputs, service_of(view), quantity)
        )
        admit(catalogue.sims_by_imsi[resolution.imsi])  # SimNotInService: 4010
        return resolution

    def _rate_session(
        self, view: CreditControlRequest, mscc: MultipleServicesCreditControl, rg: int, used: int
    ) -> _Rated:
        """The rating of a session's MSCC, from the per-session cache when the CCR carries the
        same rating inputs (Event-Timestamp included) on the same catalogue as the last one.
        Raises a ``RatingError`` (never cached)."""
        inputs = rating_inputs(view, mscc)
        catalogue = self.catalogue.of(inputs.imsi, inputs.msisdn)  # one dict lookup
        key = (view.session_id, rg)
        rated = self._rated.get(key)
        if (
            rated is not None
            and rated.catalogue is catalogue
            and inputs.event_time is not None
            and rated.inputs == inputs
        ):
            return rated
        tenant = catalogue.tenant.id
        resolution = resolve(catalogue, context_of(tenant, inputs, ServiceKind.DATA, used))
        state = admit(catalogue.sims_by_imsi[resolution.imsi])  # SimNotInService: 4010
        context = self.record_context(view, rg, resolution, 0)
        context["n"] = _N
        for level in context["levels"]:
            level["amount"] = _AMOUNT
        text = json.dumps(context, separators=(",", ":"), default=str)
        n_mark, amount_mark = json.dumps(_N), json.dumps(_AMOUNT)
        template: list[str] | None = None
        if text.count(n_mark) == 1 and text.count(amount_mark) == len(resolution.quotes):
            head, tail = text.split(n_mark)
            template = [head, *tail.split(amount_mark)]
        rated = _Rated(
            catalogue,
            inputs,
            resolution,
            payer_key(tenant, resolution.payer),
            reservation_rate(resolution.quotes[0]),
            template,
            usage_caps(catalogue, resolution, BucketUnit.BYTES),
            state,
        )
        if key not in self._rated and len(self._rated) >= RATED_CACHE_SIZE:
            del self._rated[next(iter(self._rated))]
        self._rated[key] = rated
        return rated

    def record_context(
        self,
        view: CreditControlRequest,
        rg: int,
        resolution: Resolution,
        used: int,
        amounts: tuple[int, ...] | None = None,
    ) -> dict[str, Any]:
        """What the rated usage record says besides the balance movement; ``amounts``: each
        level's price (``ocs.charging.pricing.prices``), else priced here without counters."""
        if amounts is None:
            amounts = tuple(q.price(used).amount if used else 0 for q in resolution.quotes)
        return usage_record(
            resolution, amounts, session=view.session_id, n=view.request_number, rg=rg,
            msisdn=view.msisdn,
        )  # fmt: skip

    def _quota(self, unit: BucketUnit, requested: int | None) -> int:
        want = self.config.default_quota[unit] if requested is None else requested
        return min(want, self.config.max_quota[unit])

    async def _charge_mscc(
        self,
        view: CreditControlRequest,
        mscc: MultipleServicesCreditControl,
        out: Outcome,
        *,
        final: bool,
        initial: bool,
    ) -> None:
        rg = mscc.rating_group or 0
        if rg in self.config.free_rating_groups:
            code = int(ResultCode.DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE)
            out.add(mscc_answer(code, rating_group=mscc.rating_group), code)
            return
        unit = BucketUnit.BYTES  # sessions are data (service_of); events go to handle_event
        used = used_units(mscc, unit)
        requested = requested_units(mscc, unit)
        wants_more = (
            not final
            and (initial or mscc.requested is not None)
            and mscc.reporting_reason != ReportingReason.FINAL
        )
        want = self._quota(unit, requested) if wants_more else 0
        try:
            rated = self._rate_session(view, mscc, rg, used)
        except RatingError as exc:
            self._rated.pop((view.session_id, rg), None)
            code = result_code_for(exc)
            out.add(mscc_answer(code, rating_group=mscc.rating_group), code)
            if rg in out.payers:  # release what an earlier grant still holds
                await self._release(view, rg, out.payers[rg])
                out.dropped.append(rg)
                del out.payers[rg]
            return
        payer = rated.payer
        previous = out.payers.get(rg)
        sid, number = view.session_id, view.request_number
        test: TestAllowance | None = None
        if rated.state == TEST:  # docs/sim-states.md: the SIM's own test allowance pays
            test = await self._test_allowance(rated)
            if test is not None:
                payer = await self.tests.payer(
                    rated.catalogue.tenant.id, rated.resolution.imsi, test, self._now_ms()
                )

        def context(amounts: tuple[int, ...]) -> str:
            if rated.template is not None:
                return rated.context_json(number, amounts)
            record = self.record_context(view, rg, rated.resolution, used, amounts)
            return json.dumps(record, separators=(",", ":"), default=str)

        base = f"{sid}:{number}:{rg}"
        now_ms = int(self.clock() * 1000)
        deadline = now_ms + (self.config.validity_time + self.config.reclaim_grace) * 1000
        member = reservation_member(sid, rg)
        rate = rated.rate
        if previous is not None and previous != payer:
            # the twin or payer changed mid-session (or the SIM left test): settle on the
            # old payer (and the levels above it) first
            if is_test_payer(previous):
                settled = allowance_record(
                    rated.resolution, session=sid, n=number, rg=rg, msisdn=view.msisdn
                )
            else:
                settled = context(tuple(q.price(used).amount for q in rated.resolution.quotes))
            root, levels = release_chain(rated.catalogue, previous)
            await self.store.charge(
                previous,
                ChargeRequest(
                    f"{base}:settle",
                    member,
                    unit,
                    now_ms,
                    used=used,
                    context_json=settled,
                    root=root,
                    levels=levels,
                ),
            )
            used = 0
        request = ChargeRequest(
            request_id=base,
            member=member,
            unit=unit,
            now_ms=now_ms,
            used=used,
            want=want,
            min_grant=min(want, self.config.min_grant[unit]),
            rate=rate,
            deadline_ms=deadline,
            limits=limits_arg(rated.caps, rated.catalogue.tenant.time_zone, now_ms),
        )
        if test is not None:  # counted on the allowance, recorded without a price
            record = allowance_record(
                rated.resolution, session=sid, n=number, rg=rg, msisdn=view.msisdn
            )
            result = await self.store.charge(  # the allowance is the test SIM's limit
                payer, replace(request, rate=NOT_PRICED, context_json=record, limits=())
            )
            if result.granted == 0 and want > 0 and test.activate == "exhausted":
                # what the allowance cannot cover is charged as active, and the SIM moves
                await self._activate(rated, "test allowance used")
                payer = rated.payer
                request = replace(request, request_id=f"{base}:active", used=0)
                test = None
        if test is None:
            # the price of the usage, and a wallet debited exactly it (ocs.charging.pricing)
            result, _ = await charge_at_price(
                self.store,
                payer,
                request,
                rated.catalogue,
                rated.resolution,
                self.counters,
                context,
            )
        if final or result.granted == 0:
            out.payers.pop(rg, None)
            out.dropped.append(rg)
        else:
            out.payers[rg] = payer
        # the answer depends on these alone (the config is fixed): grants repeat, so the
        # encoded MSCC is kept
        ids = mscc.service_identifiers
        cap = binding(rated.caps, result.limit) if result.limit else None
        action = cap.action if cap is not None else None
        mkey = (unit, mscc.rating_group, *ids, want > 0, result.granted, result.left == 0, action)
        cached = self._mscc_cache.get(mkey)
        if cached is None:
            avp, code = self._mscc_for(mscc, unit, want, result, action)
            if len(self._mscc_cache) >= MSCC_CACHE_SIZE:
                self._mscc_cache.clear()
            self._mscc_cache[mkey] = cached = avp
        else:
            code = SUCCESS if result.granted > 0 or want == 0 else CREDIT_LIMIT_REACHED
        out.add(cached, code)
        self.metrics.count_grant(want, result.granted, result.left, self.config.fui_action, payer)

    async def _test_allowance(self, rated: _Rated) -> TestAllowance | None:
        """The test allowance that pays a test SIM's usage; None: the usage is charged as
        active (its plan activates test SIMs on first use: asked for here)."""
        allowance = allowance_of(rated.catalogue, rated.resolution)
        if allowance.activate == "first_use":
            await self._activate(rated, "first use")
            return None
        return allowance

    async def _activate(self, rated: _Rated, reason: str) -> None:
        await self.tests.activate(rated.catalogue.tenant.id, rated.resolution.imsi, reason)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _mscc_for(
        self,
        mscc: MultipleServicesCreditControl,
        unit: BucketUnit,
        want: int,
        result: ChargeResult,
        cap: LimitAction | None = None,
    ) -> tuple[Avp, int]:
        """The MSCC of a result; ``cap``: the action of the per-SIM cap the result reached
        (nothing left under it: the grant is the last, or none is made)."""
        rg = mscc.rating_group
        ids = mscc.service_identifiers
        if cap is not None and want > 0:
            return self._mscc_at_cap(mscc, unit, result, cap)
        if result.granted > 0:
            last = result.left == 0  # nothing left behind this grant: these are final units
            threshold = result.granted * self.config.threshold_percent // 100
            return (
                mscc_answer(
                    SUCCESS,
                    rating_group=rg,
                    service_identifiers=ids,
                    granted=_gsu(unit, result.granted),
                    validity_time=self.config.validity_time,
                    volume_quota_threshold=threshold if unit is BucketUnit.BYTES else None,
                    time_quota_threshold=threshold if unit is BucketUnit.SECONDS else None,
                    final_unit=self._final_unit() if last else None,
                ),
                SUCCESS,
            )
        if want > 0:
            code = int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)
            redirecting = self.config.fui_action is not FinalUnitAction.TERMINATE
            return (
                mscc_answer(
                    code,
                    rating_group=rg,
                    service_identifiers=ids,
                    validity_time=self.config.validity_time if redirecting else None,
                    final_unit=self._final_unit() if redirecting else None,
                ),
                code,
            )
        return mscc_answer(SUCCESS, rating_group=rg, service_identifiers=ids), SUCCESS

    def _mscc_at_cap(
        self,
        mscc: MultipleServicesCreditControl,
        unit: BucketUnit,
        result: ChargeResult,
        cap: LimitAction,
    ) -> tuple[Avp, int]:
        """At a per-SIM cap (docs/limits.md): the last grant (cut to what the cap leaves)
        carries the cap's Final-Unit-Indication, as for an exhausted balance; with nothing
        left, 4012 DIAMETER_CREDIT_LIMIT_REACHED, with the FUI (and Validity-Time) of a
        redirect or restrict action, alone for block."""
        rg, ids = mscc.rating_group, mscc.service_identifiers
        fui = _cap_unit(cap)
        if result.granted > 0:
            threshold = result.granted * self.config.threshold_percent // 100
            return (
                mscc_answer(
                    SUCCESS,
                    rating_group=rg,
                    service_identifiers=ids,
                    granted=_gsu(unit, result.granted),
                    validity_time=self.config.validity_time,
                    volume_quota_threshold=threshold if unit is BucketUnit.BYTES else None,
                    final_unit=fui or final_unit_indication(FinalUnitAction.TERMINATE),
                ),
                SUCCESS,
            )
        return (
            mscc_answer(
                CREDIT_LIMIT_REACHED,
                rating_group=rg,
                service_identifiers=ids,
                validity_time=self.config.validity_time if fui is not None else None,
                final_unit=fui,
            ),
            CREDIT_LIMIT_REACHED,
        )

    def _final_unit(self) -> Avp:
        action = self.config.fui_action
        if action is FinalUnitAction.REDIRECT:
            return final_unit_indication(
                action, redirect=RedirectServer(self.config.fui_redirect_url)
            )
        if action is FinalUnitAction.RESTRICT_ACCESS:
            return final_unit_indication(
                action, restriction_rules=self.config.fui_restriction_rules
            )
        return final_unit_indication(action)

    async def _release(self, view: CreditControlRequest, rg: int, payer: str) -> None:
        """Release what the session's grant holds on ``payer`` and every level above it."""
        now_ms = int(self.clock() * 1000)
        root, levels = release_chain(self.catalogue.of(view.imsi, view.msisdn), payer)
        await self.store.charge(
            payer,
            ChargeRequest(
                request_id=f"{view.session_id}:{view.request_number}:{rg}:release",
                member=reservation_member(view.session_id, rg),
                unit=BucketUnit.BYTES,
                now_ms=now_ms,
                root=root,
                levels=levels,
            ),
        )

    def _error_answer(self, view: CreditControlRequest, kind: str, exc: Exception) -> Message:
        """Anything but a store outage (a script error, a bug): the CCR is answered 5012
        DIAMETER_UNABLE_TO_COMPLY (RFC 4006 5.7) with no units, logged at ERROR with the
        Session-Id and counted in ``ocs_charging_errors_total`` (alert OcsChargingErrors)."""
        code = result_code_for(exc)
        self.metrics.count_charging_error(kind)
        log.error(
            "CCR %s answered %d: %s: %s",
            _safe_session(view),
            code,
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra=request_fields(view, result_code=code),
        )
        return credit_control_answer(view.msg, self.identity, code, extra=[self.failover.ccfh])


def _gsu(unit: BucketUnit, amount: int) -> Avp:
    if unit is BucketUnit.BYTES:
        return granted_service_unit(total_octets=amount)
    if unit is BucketUnit.SECONDS:
        return granted_service_unit(time=amount)
    return granted_service_unit(service_specific_units=amount)


def _cap_unit(cap: LimitAction) -> Avp | None:
    """The Final-Unit-Indication of a cap's action (None: block, terminate)."""
    if cap.kind == "redirect" and cap.redirect_url is not None:
        return final_unit_indication(
            FinalUnitAction.REDIRECT, redirect=RedirectServer(cap.redirect_url)
        )
    if cap.kind == "restrict":
        return final_unit_indication(FinalUnitAction.RESTRICT_ACCESS, filter_ids=cap.filter_ids)
    return None


def _replay(stored: bytes, request: Message) -> Message:
    answer = decode(stored)
    answer.hbh_id = request.hbh_id
    answer.e2e_id = request.e2e_id
    return answer


def _safe_session(view: CreditControlRequest) -> str:
    try:
        return view.session_id
    except DiameterError:
        return "?"
