"""Every Redis key the balance store and the charging application use, in one place.

Balance keys carry one hash tag per payer, ``{tenant:kind:id}``, so that every key a Lua script
touches lives in one Redis Cluster slot. The rated usage stream is per payer as well
(``ocs:{tag}:cdr``): a script may only write to its payer's slot, and a per-payer stream keeps
the records of one payer in order. The offline drain finds the streams through the registry
set :data:`PAYERS` (one entry per payer, written by ``apply_catalog``).

Reseller chains (B2B2B) share one slot. A usage of an end customer's SIM is reserved at every
prepaid level in one ``charge.lua`` call (docs/charging.md, "Multi-level reservations"), so
the payers of one chain must live in one slot: a payer owned by an account that has upper
levels keeps its keys under the hash tag of its chain's *root*, the payer of the topmost
level (``ocs:{root}:{tag}:buckets``; the second pair of braces does not count for the slot).
Every other payer, the root included, keeps ``ocs:{tag}:...``: the layout changes only where
a chain exists, so single-level payers (and their data) are untouched. The registry hash
:data:`PAYER_SLOTS` maps each chained payer to its root; whoever lists payers without a
catalogue (drain, audit, reclaim, lifecycle, the API) reads it. Provisioning writes it and
moves a payer's keys when its root changes (``ocs.balance.slots``).

The keys of one Diameter session (its state and its stored answers) share a hash tag of their
own, the Session-Id, so that the per-CCR session pipelines go to one cluster node. The global
keys (the catalogue pointer, the SIM index, the payer registry) have no hash tag; no script
touches them or a session's keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PREFIX: Final = "ocs"
PAYERS: Final = f"{PREFIX}:payers"  # SET of payer tags (tenant:kind:id)
PAYER_SLOTS: Final = f"{PREFIX}:payer:slots"  # HASH chained payer tag -> its chain's root tag
CATALOG: Final = f"{PREFIX}:catalog"  # HASH path, tenant, applied_at
CATALOG_FILES: Final = f"{PREFIX}:catalog:files"  # HASH file name -> text of the applied folder
CATALOG_FILES_VERSION: Final = "\x00applied_at"  # field of CATALOG_FILES: whose files these are
MSISDN_INDEX: Final = f"{PREFIX}:msisdn"  # HASH msisdn -> payer tag of its first twin
FAILOVER: Final = f"{PREFIX}:failover"  # no Redis here: the file name under data_dir
LIFECYCLE_EVENTS: Final = f"{PREFIX}:lifecycle:events"  # STREAM of renewal failures etc.


@dataclass(frozen=True, slots=True)
class PayerKeys:
    """The keys of one payer; ``tag`` is ``tenant:kind:id``; ``root`` the tag of its chain's
    root payer when it is in a reseller chain (its keys then share the root's slot), else
    empty (or the tag itself: a root keeps its own keys)."""

    tag: str
    root: str = ""

    @property
    def base(self) -> str:
        """What every key of the payer starts with: ``ocs:{tag}`` or ``ocs:{root}:{tag}``."""
        if self.root and self.root != self.tag:
            return f"{PREFIX}:{{{self.root}}}:{{{self.tag}}}"
        return f"{PREFIX}:{{{self.tag}}}"

    @property
    def buckets(self) -> str:
        return f"{self.base}:buckets"

    @property
    def balances(self) -> str:
        return f"{self.base}:bal"

    @property
    def reservations(self) -> str:
        return f"{self.base}:rsv"

    @property
    def reservation_index(self) -> str:
        return f"{self.base}:rsvidx"

    @property
    def stream(self) -> str:
        return f"{self.base}:cdr"

    @property
    def lifecycle(self) -> str:
        """HASH of the payer's lifecycle (docs/lifecycle.md): current period, adaptive tier,
        auto top-off rule and per-period counters, renewal markers."""
        return f"{self.base}:life"

    @property
    def counters(self) -> str:
        """HASH of the period counters (tiers, allowances) of the usage this payer pays with
        a price (``charge.lua`` KEYS[8]): ``<period>|<counter key>`` -> units."""
        return f"{self.base}:ctr"

    @property
    def moved(self) -> tuple[str, ...]:
        """The keys that hold the payer's state (moved when its root changes); the
        idempotency records (``done``) expire within the hour and are not."""
        return (
            self.buckets,
            self.balances,
            self.reservations,
            self.reservation_index,
            self.stream,
            self.lifecycle,
            self.counters,
            self.events,
            self.limits,
        )

    @property
    def events(self) -> str:
        """STREAM: the payer's event outbox (docs/webhooks.md). The balance scripts append
        to it with ``emit`` (``lua/_events.lua``) in the step that causes the event; the
        webhook dispatcher reads it and trims what every subscription has passed."""
        return f"{self.base}:events"

    @property
    def limits(self) -> str:
        """HASH of the per-SIM caps of the usage this payer pays (``charge.lua`` KEYS[10],
        docs/limits.md): ``<imsi>|<scope>|<cap>`` -> ``<period>:<used>:<reserved>:<reached>``.
        They live in the payer's slot, so the reservation script checks and moves them in
        the same atomic step as the balance, with no other key."""
        return f"{self.base}:lim"

    def done(self, request_id: str) -> str:
        """Idempotency record of one request on this payer."""
        return f"{self.base}:done:{request_id}"


def payer_tag(tenant: str, kind: str, payer_id: str) -> str:
    return f"{tenant}:{kind}:{payer_id}"


def session_key(session_id: str) -> str:
    """HASH of one Diameter session's state (TTL refreshed on every CCR)."""
    return f"{PREFIX}:sess:{{{session_id}}}"


def answer_key(session_id: str, request_number: int) -> str:
    """The encoded CCA of one request, so a retransmission after a restart gets it again."""
    return f"{PREFIX}:ans:{{{session_id}}}:{request_number}"


def reservation_member(session_id: str, rating_group: int) -> str:
    return f"{session_id}|{rating_group}"


def nchf_key(tenant: str, ref: str) -> str:
    """HASH of one Nchf_ConvergedCharging charging data resource (``ocs.charging.nchf.state``
    documents its fields; docs/nchf.md): who it charges, its consumer's notifyUri, the last
    invocationSequenceNumber and the payer holding each rating group's reservation. The
    tenant is in the key, and the resource's keys share one hash tag."""
    return f"{PREFIX}:nchf:{{{tenant}:{ref}}}"


def nchf_answer_key(tenant: str, ref: str, sequence: int) -> str:
    """The answer (status and body) of one invocationSequenceNumber of a charging data
    resource: a retried request gets it again and is charged nothing."""
    return f"{PREFIX}:nchf:{{{tenant}:{ref}}}:isn:{sequence}"


def nchf_subscriber_key(tenant: str, value: str, kind: str = "imsi") -> str:
    """SET of the open charging data resources (ChargingDataRefs) of one IMSI of ``tenant``
    (TTL ``session_ttl``, refreshed by each request), for charging notifications: the Nchf
    counterpart of ``ocs.network.keys.subscriber_key`` for Gy sessions. ``kind`` "msisdn":
    the resources created with an MSISDN (GPSI) only, indexed by it."""
    return f"{PREFIX}:nchf:sub:{tenant}:{kind}:{value}"


def nchf_create_key(tenant: str, digest: str) -> str:
    """The ChargingDataRef a create request (by the digest of its body) made, for
    ``answer_ttl``: the same create sent again (a retry) gets the same resource."""
    return f"{PREFIX}:nchf:create:{tenant}:{digest}"
