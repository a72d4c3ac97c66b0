"""The webhook signature (docs/webhooks.md): ``Ocs-Signature: t=<unix seconds>,v1=<hex>``,
``v1`` = HMAC-SHA256(secret, "<t>.<raw body>"), as Stripe and Standard Webhooks sign, so a
receiver checks both the body and its age (a replay of an old delivery is refused)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

HEADER: Final = "Ocs-Signature"
EVENT_HEADER: Final = "Ocs-Event-Id"
TOLERANCE: Final = 300  # seconds a receiver should accept between t and its clock


def signature(secret: str, t: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance: int = TOLERANCE) -> bool:
    """What a receiver does: parse ``t`` and every ``v1``, refuse an old ``t``, compare in
    constant time."""
    parts = [p.partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    t = int(stamps[0])
    if abs(now - t) > tolerance:
        return False
    expected = signature(secret, t, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, v) for k, _, v in parts if k == "v1")
