"""The Gy/Ro credit-control application: CCR-Initial/Update/Terminate/Event in, CCA out.

``handle_ccr`` validates the request type, answers retransmissions from the stored answer,
and dispatches by name to ``handle_initial``, ``handle_update``, ``handle_terminate`` and
``handle_event``. Each MSCC is rated (``ocs.rating``) and reserved/committed on its payer by
one balance script call (``ocs.balance``); each gets its own Result-Code in the answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from ocs.balance import BalanceStore, BucketUnit
from ocs.charging.config import ChargingConfig
from ocs.charging.deadlines import Deadlines
from ocs.charging.decision import ChargingCore, UnitRequest, UnitResult
from ocs.charging.errors import is_store_outage, result_code_for
from ocs.charging.events import EventCharging
from ocs.charging.failover import FailureHandling
from ocs.charging.limits import LimitAction
from ocs.charging.sessions import SessionStore
from ocs.charging.states import (
    admit,
)
from ocs.charging.usage import (
    context_of,
    rating_inputs,
    service_of,
    session_units,
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
from ocs.rating.context import ServiceKind
from ocs.rating.engine import Resolution, resolve
from ocs.rating.errors import RatingError
from ocs.rating.loader import Catalogues

log = logging.getLogger(__name__)

SUCCESS: Final = int(ResultCode.DIAMETER_SUCCESS)
GY: Final = "gy"  # the interface a record of this application is marked with
CREDIT_LIMIT_REACHED: Final = int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)
TYPE_NAMES: Final = {int(t): t.name.split("_")[0].lower() for t in CcRequestType}
OPEN_SESSIONS_KEPT: Final = 1_000_000  # sessions counted in ocs_active_sessions, at most
MSCC_CACHE_SIZE: Final = 4096  # encoded MSCC answers kept (grants repeat)
HANDLER_NAMES: Final = {
    CcRequestType.INITIAL_REQUEST: "handle_initial",
    CcRequestType.UPDATE_REQUEST: "handle_update",
    CcRequestType.TERMINATION_REQUEST: "handle_terminate",
    CcRequestType.EVENT_REQUEST: "handle_event",
}


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
        # the protocol-neutral decision (ocs.charging.decision), shared with Nchf
        self.core = ChargingCore(store, catalogue, config, metrics, clock=self._now)
        # sessions counted in ocs_active_sessions (opened here by a CCR-I answered 2001), with
        # the monotonic time they opened: a CCR-T of a session refused at CCR-I (or opened by
        # another process) is not subtracted, so the gauge never goes below 0; a session not
        # heard of for session_ttl (its state expired) stops counting
        self._open: dict[str, float] = {}
        self.counters = self.core.counters  # wallet period counters last seen (pricing)
        self.tests = self.core.tests  # test SIMs' allowances and activations (charging.states)
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
                self.core.forget(sid, [*outcome.dropped, *outcome.payers])
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
        try:
            self.core.check_subscriber(rating_inputs(view, None), service_of(view))
        except RatingError as exc:
            out.result_code = result_code_for(exc)

    def rate(
        self,
        view: CreditControlRequest,
        mscc: MultipleServicesCreditControl | None,
        quantity: int,
        service: ServiceKind | None = None,
        at: datetime | None = None,
    ) -> Resolution:
        """``service``: what the usage is rated as (a session's unit's, ``RATED_AS``); None:
        the CCR's (``service_of``). ``at``: when the usage happened, for a CCR without an
        Event-Timestamp (a replay rates at its journal time, not at the time of the replay);
        None: now."""
        inputs = rating_inputs(view, mscc)
        if inputs.event_time is None and at is not None:
            inputs = replace(inputs, event_time=at)
        catalogue = self.catalogue.of(inputs.imsi, inputs.msisdn)
        kind = service_of(view) if service is None else service
        resolution = resolve(catalogue, context_of(catalogue.tenant.id, inputs, kind, quantity))
        admit(catalogue.sims_by_imsi[resolution.imsi])  # SimNotInService: 4010
        return resolution

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
        return self.core.record(
            view.session_id, view.request_number, rg, view.msisdn, resolution, used, amounts,
            interface=GY,
        )  # fmt: skip

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
        # a session's units: volume (data), CC-Time (rated as voice), service-specific units
        # (rated as events), by what the MSCC names (usage.session_units); CCR-Events go to
        # handle_event
        unit, requested, used = session_units(mscc)
        wants_more = (
            not final
            and (initial or mscc.requested is not None)
            and mscc.reporting_reason != ReportingReason.FINAL
        )
        want = self.core.quota(unit, requested) if wants_more else 0
        request = UnitRequest(
            session=view.session_id,
            number=view.request_number,
            rating_group=rg,
            inputs=rating_inputs(view, mscc),
            used=used,
            want=want,
            final=final,
            interface=GY,
            unit=unit,
        )
        held = rg in out.payers
        result = await self.core.charge(request, out.payers)
        if result.error is not None:
            code = result_code_for(result.error)
            out.add(mscc_answer(code, rating_group=mscc.rating_group), code)
            if held:
                out.dropped.append(rg)
            return
        if rg not in out.payers:
            out.dropped.append(rg)
        # the answer depends on these alone (the config is fixed): grants repeat, so the
        # encoded MSCC is kept
        ids = mscc.service_identifiers
        action = result.cap
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

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _now(self) -> float:
        return self.clock()  # read at each call: a test may set ``clock`` later

    def _mscc_for(
        self,
        mscc: MultipleServicesCreditControl,
        unit: BucketUnit,
        want: int,
        result: UnitResult,
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
        result: UnitResult,
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
        await self.core.release(
            view.session_id, view.request_number, rg, payer, view.imsi or "", view.msisdn
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
