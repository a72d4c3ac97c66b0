"""The charging decision for one rating group of one request, protocol-neutral.

Gy/Ro (one MSCC of a CCR, ``ocs.charging.application``) and Nchf_ConvergedCharging (one
``multipleUnitUsage`` of a ChargingDataRequest, ``ocs.charging.nchf``) describe the same thing:
a session, a request number, a rating group, the units used since the last report, whether
more units are wanted (and how many), and whether this is the last report. :class:`UnitRequest`
is that; :meth:`ChargingCore.charge` rates it (twins, plans, zones), settles a payer change,
commits the used units at their price and reserves the next grant on the payer, all in one
balance script call that also writes the rated usage record (``ocs.charging.pricing``), and
returns a :class:`UnitResult`: what was granted and whether anything is left behind it. Each
adapter turns that into its own answer (an MSCC AVP, a ``multipleUnitInformation`` object).

The same usage reported over either protocol writes the same record (``usage_record``) with
the same request-id scheme (``<session>:<number>:<rg>``), marked with its ``interface``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from ocs.balance import BalanceStore, BucketUnit, ChargeRequest, ChargeResult
from ocs.balance.keys import reservation_member
from ocs.balance.models import NOT_PRICED, Rate
from ocs.charging.config import ChargingConfig
from ocs.charging.levels import release_chain
from ocs.charging.limits import CapRef, LimitAction, binding, limits_arg, usage_caps
from ocs.charging.pricing import CounterCache, charge_at_price, reservation_rate
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
    RATED_AS,
    UNIT_OF,
    RatingInputs,
    context_of,
    payer_key,
    usage_record,
)
from ocs.observability.metrics import ChargingMetrics
from ocs.rating.catalogue import Catalogue
from ocs.rating.context import ServiceKind
from ocs.rating.engine import Resolution, find_sim, resolve
from ocs.rating.errors import RatingError
from ocs.rating.loader import Catalogues
from ocs.rating.models import TestAllowance

RATED_CACHE_SIZE: Final = 200_000  # (session, rating group) rating results kept
_N = "\x00n\x00"  # placeholders in the record context template
_AMOUNT = "\x00a\x00"


@dataclass(slots=True)
class Rated:
    """The rating of one (session, rating group), kept while its inputs stay the same: the
    resolution, the payer, the reservation rate and the record context as a JSON template
    (split around the request number and the per-level amounts)."""

    catalogue: Catalogue
    inputs: RatingInputs
    resolution: Resolution
    payer: str
    rate: Rate
    template: list[str] | None  # None: a field held a placeholder, the JSON is built per request
    caps: tuple[CapRef, ...] = ()  # the per-SIM caps of the usage (ocs.charging.limits)
    state: str = ACTIVE  # the SIM's lifecycle state (active or test: ``states.admit``)
    service: ServiceKind = ServiceKind.DATA  # what the usage was rated as (its unit's)

    def context_json(self, number: int, amounts: tuple[int, ...]) -> str:
        parts = self.template
        assert parts is not None
        out = [parts[0], str(number)]
        for i, amount in enumerate(amounts, start=1):
            out += (parts[i], str(amount))
        out.append(parts[-1])
        return "".join(out)


@dataclass(frozen=True, slots=True)
class UnitRequest:
    """One rating group of one request (an MSCC, a multipleUnitUsage), in one unit: bytes
    (data), seconds (rated as voice, by time) or events (service-specific units, rated as
    events): ``RATED_AS``."""

    session: str  # the Diameter Session-Id; ``nchf:<ChargingDataRef>`` on Nchf
    number: int  # CC-Request-Number / invocationSequenceNumber
    rating_group: int
    inputs: RatingInputs
    used: int  # units used since the last report (sum of the USUs / usedUnitContainers)
    want: int  # units to reserve now (0: no more units: a final report, no RSU on an update)
    final: bool  # the last report of this rating group (CCR-T, release)
    interface: str  # "gy" or "nchf": marks the record
    unit: BucketUnit = BucketUnit.BYTES


@dataclass(frozen=True, slots=True)
class UnitResult:
    """What :meth:`ChargingCore.charge` did. ``error``: the rating refused the usage
    (unknown subscriber, suspended, no twin, no tariff): nothing was charged or granted, and
    a reservation an earlier grant held was released."""

    want: int
    granted: int = 0
    left: int = 0  # units left on the payer behind the grant (0: these are the final units)
    error: RatingError | None = None
    payer: str | None = None
    cap: LimitAction | None = None  # the action of the per-SIM cap the result reached


class ChargingCore:
    """Rating, twins, payer changes, commit and reservation of one rating group."""

    def __init__(
        self,
        store: BalanceStore,
        catalogue: Catalogues,
        config: ChargingConfig,
        metrics: ChargingMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.counters = CounterCache()  # wallet period counters last seen (pricing)
        self.tests = TestSims(store)  # test SIMs' allowances and activations (charging.states)
        self._rated: dict[tuple[str, int], Rated] = {}

    def quota(self, unit: BucketUnit, requested: int | None) -> int:
        """The units to reserve for a request of ``requested`` (None: the default quota)."""
        want = self.config.default_quota[unit] if requested is None else requested
        return min(want, self.config.max_quota[unit])

    def forget(self, session: str, rating_groups: tuple[int, ...] | list[int]) -> None:
        """The session is over for these rating groups: drop their cached rating."""
        for rg in rating_groups:
            self._rated.pop((session, rg), None)

    def check_subscriber(self, inputs: RatingInputs, service: ServiceKind) -> None:
        """Raises the ``RatingError`` of an unknown subscriber (a request with no units)."""
        catalogue = self.catalogue.of(inputs.imsi, inputs.msisdn)  # the SIM's tenant's
        admit(find_sim(catalogue, context_of(catalogue.tenant.id, inputs, service, 0)))

    def tenant_of(self, inputs: RatingInputs) -> str | None:
        """The tenant whose catalogue in force holds the subscriber; None if none does."""
        catalogue = self.catalogue.of(inputs.imsi, inputs.msisdn)
        try:
            find_sim(catalogue, context_of(catalogue.tenant.id, inputs, ServiceKind.DATA, 0))
        except RatingError:
            return None
        return catalogue.tenant.id

    def rated(
        self,
        session: str,
        rg: int,
        inputs: RatingInputs,
        used: int,
        interface: str,
        service: ServiceKind = ServiceKind.DATA,
    ) -> Rated:
        """The rating of a session's rating group, from the per-session cache when the request
        carries the same rating inputs (event time included) on the same catalogue as the last
        one. Raises a ``RatingError`` (never cached)."""
        catalogue = self.catalogue.of(inputs.imsi, inputs.msisdn)  # one dict lookup
        key = (session, rg)
        rated = self._rated.get(key)
        if (
            rated is not None
            and rated.catalogue is catalogue
            and inputs.event_time is not None
            and rated.inputs == inputs
            and rated.service is service
        ):
            return rated
        tenant = catalogue.tenant.id
        resolution = resolve(catalogue, context_of(tenant, inputs, service, used))
        state = admit(catalogue.sims_by_imsi[resolution.imsi])  # SimNotInService: 4010
        context = self.record(session, 0, rg, inputs.msisdn, resolution, 0, interface=interface)
        context["n"] = _N
        for level in context["levels"]:
            level["amount"] = _AMOUNT
        text = json.dumps(context, separators=(",", ":"), default=str)
        n_mark, amount_mark = json.dumps(_N), json.dumps(_AMOUNT)
        template: list[str] | None = None
        if text.count(n_mark) == 1 and text.count(amount_mark) == len(resolution.quotes):
            head, tail = text.split(n_mark)
            template = [head, *tail.split(amount_mark)]
        rated = Rated(
            catalogue,
            inputs,
            resolution,
            payer_key(tenant, resolution.payer),
            reservation_rate(resolution.quotes[0]),
            template,
            usage_caps(catalogue, resolution, UNIT_OF[service]),
            state,
            service,
        )
        if key not in self._rated and len(self._rated) >= RATED_CACHE_SIZE:
            del self._rated[next(iter(self._rated))]
        self._rated[key] = rated
        return rated

    @staticmethod
    def record(
        session: str,
        number: int,
        rg: int,
        msisdn: str | None,
        resolution: Resolution,
        used: int,
        amounts: tuple[int, ...] | None = None,
        *,
        interface: str | None = None,
    ) -> dict[str, Any]:
        """What the rated usage record says besides the balance movement; ``amounts``: each
        level's price (``ocs.charging.pricing.prices``), else priced here without counters."""
        if amounts is None:
            amounts = tuple(q.price(used).amount if used else 0 for q in resolution.quotes)
        record: dict[str, Any] = usage_record(
            resolution, amounts, session=session, n=number, rg=rg, msisdn=msisdn,
            interface=interface,
        )  # fmt: skip
        return record

    async def charge(self, request: UnitRequest, payers: dict[int, str]) -> UnitResult:
        """Rate, settle, commit and reserve one rating group. ``payers``: the session's payer
        per rating group holding a reservation, updated here (a final report or an empty
        grant drops the rating group)."""
        rg = request.rating_group
        sid, number, used, want = request.session, request.number, request.used, request.want
        unit = request.unit  # bytes (data), seconds (voice), events (service-specific units)
        try:
            rated = self.rated(sid, rg, request.inputs, used, request.interface, RATED_AS[unit])
        except RatingError as exc:
            self._rated.pop((sid, rg), None)
            if rg in payers:  # release what an earlier grant still holds
                inputs = request.inputs
                await self.release(sid, number, rg, payers.pop(rg), inputs.imsi, inputs.msisdn)
            return UnitResult(want, error=exc)
        payer = rated.payer
        previous = payers.get(rg)
        msisdn = request.inputs.msisdn
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
            record = self.record(
                sid, number, rg, msisdn, rated.resolution, used, amounts,
                interface=request.interface,
            )  # fmt: skip
            return json.dumps(record, separators=(",", ":"), default=str)

        base = f"{sid}:{number}:{rg}"
        now_ms = self._now_ms()
        deadline = now_ms + (self.config.validity_time + self.config.reclaim_grace) * 1000
        member = reservation_member(sid, rg)
        if previous is not None and previous != payer:
            # the twin or payer changed mid-session (or the SIM left test): settle on the
            # old payer (and the levels above it) first
            if is_test_payer(previous):
                settled = allowance_record(
                    rated.resolution, session=sid, n=number, rg=rg, msisdn=msisdn
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
        charge = ChargeRequest(
            request_id=base,
            member=member,
            unit=unit,
            now_ms=now_ms,
            used=used,
            want=want,
            min_grant=min(want, self.config.min_grant[unit]),
            rate=rated.rate,
            deadline_ms=deadline,
            limits=limits_arg(rated.caps, rated.catalogue.tenant.time_zone, now_ms)
            if rated.caps
            else (),
        )
        result: ChargeResult | None = None
        if test is not None:  # counted on the allowance, recorded without a price
            record = allowance_record(rated.resolution, session=sid, n=number, rg=rg, msisdn=msisdn)
            result = await self.store.charge(  # the allowance is the test SIM's limit
                payer, replace(charge, rate=NOT_PRICED, context_json=record, limits=())
            )
            if result.granted == 0 and want > 0 and test.activate == "exhausted":
                # what the allowance cannot cover is charged as active, and the SIM moves
                await self._activate(rated, "test allowance used")
                payer = rated.payer
                charge = replace(charge, request_id=f"{base}:active", used=0)
                result = None
        if result is None:
            # the price of the usage, and a wallet debited exactly it (ocs.charging.pricing)
            result, _ = await charge_at_price(
                self.store,
                payer,
                charge,
                rated.catalogue,
                rated.resolution,
                self.counters,
                context,
            )
        if request.final or result.granted == 0:
            payers.pop(rg, None)
        else:
            payers[rg] = payer
        self.metrics.count_grant(want, result.granted, result.left, self.config.fui_action, payer)
        cap = binding(rated.caps, result.limit) if result.limit else None
        return UnitResult(
            want,
            result.granted,
            result.left,
            payer=payer,
            cap=cap.action if cap is not None else None,
        )

    async def _test_allowance(self, rated: Rated) -> TestAllowance | None:
        """The test allowance that pays a test SIM's usage; None: the usage is charged as
        active (its plan activates test SIMs on first use: asked for here)."""
        allowance = allowance_of(rated.catalogue, rated.resolution)
        if allowance.activate == "first_use":
            await self._activate(rated, "first use")
            return None
        return allowance

    async def _activate(self, rated: Rated, reason: str) -> None:
        await self.tests.activate(rated.catalogue.tenant.id, rated.resolution.imsi, reason)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def release(
        self,
        session: str,
        number: int,
        rg: int,
        payer: str,
        imsi: str,
        msisdn: str | None,
        unit: BucketUnit = BucketUnit.BYTES,
    ) -> None:
        """Release the reservation ``session`` holds for ``rg`` on ``payer`` and every level
        above it (nothing used); ``imsi``/``msisdn``: the subscriber, for its catalogue;
        ``unit``: the reservation's (what the script reports left and marks exhausted in)."""
        root, levels = release_chain(self.catalogue.of(imsi, msisdn), payer)
        await self.store.charge(
            payer,
            ChargeRequest(
                request_id=f"{session}:{number}:{rg}:release",
                member=reservation_member(session, rg),
                unit=unit,
                now_ms=self._now_ms(),
                root=root,
                levels=levels,
            ),
        )
