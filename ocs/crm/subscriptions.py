"""Subscription rows (SIM, owner account, plan, payer, properties, status, SIM twins):
create or update by IMSI, ending in the state the equivalent API calls leave.

A new IMSI becomes what ``POST /v1/subscriptions`` stores. An existing one changes the way
``PATCH``, ``PUT .../twins`` and ``suspend``/``resume``/``terminate`` change it: a different
plan is appended to the plan history from ``effective_from`` (default: the import's start),
twins keep their plan history and status, properties are replaced. Open sessions of a
changed SIM get an RAR, of a suspended or terminated one an ASR (see docs/import.md)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from ocs.crm.fields import (
    Change,
    RowError,
    cell_json,
    claim_key,
    first_error,
    payer_value,
    properties_value,
)
from ocs.crm.readers import Row
from ocs.provisioning.catalogues import State
from ocs.provisioning.errors import Refused
from ocs.provisioning.sims import PayerRef, SubscriptionCreate, sim_item, start_of_day, twin_item
from ocs.provisioning.states import CREATED_IN, SIGNAL_ON_ENTRY, STATES, item_state, set_state
from ocs.rating.models import FilterSpec

COLUMNS: Final = (
    "imsi",
    "msisdn",
    "iccid",
    "account",
    "plan",
    "payer",
    "properties",
    "status",
    "time_zone",
    "effective_from",
    "twins",
)
STATUSES: Final = STATES  # a SIM's lifecycle state (docs/sim-states.md)
_FILTER: Final = TypeAdapter(FilterSpec)
_SHORTHAND: Final = ("plan", "payer", "properties")


def _fields(row: Row) -> dict[str, Any]:
    fields = dict(row.fields)
    if "payer" in fields:
        fields["payer"] = payer_value("payer", fields["payer"])
    if row.text:
        if "properties" in fields:
            fields["properties"] = properties_value("properties", fields["properties"])
        if "twins" in fields:
            fields["twins"] = cell_json("twins", fields["twins"], list)
    return fields


def _canonical_filter(raw: object) -> object:
    try:
        return _FILTER.validate_python(raw).model_dump(mode="json", by_alias=True)
    except ValidationError:
        return raw


def _same_twin(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Equal, filters compared by meaning (the catalogue stores them normalised, the API as
    given); the filters are only parsed when their text differs."""
    for key in new.keys() | old.keys():
        a, b = new.get(key), old.get(key)
        if a == b:
            continue
        if key != "filter" or _canonical_filter(a or {}) != _canonical_filter(b or {}):
            return False
    return True


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    """A copy the update may change: the item and its twins are new dicts; the values
    inside (plans, payer, filter, properties) are replaced, never changed in place."""
    copied = dict(item)
    copied["twins"] = [dict(t) for t in item["twins"]]
    return copied


class _Ranges:
    """The IMSI and MSISDN spans of the tenant's ``sim_ranges`` (not expanded)."""

    def __init__(self, ranges: Mapping[str, dict[str, Any]]) -> None:
        self.imsi: list[tuple[int, int, int, str]] = []
        self.msisdn: list[tuple[int, int, int, str]] = []
        for rid, item in ranges.items():
            count = int(item["count"])
            first = str(item["imsi_first"])
            self.imsi.append((int(first), int(first) + count, len(first), rid))
            if item.get("msisdn_first"):
                m = str(item["msisdn_first"])
                self.msisdn.append((int(m), int(m) + count, len(m), rid))

    @staticmethod
    def _find(spans: list[tuple[int, int, int, str]], digits: str) -> str | None:
        value = int(digits)
        for low, high, width, rid in spans:
            if low <= value < high and len(digits) == width:
                return rid
        return None

    def range_of_imsi(self, imsi: str) -> str | None:
        return self._find(self.imsi, imsi) if self.imsi else None

    def range_of_msisdn(self, msisdn: str) -> str | None:
        return self._find(self.msisdn, msisdn) if self.msisdn else None


class SubscriptionPlanner:
    """Turns subscription rows into changes against one state (one batch)."""

    section = "sims"

    def __init__(self, state: State, now: datetime) -> None:
        self.now = now
        self.start = start_of_day()
        self.sims: Mapping[str, dict[str, Any]] = state.get("sims") or {}
        self.accounts = set(state.get("accounts") or {})
        self.plans = {k: str(p.get("currency")) for k, p in (state.get("plans") or {}).items()}
        self.pools = {k: str(p.get("payment")) for k, p in (state.get("pools") or {}).items()}
        self.wallets = {k: str(w.get("currency")) for k, w in (state.get("wallets") or {}).items()}
        self.contracts = set(state.get("contracts") or {})
        self.ranges = _Ranges(state.get("sim_ranges") or {})
        self.msisdns = {str(s["msisdn"]): imsi for imsi, s in self.sims.items() if s.get("msisdn")}
        self.lines: dict[str, int] = {}

    def plan(self, row: Row) -> Change | None:
        fields = _fields(row)
        imsi = claim_key(fields, "imsi", f"IMSI {fields.get('imsi')}", self.lines, row.line)
        status = fields.pop("status", None)
        if status is not None and status not in STATUSES:
            raise RowError("status", f"must be one of {', '.join(STATUSES)}")
        before = self.sims.get(imsi)
        if before is None and isinstance(imsi, str) and imsi.isdigit():
            rid = self.ranges.range_of_imsi(imsi)
            if rid is not None:
                raise RowError("imsi", f"SIM is part of sim_range {rid!r}; change the range")
        if "twins" in fields and (used := [n for n in _SHORTHAND if n in fields]):
            raise RowError("twins", f"give either twins or {'/'.join(used)}, not both")
        if before is not None:
            fields.setdefault("account", before["account"])
        elif "twins" not in fields and not ("plan" in fields and "payer" in fields):
            raise RowError("plan", "a new subscription needs `plan` and `payer`, or `twins`")
        try:
            body = SubscriptionCreate.model_validate(fields)
        except ValidationError as exc:
            raise first_error(exc) from None
        self._check_refs(body)
        if body.msisdn is not None:
            self._check_msisdn(imsi, body.msisdn)
        if before is None:
            return self._create(row, body, status)
        return self._update(row, body, fields, status, before)

    # -- references --------------------------------------------------------------------
    def _check_refs(self, body: SubscriptionCreate) -> None:
        if body.account not in self.accounts:
            raise RowError("account", f"unknown account {body.account!r}")
        if body.twins is None:
            if body.plan is not None:
                self._check_plan("plan", body.plan)
            if body.payer is not None:
                self._check_payer("payer", body.payer, body.plan)
            return
        for i, twin in enumerate(body.twins):
            try:
                _FILTER.validate_python(twin.filter)
            except ValidationError as exc:
                raise first_error(exc, f"twins[{i}].filter") from None
            self._check_plan(f"twins[{i}].plan", twin.plan)
            self._check_payer(f"twins[{i}].payer", twin.payer, twin.plan)
        ids = [t.id for t in body.twins]
        if len(set(ids)) != len(ids):
            raise RowError("twins", "twin ids must be unique")

    def _check_plan(self, where: str, plan: str) -> None:
        if plan not in self.plans:
            raise RowError(where, f"unknown plan {plan!r}")

    def _check_payer(self, where: str, payer: PayerRef, plan: str | None) -> None:
        if payer.kind in ("prepaid_pool", "postpaid_pool"):
            payment = self.pools.get(payer.id)
            if payment is None:
                raise RowError(where, f"unknown pool {payer.id!r}")
            if payer.kind != f"{payment}_pool":
                raise RowError(where, f"pool {payer.id!r} is {payment}, not {payer.kind}")
        elif payer.kind == "wallet":
            currency = self.wallets.get(payer.id)
            if currency is None:
                raise RowError(where, f"unknown wallet {payer.id!r}")
            if plan is not None and self.plans.get(plan, currency) != currency:
                raise RowError(
                    where, f"wallet {payer.id!r} holds {currency}, plan {plan!r} is not in it"
                )
        elif payer.id not in self.contracts:
            raise RowError(where, f"unknown contract {payer.id!r}")

    def _check_msisdn(self, imsi: str, msisdn: str) -> None:
        owner = self.msisdns.get(msisdn)
        if owner is not None and owner != imsi:
            raise RowError("msisdn", f"MSISDN {msisdn} belongs to IMSI {owner}")
        rid = self.ranges.range_of_msisdn(msisdn)
        if rid is not None:
            raise RowError("msisdn", f"MSISDN {msisdn} belongs to sim_range {rid!r}")
        self.msisdns[msisdn] = imsi

    # -- create / update ---------------------------------------------------------------
    def _create(self, row: Row, body: SubscriptionCreate, status: str | None) -> Change:
        if status is not None and status not in CREATED_IN:
            raise RowError("status", f"a new subscription cannot be {status}")
        item = sim_item(body)
        if status is not None:
            item["state"] = status
        return Change(row.line, self.section, body.imsi, None, item)

    def _update(
        self,
        row: Row,
        body: SubscriptionCreate,
        fields: dict[str, Any],
        status: str | None,
        before: dict[str, Any],
    ) -> Change | None:
        item = _copy(before)
        for name in ("msisdn", "iccid", "time_zone", "account"):
            if name in fields and item.get(name) != getattr(body, name):
                item[name] = getattr(body, name)
        at = body.effective_from or self.now
        if body.twins is not None:
            previous = {t["id"]: t for t in item["twins"]}
            twins = []
            for spec in body.twins:
                new = twin_item(spec, body.effective_from or self.start)
                old = previous.get(spec.id)
                if old is not None:
                    new["status"] = old.get("status", "active")
                    new["plans"] = self._plans(old, spec.plan, at)
                    if _same_twin(new, old):
                        new = old
                twins.append(new)
            item["twins"] = twins
        else:
            if "payer" in fields and body.payer is not None:
                if len(item["twins"]) != 1:
                    names = ", ".join(t["id"] for t in item["twins"])
                    raise RowError("payer", f"the SIM has twins {names}: give `twins`")
                if item["twins"][0]["payer"] != body.payer.model_dump():
                    item["twins"][0]["payer"] = body.payer.model_dump()
            for twin in item["twins"]:
                if "plan" in fields and body.plan is not None:
                    twin["plans"] = self._plans(twin, body.plan, at)
                if "properties" in fields and twin.get("properties") != body.properties:
                    twin["properties"] = dict(body.properties)
        edited = item != before
        blocked = False
        if status is not None and status != item_state(item):
            blocked = self._set_status(item, status)
        if item == before:
            return None
        signal = "asr" if blocked else ("rar" if edited else None)
        pair = (body.imsi, before.get("msisdn"))
        return Change(row.line, self.section, body.imsi, before, item, signal, pair)

    @staticmethod
    def _plans(twin: dict[str, Any], plan: str, at: datetime) -> list[dict[str, Any]]:
        plans: list[dict[str, Any]] = twin["plans"]
        if plans[-1]["plan"] == plan:
            return plans
        last = datetime.fromisoformat(plans[-1]["from"])
        if at <= last:
            raise RowError(
                "effective_from",
                f"twin {twin['id']!r} has a plan from {last.isoformat()}; a change must be later",
            )
        return [*plans, {"plan": plan, "from": at.isoformat()}]

    @staticmethod
    def _set_status(item: dict[str, Any], status: str) -> bool:
        """Move the SIM to ``status`` the way ``POST .../state`` does (the transition
        table, docs/sim-states.md); True when sessions must end (ASR)."""
        try:
            set_state(item, status)
        except Refused as exc:
            raise RowError("status", exc.detail or exc.title) from None
        return SIGNAL_ON_ENTRY[status] == "asr"
