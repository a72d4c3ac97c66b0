"""Nchf_ConvergedCharging v3 (TS 32.291): the three operations over the charging core.

``POST {apiRoot}/nchf-convergedcharging/v3/chargingdata``: create (CCR-Initial on Gy): 201
with ``Location`` and a ChargingDataResponse; ``.../chargingdata/{ref}/update`` (CCR-Update):
200; ``.../chargingdata/{ref}/release`` (CCR-Terminate): 204. Each ``multipleUnitUsage`` is
one :class:`~ocs.charging.decision.UnitRequest` of the session ``nchf:<ref>``, numbered by
the invocationSequenceNumber, exactly as an MSCC of a CCR is (docs/nchf.md maps the fields).

A repeated invocationSequenceNumber of a resource, with the same body (or the
retransmissionIndicator), gets the answer stored the first time and charges nothing; even
when that answer was lost (a crash between charge and save), the charge script's
per-request-id result keeps the balance from moving twice. A number repeated with another
body is a new request (free5GC's SMF sends 0 in every request): charges are numbered by the
resource itself (``Resource.count``), not by the consumer. Requests of one resource are
handled one at a time in a process; a consumer sends the next once it has the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from ocs.balance.batch import CommandBatcher
from ocs.balance.models import BucketUnit
from ocs.charging.deadlines import Deadlines
from ocs.charging.decision import ChargingCore, UnitRequest
from ocs.charging.errors import is_store_outage
from ocs.charging.nchf.answer import (
    JSON,
    SUCCESS,
    Answers,
    problem,
    refusal,
    response_body,
    result_code,
)
from ocs.charging.nchf.request import ChargingData, InvalidRequest, parse
from ocs.charging.nchf.state import Resource, ResourceStore, new_ref, tenant_of_ref
from ocs.http2 import Request, Response
from ocs.rating.context import ServiceKind
from ocs.rating.errors import RatingError

log = logging.getLogger(__name__)

API: Final = "/nchf-convergedcharging/v3"
COLLECTION: Final = f"{API}/chargingdata"
NCHF: Final = "nchf"  # the interface a record of this adapter is marked with
LOCKS_KEPT: Final = 100_000


class NchfService:
    def __init__(
        self,
        core: ChargingCore,
        batch: CommandBatcher,
        *,
        quota_holding_time: int = 0,
    ) -> None:
        config = core.config
        self.core = core
        self.config = config
        self.resources = ResourceStore(
            batch, config.session_ttl, min(config.answer_ttl, config.session_ttl)
        )
        self.answers = Answers(config, quota_holding_time)
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.deadlines = Deadlines()  # one timer for every request's (charging.deadlines)

    # -- HTTP ------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        """Route one request; never raises. Counted in ``ocs_nchf_requests_total``."""
        started = time.perf_counter()
        response = await self._route(request)
        path = request.path
        op = path.rsplit("/", 1)[-1] if path.endswith(("/update", "/release")) else "create"
        if not path.startswith(COLLECTION):
            op = "other"
        self.core.metrics.count_nchf(op, response.status, time.perf_counter() - started)
        return response

    async def _route(self, request: Request) -> Response:
        path = request.path
        if not path.startswith(COLLECTION):
            return problem(404, "RESOURCE_URI_STRUCTURE_NOT_FOUND", f"no resource at {path}")
        rest = path[len(COLLECTION) :].strip("/")
        parts = rest.split("/") if rest else []
        if request.method != "POST":
            return problem(405, "METHOD_NOT_ALLOWED", f"{request.method} {path}: use POST")
        media = (request.header("content-type") or "").split(";")[0].strip().lower()
        if media != JSON:
            return problem(415, "UNSUPPORTED_MEDIA_TYPE", "the body must be application/json")
        try:
            data = parse(request.body)
        except InvalidRequest as exc:
            return problem(
                400,
                "MANDATORY_IE_INCORRECT" if exc.param != "body" else "INVALID_MSG_FORMAT",
                str(exc),
                invalid=(exc.param, exc.reason),
            )
        try:
            async with self.deadlines(self.config.request_timeout):
                if not parts:
                    return await self.create(data, request)
                if len(parts) == 2 and parts[1] in ("update", "release"):
                    return await self.modify(parts[0], data, final=parts[1] == "release")
        except Exception as exc:
            return self._failed(exc, path)
        return problem(404, "RESOURCE_URI_STRUCTURE_NOT_FOUND", f"no resource at {path}")

    def _failed(self, exc: Exception, path: str) -> Response:
        """Anything but a refusal: the store unreachable or a bug. Never a grant: the
        consumer applies its failure handling (TS 32.290 5.2.2.x)."""
        if is_store_outage(exc):
            self.core.metrics.redis_errors.inc()
            return problem(503, "SYSTEM_FAILURE", "the balance store cannot be reached")
        log.error("Nchf %s failed: %s: %s", path, type(exc).__name__, exc, exc_info=exc)
        self.core.metrics.count_charging_error("nchf")
        return problem(500, "SYSTEM_FAILURE", "the request could not be charged")

    # -- operations ------------------------------------------------------------------------
    async def create(self, data: ChargingData, request: Request) -> Response:
        if not data.imsi and not data.msisdn:
            return problem(
                400,
                "MANDATORY_IE_MISSING",
                "subscriberIdentifier is required to create a charging data resource",
                invalid=("/subscriberIdentifier", "required"),
            )
        inputs = data.inputs(None)
        tenant = self.core.tenant_of(inputs)
        if tenant is None:
            return problem(404, "USER_UNKNOWN", "no subscriber with this identifier")
        if not data.units:
            try:
                self.core.check_subscriber(inputs, ServiceKind.DATA)
            except RatingError as exc:
                status, cause = refusal(result_code(exc), update=False)
                return problem(status, cause, str(exc))
        earlier = await self.resources.created(tenant, data.digest)
        if earlier is not None:  # the same create again: its resource, charged once
            resource, stored = await self.resources.load(tenant, earlier, data.sequence)
            if (
                resource is not None
                and not resource.closed
                and stored is not None
                and stored.get("status") == 201
            ):
                location = f"{request.scheme}://{request.authority}{COLLECTION}/{earlier}"
                body = str(stored.get("body", "")).encode()
                return Response(201, body, (("content-type", JSON), ("location", location)))
        ref = new_ref(tenant)
        resource = Resource(
            tenant=tenant,
            ref=ref,
            imsi=data.imsi,
            msisdn=data.msisdn,
            notify_uri=data.notify_uri,
            consumer=data.consumer,
            sequence=data.sequence,
            created_ms=int(time.time() * 1000),
            context=data.context(),
        )
        async with self._lock(ref):
            status, body, dropped = await self._charge(resource, data, final=False, initial=True)
            if status != 201:  # refused as a whole: no resource (nothing is reserved)
                return Response(status, body, (("content-type", "application/problem+json"),))
            await self.resources.save(
                resource, data.sequence, status, body, dropped, digest=data.digest
            )
        location = f"{request.scheme}://{request.authority}{COLLECTION}/{ref}"
        return Response(201, body, (("content-type", JSON), ("location", location)))

    async def modify(self, ref: str, data: ChargingData, *, final: bool) -> Response:
        tenant = tenant_of_ref(ref)
        if tenant is None:
            return problem(404, "CONTEXT_NOT_FOUND", f"no charging data resource {ref}")
        async with self._lock(ref):
            resource, stored = await self.resources.load(tenant, ref, data.sequence)
            if (
                stored is not None
                and resource is not None
                and (data.retransmission or stored.get("digest") == data.digest)
                and _answers(stored, final=final)
            ):  # a retry: the same answer, charged once
                return _stored(stored)
            if resource is None or resource.closed:
                return problem(404, "CONTEXT_NOT_FOUND", f"no charging data resource {ref}")
            mismatch = _other_subscriber(resource, data)
            if mismatch is not None:
                return problem(
                    400,
                    "CHARGING_FAILED",
                    "the subscriber is not the one this resource charges",
                    invalid=("/subscriberIdentifier", mismatch),
                )
            # rated as the resource's subscriber, whatever the request says (checked above),
            # with what the update leaves out from the resource
            data = data.completed(resource.context, resource.imsi, resource.msisdn)
            resource.context = data.context()
            if self.core.tenant_of(data.inputs(None)) != tenant:
                # the SIM moved to another tenant (or left) since the resource was created
                status, cause = refusal("USER_UNKNOWN", update=True)
                return problem(status, cause, "the subscriber is no longer known")
            resource.count += 1  # this request's charges are numbered count
            status, body, dropped = await self._charge(resource, data, final=final, initial=False)
            if final:  # 204, whatever the rating groups got (they were all closed)
                status, body = 204, b""
            resource.sequence = max(resource.sequence, data.sequence)
            resource.closed = final
            await self.resources.save(
                resource, data.sequence, status, body, dropped, digest=data.digest
            )
        if final:
            return Response(204)
        kind = JSON if status == 200 else "application/problem+json"
        return Response(status, body, (("content-type", kind),))

    # -- the decision ----------------------------------------------------------------------
    async def _charge(
        self, resource: Resource, data: ChargingData, *, final: bool, initial: bool
    ) -> tuple[int, bytes, tuple[int, ...]]:
        """Charge every rating group of the request; the status, the body and the rating
        groups that hold no reservation any more."""
        session = f"{NCHF}:{resource.ref}"
        payers = resource.payers
        units: list[dict[str, Any]] = []
        codes: list[str] = []
        dropped: list[int] = []
        reported: set[int] = set()
        for usage in data.units:
            rg = usage.rating_group
            reported.add(rg)
            if rg in self.config.free_rating_groups:
                units.append(self.answers.not_applicable(usage))
                codes.append("QUOTA_MANAGEMENT_NOT_APPLICABLE")
                continue
            last = final or usage.final
            wants = not last and (initial or usage.wants_units)
            # volume (data), time (rated as voice) or service-specific units (events)
            unit = resource.unit_of(rg, usage.named)
            requested, used = usage.amounts(unit)
            want = self.core.quota(unit, requested) if wants else 0
            inputs = data.inputs(usage)
            result = await self.core.charge(
                UnitRequest(
                    session=session,
                    number=resource.count,
                    rating_group=rg,
                    inputs=inputs,
                    used=used,
                    want=want,
                    final=last,
                    interface=NCHF,
                    unit=unit,
                ),
                payers,
            )
            if rg not in payers:
                dropped.append(rg)
                resource.units.pop(rg, None)
            elif unit is not BucketUnit.BYTES:
                resource.units[rg] = unit
            info, code = self.answers.unit(usage, result, unit)
            units.append(info)
            codes.append(code)
        if final:  # reservations of rating groups the release does not mention
            for rg, payer in sorted(payers.items()):
                if rg not in reported:
                    unit = resource.units.get(rg, BucketUnit.BYTES)
                    await self.core.release(
                        session, resource.count, rg, payer, resource.imsi, resource.msisdn, unit
                    )
                    dropped.append(rg)
            payers.clear()
            resource.units.clear()
            self.core.forget(session, [*dropped, *reported])
        status = 201 if initial else 200
        if codes and all(c == codes[0] for c in codes) and codes[0] != SUCCESS and not final:
            status, cause = refusal(codes[0], update=not initial)
            doc = problem(status, cause, f"every rating group was refused: {codes[0]}")
            return status, doc.body, tuple(dropped)
        return status, response_body(data, units), tuple(dropped)

    # -- one request of a resource at a time -------------------------------------------------
    def _lock(self, ref: str) -> _Held:
        return _Held(self._locks, ref)


class _Held:
    """``async with``: hold the lock of one resource (dropped when nobody waits for it)."""

    __slots__ = ("entry", "locks", "ref")

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, list[int]]], ref: str) -> None:
        self.locks = locks
        self.ref = ref
        entry = locks.get(ref)
        if entry is None:
            entry = locks[ref] = (asyncio.Lock(), [0])
        self.entry = entry

    async def __aenter__(self) -> None:
        self.entry[1][0] += 1
        try:
            await self.entry[0].acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.entry[0].release()
        self._leave()

    def _leave(self) -> None:
        self.entry[1][0] -= 1
        if self.entry[1][0] == 0:
            self.locks.pop(self.ref, None)


def _other_subscriber(resource: Resource, data: ChargingData) -> str | None:
    """Why the request names another subscriber than the resource's (None: it does not)."""
    if data.imsi and resource.imsi and data.imsi != resource.imsi:
        return "another IMSI than the resource's"
    if data.msisdn and resource.msisdn and data.msisdn != resource.msisdn:
        return "another MSISDN than the resource's"
    return None


def _answers(stored: dict[str, Any], *, final: bool) -> bool:
    """Whether ``stored`` can be the answer of this operation: a release's 204 or an
    update's 200 (or a refusal), never another operation's success: the create's 201 to
    an update, an update's 200 to a release (schemathesis found both)."""
    status = int(stored.get("status", 0))
    return status >= 400 or status == (204 if final else 200)


def _stored(stored: dict[str, Any]) -> Response:
    status = int(stored["status"])
    body = str(stored.get("body", "")).encode()
    if status == 204:
        return Response(204)
    kind = JSON if status in (200, 201) else "application/problem+json"
    return Response(status, body, (("content-type", kind),))
