"""Every Redis key the balance store and the charging application use, in one place.

Balance keys carry one hash tag per payer, ``{tenant:kind:id}``, so that every key a Lua script
touches lives in one Redis Cluster slot. The rated usage stream is per payer as well
(``ocs:{tag}:cdr``): a script may only write to its payer's slot, and a per-payer stream keeps
the records of one payer in order. The offline drain finds the streams through the registry
set :data:`PAYERS` (one entry per payer, written by ``apply_catalog``).

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
CATALOG: Final = f"{PREFIX}:catalog"  # HASH path, tenant, applied_at
CATALOG_FILES: Final = f"{PREFIX}:catalog:files"  # HASH file name -> text of the applied folder
CATALOG_FILES_VERSION: Final = "\x00applied_at"  # field of CATALOG_FILES: whose files these are
MSISDN_INDEX: Final = f"{PREFIX}:msisdn"  # HASH msisdn -> payer tag of its first twin
FAILOVER: Final = f"{PREFIX}:failover"  # no Redis here: the file name under data_dir
LIFECYCLE_EVENTS: Final = f"{PREFIX}:lifecycle:events"  # STREAM of renewal failures etc.


@dataclass(frozen=True, slots=True)
class PayerKeys:
    """The keys of one payer; ``tag`` is ``tenant:kind:id``."""

    tag: str

    @property
    def buckets(self) -> str:
        return f"{PREFIX}:{{{self.tag}}}:buckets"

    @property
    def balances(self) -> str:
        return f"{PREFIX}:{{{self.tag}}}:bal"

    @property
    def reservations(self) -> str:
        return f"{PREFIX}:{{{self.tag}}}:rsv"

    @property
    def reservation_index(self) -> str:
        return f"{PREFIX}:{{{self.tag}}}:rsvidx"

    @property
    def stream(self) -> str:
        return f"{PREFIX}:{{{self.tag}}}:cdr"

    @property
    def lifecycle(self) -> str:
        """HASH of the payer's lifecycle (docs/lifecycle.md): current period, adaptive tier,
        auto top-off rule and per-period counters, renewal markers."""
        return f"{PREFIX}:{{{self.tag}}}:life"

    @property
    def counters(self) -> str:
        """HASH of the period counters (tiers, allowances) of the usage this payer pays with
        a price (``charge.lua`` KEYS[8]): ``<period>|<counter key>`` -> units."""
        return f"{PREFIX}:{{{self.tag}}}:ctr"

    @property
    def events(self) -> str:
        """STREAM: the payer's event outbox (docs/webhooks.md). The balance scripts append
        to it with ``emit`` (``lua/_events.lua``) in the step that causes the event; the
        webhook dispatcher reads it and trims what every subscription has passed."""
        return f"{PREFIX}:{{{self.tag}}}:events"

    @property
    def limits(self) -> str:
        """HASH of the per-SIM caps of the usage this payer pays (``charge.lua`` KEYS[10],
        docs/limits.md): ``<imsi>|<scope>|<cap>`` -> ``<period>:<used>:<reserved>:<reached>``.
        They live in the payer's slot, so the reservation script checks and moves them in
        the same atomic step as the balance, with no other key."""
        return f"{PREFIX}:{{{self.tag}}}:lim"

    def done(self, request_id: str) -> str:
        """Idempotency record of one request on this payer."""
        return f"{PREFIX}:{{{self.tag}}}:done:{request_id}"


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
