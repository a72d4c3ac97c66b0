"""Redis keys and channels of the network side (which worker holds which session).

No hash tags: each command touches one key, and pub/sub channels are cluster-wide."""

from __future__ import annotations

from typing import Final

PREFIX: Final = "ocs:net"
BROADCAST: Final = f"{PREFIX}:all"
"""Channel every worker listens on (catalogue changes: reload before the next RAR)."""
SESSION_TTL: Final = 24 * 3600  # a session record outlives any sane session without CCR-T


def session_key(session_id: str) -> str:
    """HASH tenant, host, realm, peer, worker, imsi, msisdn, started of one Gy session (the
    Session-Id is the gateway's; the record says whose subscriber the session is)."""
    return f"{PREFIX}:sess:{session_id}"


def subscriber_key(tenant: str, kind: str, value: str) -> str:
    """SET of the open session ids of one IMSI (``kind`` "imsi") or MSISDN ("msisdn") of
    ``tenant``: a tenant only ever reaches its own subscribers' sessions."""
    return f"{PREFIX}:sub:{tenant}:{kind}:{value}"


def peer_workers_key(peer: str) -> str:
    """SET of the worker ids holding a connection from this Diameter peer."""
    return f"{PREFIX}:peer:{peer}"


def worker_channel(worker: str) -> str:
    return f"{PREFIX}:w:{worker}"


def reply_key(request_id: str) -> str:
    """LIST the workers push the outcome of each RAR/ASR to."""
    return f"{PREFIX}:reply:{request_id}"
