"""Credit-Control failure handling (RFC 4006 5.7) when the balance store cannot be reached,
and the journal that bills what was used meanwhile exactly once.

Only a store outage gets here (``ocs.charging.errors.STORE_OUTAGES``). Per MSCC of the CCR:

* rating runs as usual (in memory): an unknown or suspended SIM gets its own Result-Code,
  never a grant;
* the MSCC's unit is chosen as online (``usage.session_units``): volume, CC-Time (rated as
  voice) or CC-Service-Specific-Units (rated as events);
* ``failure_handling = "grant"``: that unit's configured grant is given in that unit,
  bounded per session and in total per payer since the last replay, each unit against its
  own bounds (``ChargingConfig.failover_bounds``); past a bound the MSCC gets 4012 and
  nothing (``ocs_failover_refused_total``). ``"deny"``: the CCR gets 5012;
* the usage the CCR reports (Used-Service-Unit) happened, whatever the answer: the CCR is
  journaled, in both modes.

The journal (``<data_dir>/failover-grants.jsonl``) holds no IMSI or MSISDN in clear (issue
14): a line carries the tenant, a pseudonym of the Session-Id (HMAC), the request number and
type, the units granted and used per rating group with their unit and service, and the CCR
itself encrypted (AES-GCM, :class:`ocs.offline.crypto.TenantCipher`, keys derived from the
installation master key).

**Replay.** Once the store answers again, the housekeeping task replays the journal: each
journaled MSCC with used units is rated again as its journaled unit's service (as online)
and charged by ``charge.lua`` in that unit under the request id the CCR would have had
(``<Session-Id>:<n>:<rating group>``), on a reservation member of its own (the session's
live reservation is left to its next CCR), with its result kept
:data:`REPLAY_RESULT_TTL_MS`. The script writes the usage record (context
``"failover": true``) in the same step. A replay is idempotent: run twice, or cut by a
crash and run again, each entry finds its stored result and moves nothing the second time; a
CCR that Redis did run before the client timed out is found the same way. The journal is renamed
before it is read (writers then start a new file) and deleted once every entry is applied.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ocs.balance import BucketUnit, ChargeRequest
from ocs.charging.errors import is_store_outage, result_code_for
from ocs.charging.limits import limits_arg, usage_caps
from ocs.charging.pricing import charge_at_price, reservation_rate
from ocs.charging.states import TEST
from ocs.charging.usage import RATED_AS, payer_key, session_units, used_units
from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Avp, Message, decode, u32
from ocs.diameter.constants import CcRequestType, CreditControlFailureHandling, ResultCode
from ocs.diameter.dcca import (
    CreditControlRequest,
    credit_control_answer,
    granted_service_unit,
    mscc_answer,
)
from ocs.observability.logs import request_fields
from ocs.offline.crypto import TenantCipher, master_key
from ocs.rating.errors import RatingError

if TYPE_CHECKING:
    from ocs.charging.application import ChargingApplication
    from ocs.rating.engine import Resolution

log = logging.getLogger(__name__)

JOURNAL_NAME: Final = "failover-grants.jsonl"
REPLAY_SUFFIX: Final = ".replay"
UNRATED_NAME: Final = "failover-unrated.jsonl"  # entries that no longer rate (kept, encrypted)
LOCK_NAME: Final = "failover.lock"
JOURNAL_VERSION: Final = 2  # 2: ``unit`` and ``service`` per rating group (1: bytes, data)
REPLAY_RESULT_TTL_MS: Final = 7 * 24 * 3600 * 1000  # a replayed entry's result is kept 7 days
SESSIONS_KEPT: Final = 200_000  # sessions whose failover grants are counted (oldest dropped)
SUCCESS: Final = int(ResultCode.DIAMETER_SUCCESS)
CREDIT_LIMIT_REACHED: Final = int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)
UNABLE_TO_COMPLY: Final = int(ResultCode.DIAMETER_UNABLE_TO_COMPLY)
FAILURE_HANDLING: Final = {
    "terminate": CreditControlFailureHandling.TERMINATE,
    "continue": CreditControlFailureHandling.CONTINUE,
    "retry_and_terminate": CreditControlFailureHandling.RETRY_AND_TERMINATE,
}


def failure_handling_avp(name: str) -> Avp:
    """Credit-Control-Failure-Handling (RFC 4006 8.14) as configured, for every CCA."""
    return u32(A.AVP_CREDIT_CONTROL_FAILURE_HANDLING, int(FAILURE_HANDLING[name]))


class JournalKeys:
    """The journal's cipher per tenant: keys derived from the installation master key
    (``offline-master.key`` under ``data_dir``, or the ``offline_master_key`` setting), so
    only this installation reads its journal."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._master: bytes | None = None
        self._ciphers: dict[str, TenantCipher] = {}

    def cipher(self, tenant: str) -> TenantCipher:
        found = self._ciphers.get(tenant)
        if found is None:
            if self._master is None:
                self._master = master_key(_DataDir(self.data_dir))
            key = hmac.new(self._master, b"failover-journal:" + tenant.encode(), hashlib.sha512)
            raw = key.digest()
            found = self._ciphers[tenant] = TenantCipher(tenant, raw[:32], raw[32:])
        return found


@dataclass(frozen=True, slots=True)
class _DataDir:
    data_dir: Path
    offline_master_key: str | None = None


class FailoverJournal:
    """Append-only JSON lines, shared by the workers of one node (``O_APPEND``, a shared
    ``flock`` per write); a replay renames the file under an exclusive lock first."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / JOURNAL_NAME
        self.keys = JournalKeys(self.dir)
        self._lock = threading.Lock()

    def record(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            for _ in range(5):
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    try:
                        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                    except FileNotFoundError:
                        same = False
                    if same:  # not renamed by a replay between our open and our lock
                        os.write(fd, line)
                        return
                finally:
                    os.close(fd)
            raise OSError(f"{self.path}: renamed under every attempt to append")

    def files(self) -> list[Path]:
        """Journal files waiting for a replay (the live one last)."""
        waiting = sorted(self.dir.glob(JOURNAL_NAME + ".*" + REPLAY_SUFFIX))
        return [*waiting, self.path] if self.path.exists() else waiting

    def entries(self) -> list[dict[str, Any]]:
        """Every entry waiting for a replay (tests, ``pending``)."""
        out: list[dict[str, Any]] = []
        for path in self.files():
            with contextlib.suppress(FileNotFoundError):
                out += [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x]
        return out

    @contextlib.contextmanager
    def replaying(self) -> Iterator[list[Path] | None]:
        """The files to replay, under an exclusive lock (None: another process replays).
        The live journal is renamed first: writers start a new one."""
        if not self.files():
            yield []
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            if self.path.exists():
                target = self.dir / f"{JOURNAL_NAME}.{time.time_ns()}{REPLAY_SUFFIX}"
                os.rename(self.path, target)
                # wait for writers that opened the file before the rename
                wfd = os.open(target, os.O_RDONLY)
                try:
                    fcntl.flock(wfd, fcntl.LOCK_EX)
                finally:
                    os.close(wfd)
            yield sorted(self.dir.glob(JOURNAL_NAME + ".*" + REPLAY_SUFFIX))
        finally:
            os.close(fd)

    def keep_unrated(self, entry: dict[str, Any]) -> None:
        with (self.dir / UNRATED_NAME).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, separators=(",", ":")) + "\n")


@dataclass(slots=True)
class ReplayReport:
    entries: int = 0
    charged: int = 0  # MSCCs with used units charged (or found already charged)
    units: int = 0
    unrated: int = 0
    files: list[str] = field(default_factory=list)


class FailureHandling:
    """The failure-handling answer and the journal replay of one application."""

    def __init__(self, app: ChargingApplication) -> None:
        self.app = app
        config = app.config
        self.journal = FailoverJournal(config.data_dir)
        self.ccfh = failure_handling_avp(config.credit_control_failure_handling)
        # units granted since the last replay, per (session, unit) and (payer, unit)
        self.by_session: dict[tuple[str, BucketUnit], int] = {}
        self.by_payer: dict[tuple[str, BucketUnit], int] = {}
        self._journal_failed = False  # the journal's ERROR line is written once per outage

    # -- the answer, store unreachable -----------------------------------------------------
    def answer(self, view: CreditControlRequest) -> Message:
        """Never waits on Redis; never raises for a well-formed CCR."""
        app, config = self.app, self.app.config
        request = view.msg
        rtype = view.request_type
        mode = config.failure_handling
        app.metrics.failover_grants.labels(mode).inc()
        if rtype == CcRequestType.EVENT_REQUEST:
            # a direct debit is all or nothing: one that cannot be checked is refused (the
            # client may buffer it, RFC 4006 Direct-Debiting-Failure-Handling)
            return credit_control_answer(request, app.identity, UNABLE_TO_COMPLY, extra=[self.ccfh])
        sid = view.session_id
        tenant = app.catalogue.of(view.imsi, view.msisdn).tenant.id  # the SIM's tenant
        msccs: list[Avp] = []
        codes: list[int] = []
        used: dict[str, int] = {}
        granted: dict[str, int] = {}
        units: dict[str, str] = {}  # the unit of each journaled rating group
        for mscc in view.mscc:
            rg = mscc.rating_group or 0
            if rg in config.free_rating_groups:
                code = int(ResultCode.DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE)
                msccs.append(mscc_answer(code, rating_group=mscc.rating_group))
                codes.append(code)
                continue
            # its unit as online (usage.session_units): volume, CC-Time rated as voice,
            # CC-Service-Specific-Units rated as events
            unit, requested, reported = session_units(mscc)
            try:
                resolution = app.rate(view, mscc, 0, RATED_AS[unit])
            except RatingError as exc:
                code = result_code_for(exc)
                msccs.append(mscc_answer(code, rating_group=mscc.rating_group))
                codes.append(code)
                continue
            if app.catalogue.of(view.imsi, view.msisdn).sims_by_imsi[resolution.imsi].state == TEST:
                # a test SIM's allowance cannot be reserved now, and a replay would bill its
                # usage to its payer: no grant, nothing journaled (docs/sim-states.md)
                msccs.append(mscc_answer(CREDIT_LIMIT_REACHED, rating_group=mscc.rating_group))
                codes.append(CREDIT_LIMIT_REACHED)
                continue
            payer = payer_key(tenant, resolution.payer)
            if reported:
                used[str(rg)] = reported
                units[str(rg)] = unit.value
            wants = rtype != CcRequestType.TERMINATION_REQUEST and (
                rtype == CcRequestType.INITIAL_REQUEST or mscc.requested is not None
            )
            grant = 0
            if wants and mode == "grant":
                grant = self._bounded(sid, payer, unit, requested)
            if grant > 0:
                granted[str(rg)] = grant
                units[str(rg)] = unit.value
                app.metrics.failover_units.labels(unit.value).inc(grant)
                msccs.append(
                    mscc_answer(
                        SUCCESS,
                        rating_group=mscc.rating_group,
                        granted=_gsu(unit, grant),
                        validity_time=config.validity_time,
                    )
                )
                codes.append(SUCCESS)
            elif wants and mode == "grant":
                msccs.append(mscc_answer(CREDIT_LIMIT_REACHED, rating_group=mscc.rating_group))
                codes.append(CREDIT_LIMIT_REACHED)
            else:
                msccs.append(mscc_answer(SUCCESS, rating_group=mscc.rating_group))
                codes.append(SUCCESS)
        if used or granted:
            self._journal(view, tenant, rtype, used, granted, units)
        if mode != "grant":
            return credit_control_answer(request, app.identity, UNABLE_TO_COMPLY, extra=[self.ccfh])
        top = codes[0] if codes and all(c == codes[0] for c in codes) else SUCCESS
        return credit_control_answer(request, app.identity, top, msccs=msccs, extra=[self.ccfh])

    def _bounded(self, sid: str, payer: str, unit: BucketUnit, requested: int | None) -> int:
        """The grant in ``unit``, within that unit's bounds (``ChargingConfig.failover_bounds``:
        bytes, seconds and events are counted apart, each against its own bounds)."""
        quota, per_session, per_payer = self.app.config.failover_bounds(unit)
        if requested is not None:
            quota = min(quota, requested)
        skey, pkey = (sid, unit), (payer, unit)
        session_left = per_session - self.by_session.get(skey, 0)
        payer_left = per_payer - self.by_payer.get(pkey, 0)
        grant = max(0, min(quota, session_left, payer_left))
        if grant == 0:
            reason = "session" if session_left <= 0 else "payer"
            self.app.metrics.failover_refused.labels(reason).inc()
            return 0
        if skey not in self.by_session and len(self.by_session) >= SESSIONS_KEPT:
            del self.by_session[next(iter(self.by_session))]
        self.by_session[skey] = self.by_session.get(skey, 0) + grant
        self.by_payer[pkey] = self.by_payer.get(pkey, 0) + grant
        return grant

    def _journal(
        self,
        view: CreditControlRequest,
        tenant: str,
        rtype: int,
        used: dict[str, int],
        granted: dict[str, int],
        units: dict[str, str],
    ) -> None:
        try:
            cipher = self.journal.keys.cipher(tenant)  # reads (or makes) the master key
            raw = base64.b64encode(view.msg.encode()).decode()
            entry = {
                "v": JOURNAL_VERSION,
                "ts": int(self.app.clock() * 1000),
                "tenant": tenant,
                "ref": cipher.bidx(view.session_id).hex(),  # a pseudonym of the session
                "n": view.request_number,
                "type": rtype,
                "used": used,
                "granted": granted,
                # per rating group: the unit of used/granted and what it is rated as
                "unit": units,
                "service": {rg: str(RATED_AS[BucketUnit(u)]) for rg, u in units.items()},
                "ccr": base64.b64encode(cipher.encrypt(raw)).decode(),
            }
            self.journal.record(entry)
        except OSError as exc:
            self.app.metrics.failover_journal_errors.inc()
            if not self._journal_failed:  # once per outage, not once per CCR
                self._journal_failed = True
                log.error(
                    "cannot write the failover journal %s: %s (usage granted now is not "
                    "billed; counted in ocs_failover_journal_errors_total)",
                    self.journal.path,
                    exc,
                    extra=request_fields(view),
                )

    # -- the replay, store back ------------------------------------------------------------
    async def replay(self) -> ReplayReport | None:
        """Charge every journaled usage (idempotent); None when another process replays.
        Raises a store outage error when the store fails again (the files stay)."""
        report = ReplayReport()
        with self.journal.replaying() as files:
            if files is None:
                return None
            for path in files:
                for line in path.read_text(encoding="utf-8").splitlines():
                    if line:
                        await self._replay_line(line, report)
                path.unlink()
                report.files.append(path.name)
        if report.files:
            self.store_back()
            log.info(
                "failover journal replayed: %d entries, %d usages (%d units) charged, %d "
                "kept unrated in %s",
                report.entries,
                report.charged,
                report.units,
                report.unrated,
                UNRATED_NAME,
            )
        return report

    async def _replay_line(self, line: str, report: ReplayReport) -> None:
        """One journal line; a line that cannot be replayed for another reason than an
        outage (damaged, a key that does not decrypt it) is kept aside, never retried for
        ever nor dropped."""
        try:
            await self._replay_entry(json.loads(line), report)
        except Exception as exc:
            if is_store_outage(exc):
                raise
            report.unrated += 1
            self.app.metrics.failover_replayed.labels("unrated").inc()
            log.error(
                "failover journal: an entry cannot be replayed (%r): kept in %s", exc, UNRATED_NAME
            )
            with (self.journal.dir / UNRATED_NAME).open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    async def _replay_entry(self, entry: dict[str, Any], report: ReplayReport) -> None:
        app = self.app
        report.entries += 1
        if not entry.get("used"):
            return  # grants only: nothing was used yet (the next CCR reports it)
        tenant = str(entry["tenant"])
        cipher = self.journal.keys.cipher(tenant)
        raw = cipher.decrypt(base64.b64decode(entry["ccr"]))
        view = CreditControlRequest(decode(base64.b64decode(raw)))
        sid, number = view.session_id, view.request_number
        journaled: dict[str, str] = entry.get("unit") or {}  # a version 1 entry: bytes
        for mscc in view.mscc:
            rg = mscc.rating_group or 0
            if str(rg) not in entry["used"]:
                continue
            # the unit journaled with the usage, rated as online (RATED_AS): seconds as voice,
            # events as events, at that service's tariff and against that unit's caps
            unit = BucketUnit(journaled.get(str(rg), BucketUnit.BYTES.value))
            used = used_units(mscc, unit)
            if used <= 0:
                continue
            at_ms = int(entry["ts"])
            try:
                # a CCR without an Event-Timestamp is rated when it arrived (the journal's
                # time), as online: not at the time of the replay, which may be in another
                # tariff version, time band or allowance period
                resolution = app.rate(view, mscc, used, RATED_AS[unit], at=_journal_time(at_ms))
            except RatingError as exc:
                report.unrated += 1
                app.metrics.failover_replayed.labels("unrated").inc()
                log.error(
                    "failover journal: usage of request %s rating group %d no longer rates "
                    "(%s): kept in %s",
                    entry.get("ref"),
                    rg,
                    exc,
                    UNRATED_NAME,
                )
                self.journal.keep_unrated({**entry, "rg": rg})
                continue
            # at its price, as online (ocs.charging.pricing): a wallet is debited exactly the
            # amount the record says, which is what the bill run rates the record at; the
            # used units count against the SIM's caps of the period they were used in
            catalogue = app.catalogue.of(view.imsi, view.msisdn)
            caps = usage_caps(catalogue, resolution, unit)
            await charge_at_price(
                app.store,
                payer_key(tenant, resolution.payer),
                ChargeRequest(
                    request_id=f"{sid}:{number}:{rg}",
                    member=f"{sid}|{rg}|failover",
                    unit=unit,
                    now_ms=at_ms,
                    used=used,
                    rate=reservation_rate(resolution.quotes[0]),
                    limits=limits_arg(caps, catalogue.tenant.time_zone, at_ms),
                ),
                catalogue,
                resolution,
                app.counters,
                _failover_context(app, view, rg, resolution, used),
                result_ttl_ms=REPLAY_RESULT_TTL_MS,
            )
            report.charged += 1
            report.units += used
            app.metrics.failover_replayed.labels("charged").inc()

    def store_back(self) -> None:
        """The store answers and the journal is replayed: the bounds start again."""
        if self.by_session or self.by_payer or self._journal_failed:
            self.by_session.clear()
            self.by_payer.clear()
            self._journal_failed = False

    def pending(self) -> int:
        """Journal entries waiting for a replay (``ocs_failover_journal_entries``)."""
        return len(self.journal.entries())


def _journal_time(at_ms: int) -> datetime:
    return datetime.fromtimestamp(at_ms / 1000, UTC)


def _failover_context(
    app: ChargingApplication,
    view: CreditControlRequest,
    rg: int,
    resolution: Resolution,
    used: int,
) -> Callable[[tuple[int, ...]], str]:
    """The record context of a replayed usage at its price's ``amounts``, marked failover."""

    def context(amounts: tuple[int, ...]) -> str:
        record = app.record_context(view, rg, resolution, used, amounts)
        record["failover"] = True
        return json.dumps(record, separators=(",", ":"), default=str)

    return context


def _gsu(unit: BucketUnit, amount: int) -> Avp:
    if unit is BucketUnit.BYTES:
        return granted_service_unit(total_octets=amount)
    if unit is BucketUnit.SECONDS:
        return granted_service_unit(time=amount)
    return granted_service_unit(service_specific_units=amount)
