"""Events as delivered, and webhook subscriptions: the contract of docs/webhooks.md."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

EVENT_TYPES: Final = (
    "balance.threshold",
    "quota.exhausted",
    "topoff.purchased",
    "renewal.paid",
    "renewal.unpaid",
    "sim.limit_reached",
    "sim.state_changed",
    "invoice.issued",
    "credit_note.issued",
    "debit_note.issued",
    "outage.granted",
)
ALL: Final = "*"
MAX_URL: Final = 2048
MAX_EVENTS: Final = 32
MAX_FILTER: Final = 1000  # payer ids or IMSIs in one filter
SECRET_MIN, SECRET_MAX = 16, 128


class SubscriptionError(ValueError):
    """A subscription the API refuses: ``field`` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def event_id(scope: str, etype: str, natural_key: str) -> str:
    """The id ``emit`` (``_events.lua``) gives: the same cause, the same id."""
    digest = hashlib.sha1(f"{scope}|{etype}|{natural_key}".encode(), usedforsecurity=False)
    return "evt_" + digest.hexdigest()[:32]


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Event:
    """One outbox entry. ``subject`` and ``data`` are kept as the JSON text the writer made
    (a script writes integers beyond 2^53 exactly), and spliced into the body as is."""

    id: str
    tenant: str
    type: str
    subject_json: str
    time_ms: int
    data_json: str
    subject: dict[str, Any] = field(compare=False)

    @classmethod
    def from_fields(cls, raw: dict[Any, Any]) -> Event:
        f = {_s(k): _s(v) for k, v in raw.items()}
        subject = json.loads(f["subject"])
        return cls(
            id=f["id"],
            tenant=f["tenant"],
            type=f["type"],
            subject_json=f["subject"],
            time_ms=int(f["time"]),
            data_json=f["data"],
            subject=subject if isinstance(subject, dict) else {},
        )

    @property
    def time(self) -> str:
        """RFC 3339, UTC, milliseconds."""
        at = datetime.fromtimestamp(self.time_ms / 1000, tz=UTC)
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.time_ms % 1000:03d}Z"

    def body(self) -> bytes:
        """The delivery body: ``{"id", "type", "tenant", "subject", "time", "data"}``."""
        head = ",".join(
            f"{json.dumps(k)}:{json.dumps(v)}"
            for k, v in (("id", self.id), ("type", self.type), ("tenant", self.tenant))
        )
        return (
            f'{{{head},"subject":{self.subject_json},"time":{json.dumps(self.time)},'
            f'"data":{self.data_json}}}'
        ).encode()


def check_url(url: str, *, private_targets: bool) -> str:
    """A callback URL: http(s), a host, no user info or fragment, at most 2 KB; a literal
    loopback, private or link-local address (or ``localhost``) only with ``private_targets``."""
    if len(url) > MAX_URL:
        raise SubscriptionError("url", f"longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SubscriptionError("url", f"not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise SubscriptionError("url", "must be http:// or https://")
    host = parts.hostname
    if not host:
        raise SubscriptionError("url", "has no host")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise SubscriptionError("url", "must not carry user info or a fragment")
    if port == 0:
        raise SubscriptionError("url", "port 0")
    if not private_targets:
        if host == "localhost" or host.endswith(".localhost"):
            raise SubscriptionError("url", "localhost is not allowed (webhook_private_targets)")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and not ip.is_global:
            raise SubscriptionError(
                "url", f"{ip} is not a public address (webhook_private_targets)"
            )
    return url


def check_events(events: list[str]) -> list[str]:
    if not events:
        raise SubscriptionError("events", "name at least one event type, or '*'")
    if len(events) > MAX_EVENTS:
        raise SubscriptionError("events", f"at most {MAX_EVENTS}")
    for e in events:
        if e != ALL and e not in EVENT_TYPES:
            raise SubscriptionError("events", f"unknown event type {e!r}")
    return sorted(set(events))


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A tenant's webhook: where to POST which events. ``payers`` / ``imsis`` filter by
    subject (empty: all). ``start``: the outbox entry id it starts after (its creation)."""

    id: str
    tenant: str
    url: str
    events: tuple[str, ...]
    secret: str
    payers: tuple[str, ...] = ()
    imsis: tuple[str, ...] = ()
    created_ms: int = 0

    @property
    def start(self) -> str:
        """The cursor before its first event: the last id of the millisecond before its
        creation (so an event of that very millisecond, ``<created>-0``, is included)."""
        return f"{self.created_ms - 1}-{2**64 - 1}"

    def matches(self, event: Event) -> bool:
        if ALL not in self.events and event.type not in self.events:
            return False
        if self.payers and event.subject.get("payer") not in self.payers:
            return False
        return not self.imsis or event.subject.get("imsi") in self.imsis

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "tenant": self.tenant,
                "url": self.url,
                "events": list(self.events),
                "secret": self.secret,
                "payers": list(self.payers),
                "imsis": list(self.imsis),
                "created_ms": self.created_ms,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Subscription:
        d = json.loads(raw)
        return cls(
            id=str(d["id"]),
            tenant=str(d["tenant"]),
            url=str(d["url"]),
            events=tuple(d["events"]),
            secret=str(d["secret"]),
            payers=tuple(d.get("payers", ())),
            imsis=tuple(d.get("imsis", ())),
            created_ms=int(d.get("created_ms", 0)),
        )
