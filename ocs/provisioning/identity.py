"""Who owns a SIM identity: every IMSI, MSISDN and ICCID belongs to at most one tenant.

The owners live in three Redis hashes (identity -> tenant), and each tenant's identities in
a set, all under the hash tag ``{ident}`` so that one script checks and claims a chunk of
identities atomically (also on Redis Cluster). A tenant claims the identities of its
catalogue each time the catalogue is put in force (``ocs catalog apply``, the API, CRM
import: :func:`claim`); an identity another tenant holds refuses the whole change with
:class:`IdentityTaken`, before anything is written. Identities the tenant no longer has are
released once its new catalogue is in force. Moving an identity to another tenant is an
explicit operator action (:func:`transfer`, ``ocs identity transfer``), never a side
effect of a catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ocs.provisioning.chunked import scan_set
from ocs.rating.catalogue import Catalogue

KINDS: Final = ("imsi", "msisdn", "iccid")
TAG: Final = "{ident}"
CHUNK: Final = 1_000  # identities per script call (each call blocks Redis for its length)
MAX_REPORTED: Final = 20  # conflicts one claim reports


def owner_key(kind: str) -> str:
    """HASH identity value -> owning tenant, one per kind (imsi, msisdn, iccid)."""
    return f"ocs:{TAG}:owner:{kind}"


def tenant_key(tenant: str) -> str:
    """SET of the ``kind:value`` identities the tenant's catalogue in force holds."""
    return f"ocs:{TAG}:of:{tenant}"


def ident(kind: str, value: str) -> str:
    return f"{kind}:{value}"


class IdentityTaken(Exception):
    """An identity of the change belongs to another tenant (HTTP 409). ``owner`` is for the
    operator (CLI); the API names the identity only."""

    def __init__(self, kind: str, value: str, owner: str, more: int = 0) -> None:
        self.kind, self.value, self.owner, self.more = kind, value, owner, more
        super().__init__(f"{kind.upper()} {value} belongs to tenant {owner!r}")

    @property
    def public_detail(self) -> str:
        extra = " (and others of this change)" if self.more else ""
        return f"{self.kind.upper()} {self.value} is held by another tenant{extra}"


# KEYS: owner hashes imsi, msisdn, iccid, the tenant's set. ARGV: tenant, max reported,
# then "kind:value"... Checks every identity first and writes nothing if one is another
# tenant's; else claims them all. Returns {taken (pairs id, owner), newly claimed ids}.
_CLAIM: Final = """
local tenant = ARGV[1]
local limit = tonumber(ARGV[2])
local hashes = {imsi = KEYS[1], msisdn = KEYS[2], iccid = KEYS[3]}
local taken, new = {}, {}
local parsed = {}
for i = 3, #ARGV do
  local kind, value = string.match(ARGV[i], '^(%l+):(.+)$')
  local h = kind and hashes[kind]
  if not h then return redis.error_reply('bad identity ' .. ARGV[i]) end
  parsed[#parsed + 1] = {h, value, ARGV[i]}
  local owner = redis.call('HGET', h, value)
  if owner and owner ~= tenant and #taken < 2 * limit then
    taken[#taken + 1] = ARGV[i]
    taken[#taken + 1] = owner
  end
end
if #taken > 0 then return {taken, new} end
for _, p in ipairs(parsed) do
  if redis.call('HSETNX', p[1], p[2], tenant) == 1 then new[#new + 1] = p[3] end
  redis.call('SADD', KEYS[4], p[3])
end
return {taken, new}
"""

# KEYS as above; ARGV: tenant, "kind:value"... Drops the tenant's hold (an identity another
# tenant owns by now is left to it).
_RELEASE: Final = """
local hashes = {imsi = KEYS[1], msisdn = KEYS[2], iccid = KEYS[3]}
for i = 2, #ARGV do
  local kind, value = string.match(ARGV[i], '^(%l+):(.+)$')
  local h = kind and hashes[kind]
  if h then
    if redis.call('HGET', h, value) == ARGV[1] then redis.call('HDEL', h, value) end
    redis.call('SREM', KEYS[4], ARGV[i])
  end
end
return 1
"""


def _keys(tenant: str) -> list[str]:
    return [*(owner_key(k) for k in KINDS), tenant_key(tenant)]


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def identities_of(catalogue: Catalogue, sims: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Every ``kind:value`` a catalogue holds: IMSI and MSISDN of each SIM (ranges
    expanded) and the ICCIDs of ``sims`` (the SIM items, where the ICCID is kept)."""
    out = {ident("imsi", imsi) for imsi in catalogue.sims_by_imsi}
    out.update(ident("msisdn", m) for m in catalogue.sims_by_msisdn)
    out.update(ident("iccid", str(s["iccid"])) for s in sims.values() if s.get("iccid"))
    return out


@dataclass(slots=True)
class Claim:
    """A claim made for a change: roll it back if the change is not put in force, else
    release what the tenant gave up."""

    redis: Any
    tenant: str
    claimed: list[str] = field(default_factory=list)  # newly claimed (rollback)
    dropped: list[str] = field(default_factory=list)  # held before, not any more

    async def rollback(self) -> None:
        await _release(self.redis, self.tenant, self.claimed)
        self.claimed = []

    async def commit(self) -> None:
        await _release(self.redis, self.tenant, self.dropped)
        self.dropped = []


async def _release(redis: Any, tenant: str, ids: list[str]) -> None:
    keys = _keys(tenant)
    for start in range(0, len(ids), CHUNK):
        await redis.eval(_RELEASE, len(keys), *keys, tenant, *ids[start : start + CHUNK])


async def claim(redis: Any, tenant: str, wanted: Iterable[str]) -> Claim:
    """Claim ``wanted`` for ``tenant`` (raises :class:`IdentityTaken`, having claimed
    nothing, when another tenant holds one). Call ``commit()`` once the change is in force
    (releases what the tenant dropped) or ``rollback()`` if it is not."""
    wanted = set(wanted)
    held = await scan_set(redis, tenant_key(tenant))  # pages: not one SMEMBERS
    out = Claim(redis, tenant, dropped=sorted(held - wanted))
    added = sorted(wanted - held)
    keys = _keys(tenant)
    for start in range(0, len(added), CHUNK):
        chunk = added[start : start + CHUNK]
        taken, new = await redis.eval(_CLAIM, len(keys), *keys, tenant, MAX_REPORTED, *chunk)
        if taken:
            await out.rollback()
            first = _s(taken[0])
            kind, _, value = first.partition(":")
            raise IdentityTaken(kind, value, _s(taken[1]), more=len(taken) // 2 - 1)
        out.claimed.extend(_s(n) for n in new)
    return out


async def owner_of(redis: Any, kind: str, value: str) -> str | None:
    raw = await redis.hget(owner_key(kind), value)
    return None if raw is None else _s(raw)


# KEYS: owner hashes imsi, msisdn, iccid, the source's set. ARGV: source, target, ids...
# Refuses (writes nothing) when an identity is a third tenant's or still in the source's
# catalogue; else the target owns every identity (it may then create the SIM).
_HAND_OVER: Final = """
local hashes = {imsi = KEYS[1], msisdn = KEYS[2], iccid = KEYS[3]}
local parsed = {}
for i = 3, #ARGV do
  local kind, value = string.match(ARGV[i], '^(%l+):(.+)$')
  local h = kind and hashes[kind]
  if not h then return redis.error_reply('bad identity ' .. ARGV[i]) end
  local owner = redis.call('HGET', h, value)
  if owner and owner ~= ARGV[1] and owner ~= ARGV[2] then return {'taken', ARGV[i], owner} end
  if redis.call('SISMEMBER', KEYS[4], ARGV[i]) == 1 then return {'in-use', ARGV[i], ARGV[1]} end
  parsed[#parsed + 1] = {h, value}
end
for _, p in ipairs(parsed) do redis.call('HSET', p[1], p[2], ARGV[2]) end
return {'ok'}
"""


async def hand_over(redis: Any, ids: list[str], source: str, target: str) -> None:
    """Give ``ids`` (``kind:value``) that ``source`` held, or nobody holds, to ``target``.
    The source's catalogue in force must not hold them any more. Raises
    :class:`IdentityTaken` (a third tenant's, or still in the source's catalogue)."""
    keys = _keys(source)
    answer = await redis.eval(_HAND_OVER, len(keys), *keys, source, target, *ids)
    status = _s(answer[0])
    if status != "ok":
        kind, _, value = _s(answer[1]).partition(":")
        raise IdentityTaken(kind, value, _s(answer[2]))


async def foreign(redis: Any, tenant: str, ids: Iterable[str]) -> dict[str, str]:
    """Which of ``ids`` (``kind:value``) another tenant holds, with the owner: a check
    before the work of a change (the claim itself stays the authority)."""
    by_kind: dict[str, list[str]] = {}
    for key in dict.fromkeys(ids):
        kind, _, value = key.partition(":")
        if kind in KINDS and value:
            by_kind.setdefault(kind, []).append(value)
    out: dict[str, str] = {}
    for kind, values in by_kind.items():
        for start in range(0, len(values), CHUNK):
            chunk = values[start : start + CHUNK]
            owners = await redis.hmget(owner_key(kind), chunk)
            for value, owner in zip(chunk, owners, strict=True):
                if owner is not None and _s(owner) != tenant:
                    out[ident(kind, value)] = _s(owner)
    return out
