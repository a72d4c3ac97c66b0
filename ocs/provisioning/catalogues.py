"""Each tenant's catalogue state, and the one place it is changed and put in force: the
HTTP API, CRM import and ``ocs catalog apply`` all go through :meth:`TenantCatalogues.change`.

The state is one JSON document per tenant: ``{"tenant": {...}, section: {id: item}}`` with
every item validated by the rating models. A change (apply a catalogue, create or change a
subscription or wallet) runs under a per-tenant Redis lock: load, change, compile the whole
catalogue (refused with every issue if invalid), write it as a catalogue folder under
``data_dir/catalogues/<tenant>/rev-<n>/``, provision payers (pools resize, new wallets),
store the state with the pending journal of its SIM state moves in one transaction, write
that journal out and stamp the state in force (:mod:`ocs.provisioning.journal`: crash-safe,
a change first completes what a dead one left), and, when this tenant is the one the
Diameter path serves, point ``ocs:catalog`` and the MSISDN index at it. Running servers pick
it up on their next reload (at once when :mod:`ocs.network` broadcasts the change).

Steps that a process killed mid-change can still leave half done (not journaled): payer
provisioning and thresholds before the state (each idempotent, redone by the next change),
the identity claims' commit after it (``identity``), and the ``ocs:catalog`` pointer of the
served tenant after the stamp (redone by the next ``ocs catalog apply``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from redis.exceptions import LockError

from ocs.balance import BalanceStore
from ocs.balance.keys import CATALOG, MSISDN_INDEX, payer_tag
from ocs.balance.thresholds import put_catalogue_thresholds
from ocs.lifecycle import Lifecycle
from ocs.provisioning.chunked import sync_hash
from ocs.provisioning.errors import Refused
from ocs.provisioning.identity import claim, identities_of
from ocs.provisioning.journal import PENDING, Commit, commit, complete, pending_tenants, step
from ocs.provisioning.keys import (
    IN_FORCE,
    lock_key,
    msisdn_key,
    revision_key,
    state_key,
    versions_key,
)
from ocs.provisioning.payers import (
    folder_files,
    lifecycle_rules,
    msisdn_index,
    payer_buckets,
    payer_roots,
    payer_thresholds,
    share_files,
)
from ocs.provisioning.states import (
    SYSTEM,
    Actor,
    entries,
    explicit,
    keep_states,
    moves,
    outbox_event,
    snapshot,
)
from ocs.rating.catalogue import Catalogue
from ocs.rating.compiler import Sourced
from ocs.rating.errors import Issue, Severity
from ocs.rating.loader import add_document, check_documents

CATALOGUE_SECTIONS: Final = (
    "countries",
    "regions",
    "zone_sets",
    "time_bands",
    "tax_profiles",
    "plans",
    "addons",
)
"""Replaced as a whole when an applied document has them (the product catalogue)."""
ENTITY_SECTIONS: Final = (
    "accounts",
    "pools",
    "wallets",
    "contracts",
    "sims",
    "sim_ranges",
    "sim_limits",
)
"""Merged item by item (customers, SIMs and payers survive a new product catalogue)."""
ID_FIELD: Final = {"countries": "code", "sims": "imsi", "sim_limits": "imsi"}
FOLDERS_KEPT: Final = 3  # revision folders kept under data_dir/catalogues/<tenant>/
LOCK_TIMEOUT: Final = 60.0  # a lock its holder stopped renewing (a dead process) expires
LOCK_WAIT: Final = 120.0  # seconds a change waits for another change of the tenant

State = dict[str, Any]
Mutation = Callable[[State], object]
"""Changes the state in place; may return the state's already compiled :class:`Catalogue`
(a bulk import compiles it off the lock) so that it is not compiled a second time."""


def item_id(section: str, item: Mapping[str, Any]) -> str:
    return str(item[ID_FIELD.get(section, "id")])


def dump_item(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def documents_of(state: State) -> dict[str, Any]:
    """The state as one catalogue document (the format of a ``policies/`` file)."""
    doc: dict[str, Any] = {}
    if state.get("tenant"):
        doc["tenant"] = state["tenant"]
    for section in (*CATALOGUE_SECTIONS, *ENTITY_SECTIONS):
        items = state.get(section) or {}
        if items:
            doc[section] = list(items.values())
    return doc


def issues_problem(issues: list[Issue] | tuple[Issue, ...]) -> Refused:
    errors = [
        {"file": i.file, "path": i.path, "reason": i.reason}
        for i in issues
        if i.severity is Severity.ERROR
    ]
    first = errors[0]["reason"] if errors else "invalid catalogue"
    return Refused(422, "catalogue-invalid", "Catalogue refused", first, issues=errors[:50])


def merge_documents(state: State, documents: Mapping[str, Any], tenant: str) -> State:
    """Validate every item of ``documents`` (issues name the file) and merge into a copy."""
    sections: dict[str, list[Sourced]] = {}
    issues: list[Issue] = []
    for name, document in documents.items():
        add_document(str(name), document, sections, issues)
    if any(i.severity is Severity.ERROR for i in issues):
        raise issues_problem(issues)
    out: State = {k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()}
    for where, model in sections.get("tenant", []):
        if model.id != tenant:
            raise Refused(
                403,
                "tenant-mismatch",
                "Wrong tenant",
                f"{where.file}: tenant.id {model.id!r} is not the token's tenant {tenant!r}",
            )
        out["tenant"] = dump_item(model)
    for section in CATALOGUE_SECTIONS:
        if section in sections:
            out[section] = {
                item_id(section, d): d for d in map(dump_item, _models(sections[section]))
            }
    for section in ENTITY_SECTIONS:
        merged = dict(out.get(section) or {})
        for data in map(dump_item, _models(sections.get(section, []))):
            merged[item_id(section, data)] = data
        out[section] = merged
    return out


def _models(sourced: list[Sourced]) -> list[Any]:
    return [model for _, model in sourced]


@dataclass(slots=True)
class Compiled:
    """A compiled revision and indexes the API needs (built lazily)."""

    revision: int
    catalogue: Catalogue
    _payer_sims: dict[str, list[tuple[str, str | None]]] | None = None
    _sorted: list[str] | None = None
    _iccids: tuple[dict[str, str], dict[str, str]] | None = None  # by ICCID, by IMSI
    _account_payers: dict[str, set[str]] | None = None

    def payer_sims(self) -> dict[str, list[tuple[str, str | None]]]:
        """Payer tag -> (IMSI, MSISDN) of every SIM with a twin on that payer."""
        if self._payer_sims is None:
            tenant = self.catalogue.tenant.id
            index: dict[str, list[tuple[str, str | None]]] = {}
            for sim in self.catalogue.sims_by_imsi.values():
                seen: set[str] = set()
                for twin in sim.twins:
                    tag = f"{tenant}:{twin.payer.kind}:{twin.payer.id}"
                    if tag not in seen:
                        seen.add(tag)
                        index.setdefault(tag, []).append((sim.imsi, sim.msisdn))
            self._payer_sims = index
        return self._payer_sims

    def _iccid_index(self) -> tuple[dict[str, str], dict[str, str]]:
        if self._iccids is None:
            by_iccid = {iccid: imsi for imsi, iccid in self.catalogue.iccid_by_imsi.items()}
            self._iccids = by_iccid, {imsi: iccid for iccid, imsi in by_iccid.items()}
        return self._iccids

    def imsi_of_iccid(self, iccid: str) -> str | None:
        """The IMSI of the SIM with this ICCID (SIMs listed one by one carry one; a range's
        SIMs have none)."""
        return self._iccid_index()[0].get(iccid)

    def iccid_of(self, imsi: str) -> str | None:
        return self._iccid_index()[1].get(imsi)

    def account_payers(self, account: str) -> set[str]:
        """The payer tags of every twin of the account's SIMs (whose streams hold its usage)."""
        if self._account_payers is None:
            tenant = self.catalogue.tenant.id
            index: dict[str, set[str]] = {}
            for sim in self.catalogue.sims_by_imsi.values():
                tags = index.setdefault(sim.account, set())
                tags.update(f"{tenant}:{t.payer.kind}:{t.payer.id}" for t in sim.twins)
            self._account_payers = index
        return self._account_payers.get(account, set())

    def sorted_imsis(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.catalogue.sims_by_imsi)
        return self._sorted


@dataclass(slots=True)
class Applied:
    revision: int
    path: str
    in_force: bool
    summary: dict[str, int]
    moves: list[dict[str, Any]] = field(default_factory=list)
    """The SIM state moves of this change (``states.entries``)."""


@dataclass
class TenantCatalogues:
    """Load, change and put in force the catalogue state of each tenant."""

    store: BalanceStore
    data_dir: Path
    on_change: Callable[[], Any] | None = None
    _compiled: dict[str, Compiled] = field(default_factory=dict)
    _checked: dict[str, float] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    refresh_after: float = 1.0  # seconds a compiled revision is trusted before re-checking

    @property
    def redis(self) -> Any:
        return self.store.redis

    async def load_state(self, tenant: str) -> tuple[int, State]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(revision_key(tenant))
            pipe.get(state_key(tenant))
            rev, raw = await pipe.execute()
        return int(rev or 0), (json.loads(raw) if raw else {})

    async def compiled(self, tenant: str) -> Compiled:
        """The tenant's compiled catalogue (404 problem if none was applied)."""
        now = time.monotonic()
        cached = self._compiled.get(tenant)
        if cached is not None and self._checked.get(tenant, 0.0) > now:
            return cached
        rev = int(await self.redis.get(revision_key(tenant)) or 0)
        self._checked[tenant] = now + self.refresh_after
        if cached is not None and cached.revision == rev:
            return cached
        rev, state = await self.load_state(tenant)
        if not state:
            raise Refused(
                404, "no-catalogue", "No catalogue", "apply a catalogue to this tenant first"
            )
        catalogue = await asyncio.to_thread(_compile, state)
        compiled = Compiled(rev, catalogue)
        self._compiled[tenant] = compiled
        return compiled

    async def change(
        self,
        tenant: str,
        mutation: Mutation,
        *,
        source: str,
        serve: bool = False,
        actor: Actor | None = None,
        reason: str = "",
    ) -> Applied:
        """Apply ``mutation`` to the state (it may raise :class:`Refused`) and put the result
        in force. Serialised per tenant across processes by a Redis lock. Raises
        :class:`IdentityTaken` when the result holds another tenant's IMSI, MSISDN or ICCID.
        ``serve``: point the Diameter side at this tenant (``ocs catalog apply``).

        Every SIM state the change moves is checked against ``states.TRANSITIONS`` (a 409
        :class:`Refused` naming both states, nothing written) and journaled with ``actor``
        (default: ``system``) and ``reason``: the pending journal is stored in the same
        transaction as the state, then written out (``ocs.provisioning.journal``; a change
        first completes what a change that died left). ``Applied.moves`` lists them."""
        local = self._locks.setdefault(tenant, asyncio.Lock())
        async with (
            local,
            self.redis.lock(
                lock_key(tenant), timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT
            ) as held_lock,
            _kept(held_lock),
        ):
            await complete(self.redis, tenant)  # the journal a change that died left
            rev, state = await self.load_state(tenant)
            before, kept = snapshot(state), explicit(state)
            precompiled = mutation(state)
            if keep_states(kept, state):  # a replaced item keeps its SIM state
                precompiled = None
            moved = moves(before, state)
            if not state.get("tenant"):
                raise Refused(
                    422,
                    "catalogue-invalid",
                    "Catalogue refused",
                    "the first catalogue applied to a tenant needs a `tenant:` document",
                )
            if isinstance(precompiled, Catalogue):
                catalogue = precompiled
            else:
                catalogue = await asyncio.to_thread(_compile, state)
            rev += 1
            step("intent")  # from here on a crash leaves writes to reconcile (journal.PENDING)
            await self.redis.sadd(PENDING, tenant)
            # identities first: a change holding another tenant's SIM is refused unwritten
            held = await claim(
                self.redis, tenant, identities_of(catalogue, state.get("sims") or {})
            )
            journal = list(entries(moved, actor or SYSTEM, reason or source, rev))
            stored: list[int] = []  # the revision, once the state is stored
            try:
                applied = await self._put_in_force(
                    tenant, rev, state, catalogue, source, serve, journal, stored
                )
            except BaseException:
                if not stored:  # a stored state keeps its claims (the intent reconciles)
                    await held.rollback()
                raise
            await held.commit()
            step("forget")
            await self.redis.srem(PENDING, tenant)  # every step done (or redone)
        self._compiled[tenant] = Compiled(rev, catalogue)
        self._checked[tenant] = time.monotonic() + self.refresh_after
        if self.on_change is not None:
            await self.on_change()
        return applied

    async def _put_in_force(
        self,
        tenant: str,
        rev: int,
        state: State,
        catalogue: Catalogue,
        source: str,
        serve: bool,
        journal: list[dict[str, Any]],
        stored: list[int],
    ) -> Applied:
        folder = self.data_dir / "catalogues" / tenant / f"rev-{rev}"
        await asyncio.to_thread(_write_folder, folder, documents_of(state))
        await asyncio.to_thread(_prune_revisions, folder.parent, rev - FOLDERS_KEPT + 1)
        now_ms = int(time.time() * 1000)
        roots = await self._provision(catalogue, now_ms)
        pointer = await self.redis.hget(CATALOG, "tenant")
        serving = serve or pointer is None or _s(pointer) == tenant
        summary = dict(catalogue.summary())
        entry = {"revision": rev, "applied_at": now_ms, "source": source, "summary": summary}
        index = msisdn_index(catalogue)
        await sync_hash(self.redis, msisdn_key(tenant), index)  # in bounded steps
        step("provisioned")
        # The state with its pending journal in one transaction, then the journal written
        # out (bounded, idempotent script calls, however many moves), then the stamp: a node
        # that sees the stamp reads this state (or a newer one), and every move of it is in
        # the history, the audit stream and the outboxes. A crash anywhere in between leaves
        # the pending journal, completed by whoever next takes the tenant's lock
        # (ocs.provisioning.journal).

        def event_of(move: Mapping[str, Any]) -> tuple[str, dict[str, str]] | None:
            payer = _first_payer(catalogue, state, move)
            if payer is None:  # the sim.state_changed event (docs/webhooks.md)
                return None
            root = roots.get(payer_tag(tenant, *payer), "")
            return outbox_event(tenant, move, payer, now_ms, root)

        stamp = f"{now_ms}.{rev}"
        await commit(self.redis, tenant, Commit(state, rev, entry, stamp), journal, event_of)
        stored.append(rev)
        await complete(self.redis, tenant)
        if serving:
            await self._serve(tenant, folder, index, stamp)
        return Applied(rev, str(folder), True, summary, journal)

    async def _provision(self, catalogue: Catalogue, now_ms: int) -> dict[str, str]:
        """Payers (buckets, pool sizes, reseller chain slots), lifecycle rules and
        thresholds of ``catalogue``: each idempotent. The payers' chain roots."""
        roots = payer_roots(catalogue)  # payers of a reseller chain: in its root's slot
        for tag, (buckets, resize) in payer_buckets(catalogue).items():
            await self.store.provision(tag, buckets, now_ms, resize=resize, root=roots.get(tag, ""))
        await Lifecycle(self.store.redis).setup(lifecycle_rules(catalogue), now_ms)
        await put_catalogue_thresholds(self.store.redis, payer_thresholds(catalogue))
        return roots

    async def _serve(self, tenant: str, folder: Path, index: dict[str, str], stamp: str) -> None:
        """The single pointer of before per-tenant loading (`ocs import`'s default tenant,
        `ocs lifecycle run`, nodes of an older version)."""
        files = await asyncio.to_thread(folder_files, folder)
        await sync_hash(self.redis, MSISDN_INDEX, index)
        async with self.redis.pipeline(transaction=False) as pipe:
            share_files(pipe, files, stamp)
            pipe.hset(CATALOG, mapping={"path": str(folder), "tenant": tenant, "applied_at": stamp})
            await pipe.execute()

    async def _reconcile(self, tenant: str) -> None:
        """Bring what a change that died may have left half written to the stored state:
        its identity claims (a dead change's new ones released, dropped ones too), payers
        (a reseller chain's slot move finished or undone, pool sizes), lifecycle rules,
        thresholds, the MSISDN index, and the served tenant's pointer. Call it under the
        tenant lock, after :func:`complete`."""
        rev, state = await self.load_state(tenant)
        if not state:  # the tenant's first change died before its state: release its claims
            await (await claim(self.redis, tenant, ())).commit()
            await self.redis.delete(msisdn_key(tenant))
            return
        catalogue = await asyncio.to_thread(_compile, state)
        held = await claim(self.redis, tenant, identities_of(catalogue, state.get("sims") or {}))
        await held.commit()
        await self._provision(catalogue, int(time.time() * 1000))
        index = msisdn_index(catalogue)
        await sync_hash(self.redis, msisdn_key(tenant), index)
        pointer = await self.redis.hmget(CATALOG, "tenant", "applied_at")
        stamp = await self.redis.hget(IN_FORCE, tenant)
        ours = pointer[0] is not None and _s(pointer[0]) == tenant
        if ours and stamp is not None and (pointer[1] is None or _s(pointer[1]) != _s(stamp)):
            folder = self.data_dir / "catalogues" / tenant / f"rev-{rev}"  # written before
            await self._serve(tenant, folder, index, _s(stamp))

    async def complete_pending(self, wait: float | None = 0.0) -> list[str]:
        """Complete what a change that died left (``ocs.provisioning.journal``): for every
        tenant named in :data:`PENDING`, under its lock, the pending journal and then
        :meth:`_reconcile`; a tenant whose lock is held (a change running: it completes its
        own) is skipped when ``wait`` is 0. The tenants completed."""
        done = []
        for tenant in await pending_tenants(self.redis):
            local = self._locks.setdefault(tenant, asyncio.Lock())
            if wait == 0.0 and local.locked():
                continue
            async with local:  # the same order as change: this process's lock first
                lock = self.redis.lock(
                    lock_key(tenant), timeout=LOCK_TIMEOUT, blocking_timeout=wait or None
                )
                if not await lock.acquire(blocking=wait != 0.0):
                    continue
                try:
                    await complete(self.redis, tenant)
                    await self._reconcile(tenant)
                    await self.redis.srem(PENDING, tenant)
                    done.append(tenant)
                finally:
                    with contextlib.suppress(LockError):
                        await lock.release()
        return done

    async def versions(self, tenant: str, limit: int) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(versions_key(tenant), 0, limit - 1)
        return [json.loads(r) for r in raw]


def _first_payer(
    catalogue: Catalogue, state: State, entry: Mapping[str, Any]
) -> tuple[str, str] | None:
    """(kind, id) of the payer of the first twin (by priority) of the moved SIM or range."""
    imsi = entry.get("imsi")
    if imsi:
        sim = catalogue.sims_by_imsi.get(str(imsi))
        if sim is None or not sim.twins:
            return None
        return str(sim.twins[0].payer.kind), sim.twins[0].payer.id
    item = (state.get("sim_ranges") or {}).get(str(entry.get("range")))
    if not item or not item.get("twins"):
        return None
    twin = min(item["twins"], key=lambda t: int(t.get("priority", 0)))
    return str(twin["payer"]["kind"]), str(twin["payer"]["id"])


@contextlib.asynccontextmanager
async def _kept(lock: Any) -> AsyncIterator[None]:
    """Keep the tenant's Redis lock for as long as the change runs: its timeout (a process
    that died leaves it for :data:`LOCK_TIMEOUT` at most) is renewed every third of it. A
    change of a 100,000-SIM tenant on a busy machine outlasts one timeout (measured: over
    60 s), and a lock that expired mid-change would let a second change interleave."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(LOCK_TIMEOUT / 3)
            await lock.reacquire()

    task = asyncio.create_task(renew(), name="ocs-tenant-lock")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def compile_state(raw: str | bytes) -> Catalogue:
    """The catalogue of a stored state (:func:`ocs.provisioning.keys.state_key`); raises
    :class:`Refused` if it does not compile (never expected: only compiled states are
    stored). CPU-heavy: call it off the event loop."""
    return _compile(json.loads(raw))


def _compile(state: State) -> Catalogue:
    report = check_documents({"catalogue": documents_of(state)})
    if report.catalogue is None or report.errors:
        raise issues_problem(list(report.errors))
    return report.catalogue


_YAML_UNPRINTABLE: Final = re.compile("[\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
"""Characters a YAML reader refuses (or reads as a line break) even inside quotes; JSON's
``\\uXXXX`` escape keeps them (astral characters stay literal: PyYAML would not join an
escaped surrogate pair)."""


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _json_text(document: dict[str, Any]) -> str:
    """One item a line (readable, diffable), each by the C encoder: ``indent=`` would
    fall back to the pure-Python one, 3.5x slower."""
    parts = []
    for key, value in document.items():
        if isinstance(value, list):
            items = ",\n ".join(json.dumps(v, ensure_ascii=False) for v in value)
            parts.append(f"{json.dumps(key)}: [\n {items}\n]")
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _prune_revisions(parent: Path, below: int) -> None:
    """Remove the folders of revisions older than ``below`` (a 100,000-SIM catalogue is
    ~40 MB a revision; servers load the files shared through Redis, see
    ``ocs.provisioning.payers.share_files``, and the state itself lives in Redis)."""
    for old in parent.glob("rev-*"):
        number = old.name.removeprefix("rev-")
        if number.isdigit() and int(number) < below:
            shutil.rmtree(old, ignore_errors=True)


def _write_folder(folder: Path, document: dict[str, Any]) -> None:
    """Written as JSON, which is YAML too (the loader reads it unchanged): PyYAML's emitter
    needs ~95 s for 100,000 SIMs (~40 s in C), ``json.dumps`` under one second."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "catalogue.yaml.tmp"
    tmp.write_text(_YAML_UNPRINTABLE.sub(_escape, _json_text(document)), "utf-8")
    tmp.replace(folder / "catalogue.yaml")


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
