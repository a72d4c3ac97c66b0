"""The journal of a catalogue change's SIM state moves (docs/sim-states.md, "Who, when,
why"): per move, the SIM's history list (the last :data:`~ocs.provisioning.states.HISTORY_KEPT`),
the tenant's audit stream (drained into PostgreSQL) and the ``sim.state_changed`` event in
the outbox of the SIM's first payer; then the change's in-force stamp.

Crash-safe (a SIGKILL, an OOM kill or a lost node at any point of a change): the pending
journal is stored in the same transaction as the state it belongs to (:func:`commit`: the
state, its revision, its version entry and the pending journal in one ``MULTI``/``EXEC``
on the tenant's ``{api:T}`` slot), so a stored state always has its journal stored beside it, and
:func:`complete` writes it out, idempotently, to the end:

- the histories and the audit stream are written :data:`CHUNK` moves a script call that also
  advances the pending journal's cursor (``done``) in the same call: a chunk is written
  whole or not at all, and a replay starts at the cursor, so no move is written twice;
- the events of one outbox (a payer's slot, maybe another node of a cluster) are written
  :data:`CHUNK` a call that advances a cursor kept in that outbox's own slot
  (``<outbox>:journal``, field ``<tenant>:<revision>``); the event ids are stable (subject and
  revision: ``states.outbox_event``) and the event fields are stored in the pending journal,
  so a replay writes the same events, once;
- then the in-force stamp (``ocs:catalog:tenants``), then the pending journal is marked
  ``stamped`` (a replay writes no event from then on), then the outbox cursors are deleted,
  then the pending journal.

A process that dies mid-way leaves the pending journal; whoever next touches the tenant
completes it under the tenant lock: the next change of the tenant (before it loads the
state: a retry of a bulk move that answers "unchanged" completes the first attempt's
journal), the start of ``ocs api`` and every charging housekeeping pass (``ocs serve``).
These two go through the tenants named in :data:`PENDING` (the durable intent: added by
``TenantCatalogues.change`` before its first write, the identity claims, removed after its
last) and also bring the other writes of a change (identity claims, payers and reseller
chain slots, lifecycle rules, thresholds, the MSISDN index, the served pointer) to the
stored state (``TenantCatalogues._reconcile``): a change that died before its state undoes
its claims and index entries, one that died after it finishes them.

In bounded steps: no call holds Redis for more than about a millisecond whatever the number
of moves (the pending journal is one value, as the state is), and the event loop serves
requests and CCRs between the calls. A bulk move of 10,000 SIMs is about 200 calls."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ocs.provisioning.keys import (
    IN_FORCE,
    journal_key,
    revision_key,
    sim_history_key,
    state_key,
    state_moves_key,
    versions_key,
)
from ocs.provisioning.states import HISTORY_KEPT

log = logging.getLogger(__name__)

CHUNK: Final = 100  # moves (or events) one script call writes (~0.5 ms of Redis time)
VERSIONS_KEPT: Final = 100
PENDING: Final = "ocs:journal:pending"
"""SET of the tenants whose change may have died half written (the intent, added before a
change's first write, removed after its last; ``TenantCatalogues.complete_pending`` goes
through it)."""
CURSOR_TTL: Final = 7 * 24 * 3600  # an outbox cursor a crash left behind expires

# KEYS[1] the audit stream, KEYS[2] the pending journal, KEYS[3..] the history list of each
# move; ARGV[1] how many moves a history keeps, ARGV[2] the revision, ARGV[3] the cursor
# this chunk starts at, ARGV[4..] each move's JSON (the same order as its history key).
# Returns the new cursor, or -1 when the pending journal is not this one at this cursor.
HISTORY_LUA: Final = """
local rev = redis.call('HGET', KEYS[2], 'revision')
local done = tonumber(redis.call('HGET', KEYS[2], 'done') or '-1')
if rev ~= ARGV[2] or done ~= tonumber(ARGV[3]) then
  return -1
end
local kept = tonumber(ARGV[1])
for i = 3, #KEYS do
  local text = ARGV[i + 1]
  redis.call('LPUSH', KEYS[i], text)
  redis.call('LTRIM', KEYS[i], 0, kept - 1)
  redis.call('XADD', KEYS[1], '*', 'entry', text)
end
redis.call('HSET', KEYS[2], 'done', done + #KEYS - 2)
return done + #KEYS - 2
"""
# KEYS[1] an outbox, KEYS[2] its journal cursors; ARGV[1] the cursor's field
# (<tenant>:<revision>), ARGV[2] the offset of this chunk, ARGV[3] its TTL, ARGV[4..]: 6
# values an event (id, tenant, type, subject, time, data), the fields of ``emit``
# (_events.lua). The events before the cursor are skipped (written by an earlier attempt,
# maybe in chunks of another size); returns the cursor, or -1 if it is before the chunk.
OUTBOX_LUA: Final = """
local n = (#ARGV - 3) / 6
local from = tonumber(ARGV[2])
local done = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if done >= from + n then
  return done
end
if done < from then
  return -1
end
for i = 4 + (done - from) * 6, #ARGV, 6 do
  redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'tenant', ARGV[i + 1], 'type', ARGV[i + 2],
    'subject', ARGV[i + 3], 'time', ARGV[i + 4], 'data', ARGV[i + 5])
end
redis.call('HSET', KEYS[2], ARGV[1], from + n)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return from + n
"""
FIELDS: Final = ("id", "tenant", "type", "subject", "time", "data")

Events = Callable[[Mapping[str, Any]], tuple[str, dict[str, str]] | None]
"""A move -> (outbox key, event fields), or None when the SIM has no payer."""

Step = Callable[[str], None]
STEP_HOOK: Step | None = None
"""Called with the name of each step boundary of a change (tests kill the process there:
tests/provisioning/test_journal_crash.py); None in production."""


def step(name: str) -> None:
    if STEP_HOOK is not None:
        STEP_HOOK(name)


class JournalConflict(RuntimeError):
    """The pending journal is not at the cursor this writer expected (another writer ran
    without the tenant lock: a bug)."""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def cursor_key(outbox: str) -> str:
    """HASH <tenant>:<revision> -> events of that revision written to ``outbox`` (in the
    outbox's slot: its hash tag)."""
    return f"{outbox}:journal"


@dataclass(frozen=True, slots=True)
class Commit:
    """What :func:`commit` stores: the state and its version entry."""

    state: Mapping[str, Any]
    revision: int
    entry: Mapping[str, Any]
    stamp: str


async def commit(
    redis: Any,
    tenant: str,
    new: Commit,
    journal: list[dict[str, Any]],
    event_of: Events,
) -> None:
    """Store the state with its pending journal (the moves, each move's event, the stamp)
    in one transaction (the caller named the tenant in :data:`PENDING` before its first
    write)."""
    events = [event_of(move) for move in journal]
    step("state")
    dumps = json.dumps
    pending = {
        "revision": new.revision,
        "moves": dumps(journal, separators=(",", ":")),
        "events": dumps(
            [None if e is None else [e[0], e[1]] for e in events], separators=(",", ":")
        ),
        "stamp": new.stamp,
        "done": 0,
    }
    # MULTI/EXEC (every key in the tenant's {api:T} slot, so on a cluster too): nothing runs
    # before EXEC arrives, so a client killed mid-send stores none of it. Plain commands,
    # not a script: a script copies its megabytes of arguments into Lua first (measured 23
    # ms for a 10,000-SIM move, where SET and HSET of the same values take a few).
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(state_key(tenant), dumps(new.state, separators=(",", ":")))
        pipe.set(revision_key(tenant), new.revision)
        pipe.lpush(versions_key(tenant), dumps(new.entry))
        pipe.ltrim(versions_key(tenant), 0, VERSIONS_KEPT - 1)
        pipe.delete(journal_key(tenant))
        pipe.hset(journal_key(tenant), mapping=pending)
        await pipe.execute()


async def complete(redis: Any, tenant: str) -> int | None:
    """Write out the tenant's pending journal from where it stopped (call it under the
    tenant lock); the revision it completed, or None if there was none."""
    key = journal_key(tenant)
    raw = await redis.hmget(key, "revision", "moves", "events", "stamp", "done", "stamped")
    if raw[0] is None:
        return None
    revision, stamp, done = _s(raw[0]), _s(raw[3]), int(raw[4])
    moves: list[dict[str, Any]] = json.loads(raw[1])
    events: list[list[Any] | None] = json.loads(raw[2])
    history = redis.register_script(HISTORY_LUA)
    audit = state_moves_key(tenant)
    stamped = raw[5] is not None  # every event written: only the clean-up is left
    for start in range(len(moves) if stamped else done, len(moves), CHUNK):
        step("history")
        chunk = moves[start : start + CHUNK]
        keys, texts = [audit, key], [str(HISTORY_KEPT), revision, str(start)]
        for move in chunk:
            subject = str(move.get("imsi") or f"range:{move['range']}")
            keys.append(sim_history_key(tenant, subject))
            texts.append(json.dumps(move, separators=(",", ":")))
        if await history(keys=keys, args=texts) < 0:
            raise JournalConflict(f"journal of {tenant} rev {revision}: not at move {start}")
    by_outbox: dict[str, list[str]] = {}
    for found in events:  # the events in the order of the moves
        if found is not None:
            stream, fields = found
            by_outbox.setdefault(stream, []).extend(fields[f] for f in FIELDS)
    outbox = redis.register_script(OUTBOX_LUA)
    field = f"{tenant}:{revision}"
    width = CHUNK * len(FIELDS)
    for stream, values in by_outbox.items():
        for start in range(len(values) if stamped else 0, len(values), width):
            step("events")
            first = start // len(FIELDS)
            args = [field, str(first), str(CURSOR_TTL), *values[start : start + width]]
            if await outbox(keys=[stream, cursor_key(stream)], args=args) < 0:
                raise JournalConflict(f"events of {field} in {stream}: not at event {first}")
    step("in-force")
    await redis.hset(IN_FORCE, tenant, stamp)
    step("stamped")
    await redis.hset(key, "stamped", 1)  # from here on no event is written again
    step("cursors")
    for stream in by_outbox:
        await redis.hdel(cursor_key(stream), field)
    step("done")
    await redis.delete(key)
    return int(revision)


async def pending_tenants(redis: Any) -> list[str]:
    return sorted(_s(t) for t in await redis.smembers(PENDING))
