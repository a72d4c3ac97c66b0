"""The state of each charging data resource in Redis, so that any worker (or a restarted
server) continues it, and so that notifications (``ocs.network``) find its consumer.

``ocs:nchf:{<tenant>:<ref>}`` (``ocs.balance.keys.nchf_key``), a HASH, TTL
``ChargingConfig.session_ttl`` refreshed by every request:

=============  ========================================================================
field          value
=============  ========================================================================
``tenant``     the tenant (also in the key and in the ref)
``imsi``       the subscriber's IMSI (``subscriberIdentifier`` imsi-...; "" if only an
               MSISDN was given)
``msisdn``     its MSISDN ("" if none)
``notifyUri``  the consumer's ``notifyUri`` for ChargingNotifyRequest ("" if none given)
``consumer``   ``nfConsumerIdentification`` nFName, else nodeFunctionality
``isn``        the last invocationSequenceNumber answered
``n``          how many requests of the resource were charged: the number of the next
               one's charge (request ids ``nchf:<ref>:<n>:<rg>``, the records' ``n``)
``created``    creation time, ms since the epoch
``ctx``        the rating context of the PDU session as JSON (dnnId, PLMN, RAT, UE
               address, 5QI, S-NSSAI), updated by each request that carries it
``rg:<n>``     the payer tag (``tenant:kind:id``) holding rating group n's reservation
``u:<n>``      the unit of that reservation when it is not bytes (``seconds``, ``events``):
               the rating group keeps it while it holds a reservation
``closed``     "1" once released (kept ``answer_ttl`` for retried releases, then gone)
=============  ========================================================================

``ocs:nchf:{<tenant>:<ref>}:isn:<n>`` (``nchf_answer_key``), a STRING, TTL
``ChargingConfig.answer_ttl``: the answer of invocationSequenceNumber n as JSON
``{"status": 200, "body": "<the response body>", "digest": "<of the request body>"}``.

``ocs:nchf:sub:<tenant>:imsi:<imsi>`` (``nchf_subscriber_key``), a SET, TTL
``session_ttl``: the refs of the subscriber's open resources (added at create, removed at
release), so that a notifier finds them from a subscriber. A resource created with an
MSISDN only (``subscriberIdentifier`` or ``servedGPSI`` msisdn-..., no SUPI) is in
``ocs:nchf:sub:<tenant>:msisdn:<msisdn>`` instead, as a Gy session is indexed by both.

``ocs:nchf:create:<tenant>:<digest>`` (``nchf_create_key``), a STRING, TTL ``answer_ttl``:
the ref a create request made, by the digest of its body, so that the same create sent
again (a retry whose answer was lost) gets the same resource instead of a second one.

The ChargingDataRef is ``<32 hex digits>-<tenant>``: the tenant of a request is read from the
ref, so every key it reaches carries it; an unknown or malformed ref is 404.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ocs.balance.batch import Command, CommandBatcher
from ocs.balance.keys import nchf_answer_key, nchf_create_key, nchf_key, nchf_subscriber_key
from ocs.balance.models import BucketUnit

_RG: Final = "rg:"
_UNIT: Final = "u:"
REF_RE: Final = re.compile(r"^([0-9a-f]{32})-([A-Za-z0-9][A-Za-z0-9_.:-]{0,63})$")


def new_ref(tenant: str) -> str:
    return f"{secrets.token_hex(16)}-{tenant}"


def tenant_of_ref(ref: str) -> str | None:
    """The tenant a ChargingDataRef names, None if the ref is not one of ours."""
    match = REF_RE.match(ref)
    return match.group(2) if match else None


@dataclass(slots=True)
class Resource:
    """One charging data resource as stored."""

    tenant: str
    ref: str
    imsi: str
    msisdn: str | None
    notify_uri: str | None
    consumer: str
    sequence: int
    created_ms: int
    count: int = 0  # requests charged so far (create: 0): the next one's number
    context: dict[str, Any] = field(default_factory=dict)
    payers: dict[int, str] = field(default_factory=dict)
    units: dict[int, BucketUnit] = field(default_factory=dict)  # rating group -> not bytes
    closed: bool = False

    def unit_of(self, rg: int, named: BucketUnit | None) -> BucketUnit:
        """The unit of rating group ``rg`` in this request: the one its reservation was
        made in while it holds one (what a request names cannot change it mid-quota),
        else the one the request names, else volume."""
        if rg in self.payers:
            return self.units.get(rg, BucketUnit.BYTES)
        return named or BucketUnit.BYTES

    def index_key(self) -> str | None:
        """The subscriber index that names this resource, for notifications: by IMSI, or
        by MSISDN for one created with a GPSI only (None: neither, never indexed)."""
        if self.imsi:
            return nchf_subscriber_key(self.tenant, self.imsi)
        if self.msisdn:
            return nchf_subscriber_key(self.tenant, self.msisdn, "msisdn")
        return None

    def fields(self) -> list[Any]:
        out: list[Any] = [
            "tenant", self.tenant, "imsi", self.imsi, "msisdn", self.msisdn or "",
            "notifyUri", self.notify_uri or "", "consumer", self.consumer,
            "isn", self.sequence, "created", self.created_ms, "n", self.count,
            "ctx", orjson.dumps(self.context),
        ]  # fmt: skip
        units = self.units
        for rg, payer in self.payers.items():
            out += (f"{_RG}{rg}", payer)
            if rg in units:
                out += (f"{_UNIT}{rg}", str(units[rg]))
        return out


class ResourceStore:
    def __init__(self, batch: CommandBatcher, ttl: int, answer_ttl: int) -> None:
        self.batch = batch
        self.ttl = ttl
        self.answer_ttl = answer_ttl

    async def load(self, tenant: str, ref: str, sequence: int) -> tuple[Resource | None, Any]:
        """The resource (None: unknown or expired) and the stored answer of ``sequence``
        (None: not answered before)."""
        state, answer = await self.batch.execute_many(
            (("HGETALL", nchf_key(tenant, ref)), ("GET", nchf_answer_key(tenant, ref, sequence)))
        )
        stored = orjson.loads(answer) if answer else None
        pairs = (
            state.items() if isinstance(state, dict) else zip(state[::2], state[1::2], strict=True)
        )
        values: dict[str, str] = {}
        for name, value in pairs:
            key = name.decode() if isinstance(name, bytes) else str(name)
            values[key] = value.decode() if isinstance(value, bytes) else str(value)
        if "imsi" not in values:
            return None, stored
        payers = {int(k[len(_RG) :]): v for k, v in values.items() if k.startswith(_RG)}
        units = {
            int(k[len(_UNIT) :]): BucketUnit(v) for k, v in values.items() if k.startswith(_UNIT)
        }
        resource = Resource(
            tenant=tenant,
            ref=ref,
            imsi=values["imsi"],
            msisdn=values.get("msisdn") or None,
            notify_uri=values.get("notifyUri") or None,
            consumer=values.get("consumer", ""),
            sequence=int(values.get("isn", "0")),
            created_ms=int(values.get("created", "0")),
            count=int(values.get("n", "0")),
            context=orjson.loads(values.get("ctx") or "{}"),
            payers=payers,
            units=units,
            closed=values.get("closed") == "1",
        )
        return resource, stored

    async def created(self, tenant: str, digest: str) -> str | None:
        """The ref an identical create made within ``answer_ttl`` (None: none did)."""
        ref = await self.batch.execute("GET", nchf_create_key(tenant, digest))
        return None if ref is None else (ref.decode() if isinstance(ref, bytes) else str(ref))

    async def save(
        self,
        resource: Resource,
        sequence: int,
        status: int,
        body: bytes,
        dropped: tuple[int, ...] = (),
        digest: str = "",
    ) -> None:
        """Write the resource and the answer of ``sequence``, one pipeline, waited for (a
        retry on another worker must find both)."""
        key = nchf_key(resource.tenant, resource.ref)
        commands: list[Command] = []
        if resource.closed:
            commands += [
                ("DEL", key),
                ("HSET", key, "closed", "1", *resource.fields()[:8]),
                ("EXPIRE", key, self.answer_ttl),
            ]
        else:
            commands.append(("HSET", key, *resource.fields()))
            gone = [f"{_RG}{rg}" for rg in dropped if rg not in resource.payers]
            gone += [f"{_UNIT}{rg}" for rg in dropped if rg not in resource.units]
            if gone:
                commands.append(("HDEL", key, *gone))
            commands.append(("EXPIRE", key, self.ttl))
        index = resource.index_key()
        if index is not None:
            if resource.closed:
                commands.append(("SREM", index, resource.ref))
            else:
                commands += [("SADD", index, resource.ref), ("EXPIRE", index, self.ttl)]
        if status == 201 and digest:  # a create: its retry finds the resource
            ref_key = nchf_create_key(resource.tenant, digest)
            commands.append(("SET", ref_key, resource.ref, "EX", self.answer_ttl))
        answer = orjson.dumps({"status": status, "body": body.decode(), "digest": digest})
        commands.append(
            (
                "SET",
                nchf_answer_key(resource.tenant, resource.ref, sequence),
                answer,
                "EX",
                self.answer_ttl,
            )
        )
        await self.batch.execute_many(commands)
