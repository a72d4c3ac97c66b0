"""The journal of a catalogue change's SIM state moves (docs/sim-states.md, "Who, when,
why"), written after the state and before its in-force stamp: per move, the SIM's history
list (the last :data:`~ocs.provisioning.states.HISTORY_KEPT`), the tenant's audit stream
(drained into PostgreSQL) and the ``sim.state_changed`` event in the outbox of the SIM's
first payer.

In bounded steps: one script call writes :data:`CHUNK` moves to one slot (the histories and
the audit stream share the tenant's ``{api:T}`` tag; an outbox is in its payer's slot), so
no call holds Redis for more than about a millisecond whatever the number of moves, and the
event loop serves requests and CCRs between the calls. A bulk move of 10,000 SIMs is about
200 calls, where a command a write was 40,000 commands to send and parse."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from ocs.provisioning.keys import sim_history_key, state_moves_key
from ocs.provisioning.states import HISTORY_KEPT

CHUNK: Final = 100  # moves (or events) one script call writes (~0.5 ms of Redis time)

# KEYS[1] the audit stream, KEYS[2..] the history list of each move; ARGV[1] how many moves
# a history keeps, ARGV[2..] each move's JSON (the same order as its history key)
HISTORY_LUA: Final = """
local kept = tonumber(ARGV[1])
for i = 2, #KEYS do
  local text = ARGV[i]
  redis.call('LPUSH', KEYS[i], text)
  redis.call('LTRIM', KEYS[i], 0, kept - 1)
  redis.call('XADD', KEYS[1], '*', 'entry', text)
end
return #KEYS - 1
"""
# KEYS[1] an outbox; ARGV: 6 values an event (id, tenant, type, subject, time, data), the
# fields of ``emit`` (_events.lua)
OUTBOX_LUA: Final = """
for i = 1, #ARGV, 6 do
  redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'tenant', ARGV[i + 1], 'type', ARGV[i + 2],
    'subject', ARGV[i + 3], 'time', ARGV[i + 4], 'data', ARGV[i + 5])
end
return #ARGV / 6
"""
FIELDS: Final = ("id", "tenant", "type", "subject", "time", "data")

Events = Callable[[Mapping[str, Any]], tuple[str, dict[str, str]] | None]
"""A move -> (outbox key, event fields), or None when the SIM has no payer."""


async def write_journal(
    redis: Any, tenant: str, journal: list[dict[str, Any]], event_of: Events
) -> None:
    """History, audit stream and events of ``journal``'s moves, in chunks."""
    history = redis.register_script(HISTORY_LUA)
    outbox = redis.register_script(OUTBOX_LUA)
    audit = state_moves_key(tenant)
    events: dict[str, list[str]] = {}
    for start in range(0, len(journal), CHUNK):
        chunk = journal[start : start + CHUNK]
        keys, texts = [audit], [str(HISTORY_KEPT)]
        for move in chunk:
            subject = str(move.get("imsi") or f"range:{move['range']}")
            keys.append(sim_history_key(tenant, subject))
            texts.append(json.dumps(move, separators=(",", ":")))
            found = event_of(move)
            if found is not None:
                stream, fields = found
                events.setdefault(stream, []).extend(fields[f] for f in FIELDS)
        await history(keys=keys, args=texts)
    step = CHUNK * len(FIELDS)
    for stream, values in events.items():  # the events in the order of the moves
        for start in range(0, len(values), step):
            await outbox(keys=[stream], args=values[start : start + step])
