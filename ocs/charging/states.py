"""What a SIM's lifecycle state means for charging (docs/sim-states.md), on every charging
path (Gy sessions and events, events over HTTP):

* ``active``: charged as usual.
* ``inventory``, ``suspended``, ``deactivated``, ``terminated``: refused with 4010
  DIAMETER_END_USER_SERVICE_DENIED (:class:`SimNotInService`, a ``SubscriptionInactive``, so
  every path's one error mapping answers it); nothing is reserved or charged.
* ``test``: the usage is charged to the SIM's own test allowance (the plan's
  ``test_allowance``: a payer ``<tenant>:test:<imsi>`` with one bucket per unit, created on
  first use, never refilled), with a record that has no priced level (counted, never
  billed). A test SIM with nothing left gets 4012 DIAMETER_CREDIT_LIMIT_REACHED. A plan may
  activate its test SIMs by themselves (``activate``): on their ``first_use`` (from that
  usage on they are charged as active) or once the allowance is ``exhausted`` (the usage
  the allowance cannot cover is charged as active). The move to ``active`` is asked for in
  Redis (:data:`ACTIVATIONS`) and made by :func:`apply_activations` (every charging
  node's housekeeping) through the catalogue, journaled as ``system``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Final

from ocs.balance import BalanceStore, BucketUnit, ChargeRequest
from ocs.balance.keys import PayerKeys, payer_tag
from ocs.balance.models import BucketSpec
from ocs.provisioning.catalogues import State, TenantCatalogues
from ocs.provisioning.keys import ACTIVATIONS
from ocs.provisioning.states import (
    SYSTEM,
    item_state,
    member_state,
    range_of,
    set_member_state,
    set_state,
)
from ocs.rating.catalogue import Catalogue, CompiledSim
from ocs.rating.engine import Resolution
from ocs.rating.errors import SubscriptionInactive
from ocs.rating.models import TestAllowance

log = logging.getLogger(__name__)

ACTIVE: Final = "active"
TEST: Final = "test"
REFUSED: Final = frozenset({"inventory", "suspended", "deactivated", "terminated"})
TEST_KIND: Final = "test"  # the payer kind of a test allowance (``<tenant>:test:<imsi>``)
ASK_AGAIN_S: Final = 30.0  # an activation asked for is asked again after this (not made yet)
ACTIVATIONS_A_PASS: Final = 1000
NO_ALLOWANCE: Final = TestAllowance()


class _NothingToDo(Exception):
    """No SIM asked for is still in test: no catalogue change."""


class SimNotInService(SubscriptionInactive):
    """The SIM's state refuses charging (inventory, suspended, deactivated, terminated)."""

    reason = "sim_not_in_service"


def admit(sim: CompiledSim) -> str:
    """The SIM's state when it may be charged (active or test); raises
    :class:`SimNotInService` (4010) otherwise."""
    state = sim.state
    if state in REFUSED:
        raise SimNotInService(f"SIM {sim.imsi} is {state}")
    return state


def allowance_of(catalogue: Catalogue, resolution: Resolution) -> TestAllowance:
    """The test allowance of the plan that prices the usage (level 0); none: nothing."""
    plan = catalogue.plans.get(resolution.quotes[0].plan_id) if resolution.quotes else None
    found = plan.test_allowance if plan is not None else None
    return NO_ALLOWANCE if found is None else found


def allowance_payer(tenant: str, imsi: str) -> str:
    return payer_tag(tenant, TEST_KIND, imsi)


def is_test_payer(tag: str) -> bool:
    return tag.split(":", 2)[1:2] == [TEST_KIND]


def allowance_buckets(allowance: TestAllowance) -> list[BucketSpec]:
    sizes = (
        (BucketUnit.BYTES, allowance.data_bytes),
        (BucketUnit.MESSAGES, allowance.sms),
        (BucketUnit.SECONDS, allowance.voice_seconds),
        (BucketUnit.EVENTS, allowance.events),
    )
    return [BucketSpec(f"test:{unit}", unit, size) for unit, size in sizes]


def allowance_record(
    resolution: Resolution, *, session: str, n: int, rg: int, msisdn: str | None
) -> str:
    """The record of test usage: who used what, on which plan, and no priced level (the
    bill run prices ``levels``: a test usage is counted and never billed)."""
    first = resolution.quotes[0] if resolution.quotes else None
    record: dict[str, Any] = {
        "session": session,
        "n": n,
        "rg": rg,
        "imsi": resolution.imsi,
        "msisdn": msisdn,
        "twin": resolution.twin,
        "subscription": resolution.subscription,
        "account": resolution.account,
        "service": str(first.service) if first is not None else None,
        "levels": [],
        "test": True,
        "plan": first.plan_id if first is not None else None,
    }
    return json.dumps(record, separators=(",", ":"))


class TestSims:
    """A charging process's side of test SIMs: their allowance payers and the activations
    it asked for."""

    __slots__ = ("_asked", "store")

    def __init__(self, store: BalanceStore) -> None:
        self.store = store
        self._asked: dict[tuple[str, str], float] = {}

    async def payer(self, tenant: str, imsi: str, allowance: TestAllowance, now_ms: int) -> str:
        """The SIM's allowance payer, made when the store does not hold it (``provision``
        only creates missing buckets: a used allowance is never refilled). Asked of the
        store on each use, never remembered by the process: a store that lost the payer (a
        failover to a replica that had not got it, a FLUSHALL) gets it again on the next
        use, as a process started after the loss would make it, instead of refusing the SIM
        (4012) until this process restarts."""
        tag = allowance_payer(tenant, imsi)
        if not await self.store.batch.execute("EXISTS", PayerKeys(tag).buckets):
            await self.store.provision(tag, allowance_buckets(allowance), now_ms, resize=False)
        return tag

    async def activate(self, tenant: str, imsi: str, reason: str) -> None:
        """Ask for the SIM's move to active (made by :func:`apply_activations`)."""
        now = time.monotonic()
        key = (tenant, imsi)
        if self._asked.get(key, 0.0) > now:
            return
        if len(self._asked) > 100_000:
            self._asked.clear()
        self._asked[key] = now + ASK_AGAIN_S
        member = json.dumps([tenant, imsi, reason], separators=(",", ":"))
        await self.store.redis.sadd(ACTIVATIONS, member)


async def debit_test_event(
    tests: TestSims,
    catalogue: Catalogue,
    resolution: Resolution,
    *,
    unit: BucketUnit,
    units: int,
    request_id: str,
    now_ms: int,
    session: str,
    n: int,
    rg: int,
    msisdn: str | None,
) -> str | None:
    """A test SIM's event, all or nothing, on its test allowance: "ok" or "insufficient";
    None when it is to be charged as active instead (its plan activates it on first use, or
    once the allowance is exhausted: the move is asked for here). CCR-Event and events
    posted over HTTP both call it."""
    tenant, imsi = catalogue.tenant.id, resolution.imsi
    allowance = allowance_of(catalogue, resolution)
    if allowance.activate == "first_use":
        await tests.activate(tenant, imsi, "first use")
        return None
    tag = await tests.payer(tenant, imsi, allowance, now_ms)
    record = allowance_record(resolution, session=session, n=n, rg=rg, msisdn=msisdn)
    request = ChargeRequest(
        request_id, f"{session}|{rg}", unit, now_ms, used=units, mode="debit",
        context_json=record,
    )  # fmt: skip
    result = await tests.store.charge(tag, request)
    if result.status != "insufficient":
        return "ok"
    if allowance.activate == "exhausted":
        await tests.activate(tenant, imsi, "test allowance used")
        return None
    return "insufficient"


async def apply_activations(store: BalanceStore, data_dir: Path) -> int:
    """Make the moves to active that charging asked for (:data:`ACTIVATIONS`), one
    catalogue change per tenant, journaled as ``system`` with the reason; a SIM no longer in
    test is left alone. The number of SIMs activated."""
    raw = await store.redis.spop(ACTIVATIONS, ACTIVATIONS_A_PASS)
    if not raw:
        return 0
    asked: dict[str, dict[str, str]] = defaultdict(dict)
    for member in raw:
        tenant, imsi, reason = json.loads(
            member if isinstance(member, bytes | str) else str(member)
        )
        asked[str(tenant)][str(imsi)] = str(reason)
    catalogues = TenantCatalogues(store, data_dir)
    done = 0
    for tenant, sims in sorted(asked.items()):
        moved: list[str] = []

        def mutate(state: State, sims: dict[str, str] = sims, moved: list[str] = moved) -> None:
            singles = state.get("sims") or {}
            ranges = state.get("sim_ranges") or {}
            for imsi in sims:
                item = singles.get(imsi)
                if item is not None:
                    if item_state(item) == TEST:
                        set_state(item, ACTIVE)
                        moved.append(imsi)
                    continue
                held = range_of(ranges, imsi)
                if held is not None and member_state(held, imsi) == TEST:
                    set_member_state(held, imsi, ACTIVE)
                    moved.append(imsi)
            if not moved:
                raise _NothingToDo

        reasons = "; ".join(sorted(set(sims.values())))
        try:
            await catalogues.change(
                tenant, mutate, source="auto activation", actor=SYSTEM, reason=reasons
            )
        except _NothingToDo:
            continue
        done += len(moved)
    return done
