"""Nchf charging notifications (TS 32.291 6.1.3.4, TS 32.290 5.2.2.4): on Nchf, what RAR and
ASR do on Gy. The CHF POSTs a ChargingNotifyRequest to the ``notifyUri`` the consumer (the
SMF) gave when it created the charging data resource:

* ``REAUTHORIZATION`` (for an RAR: a top-up, a renewal, a plan change): the SMF asks for
  quota again, in an update, for every rating group (no ``reauthorizationDetails``: all);
* ``ABORT_CHARGING`` (for an ASR: a suspension, a termination): the SMF ends the PDU session's
  charging and releases the resource.

HTTP/2 (h2c with prior knowledge for ``http://``, :mod:`ocs.network.sbi`). Each attempt has
``timeout``; a consumer that cannot be reached, or answers 429 or 5xx, is asked again up to
``attempts`` times with a doubling pause; 404 or 410 mean it no longer knows the session
(``gone``: the resource is forgotten like a Gy session answered 5002). Outcomes are counted
in ``ocs_nchf_notifications_total{type, outcome}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from ocs.network.sbi import SbiError, request, sbi_client
from ocs.observability.metrics import SbiMetrics

log = logging.getLogger("ocs.network.notify")

REAUTHORIZATION: Final = "REAUTHORIZATION"
ABORT_CHARGING: Final = "ABORT_CHARGING"
NOTIFICATION_OF: Final = {"rar": REAUTHORIZATION, "asr": ABORT_CHARGING}
TIMEOUT: Final = 2.0  # seconds for one attempt
ATTEMPTS: Final = 3
BACKOFF_FIRST: Final = 0.2  # seconds before the second attempt, doubling
MAX_URI: Final = 2048
DELIVERED: Final = "delivered"
GONE: Final = "gone"  # 404/410: the consumer no longer knows the session
REFUSED: Final = "refused"  # another 4xx: asking again would not help
UNREACHABLE: Final = "unreachable"  # no answer, or 429/5xx, after every attempt
RETRY_STATUS: Final = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # DELIVERED, GONE, REFUSED, UNREACHABLE
    http_status: int = 0  # the consumer's last answer (0: none)
    attempts: int = 0


def usable_uri(uri: str) -> bool:
    """A notifyUri we may POST to: http or https, a host, not over :data:`MAX_URI`."""
    if not uri or len(uri) > MAX_URI:
        return False
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def notify_request(kind: str, rating_groups: tuple[int, ...] = ()) -> dict[str, Any]:
    """The ChargingNotifyRequest body; ``rating_groups`` empty: every rating group."""
    body: dict[str, Any] = {"notificationType": kind}
    if rating_groups:
        body["reauthorizationDetails"] = [{"ratingGroup": rg} for rg in rating_groups]
    return body


class ChargingNotifier:
    """One HTTP/2 client for a batch of notifications: ``async with ChargingNotifier() as n``."""

    def __init__(
        self,
        *,
        timeout: float = TIMEOUT,
        attempts: int = ATTEMPTS,
        backoff_first: float = BACKOFF_FIRST,
        metrics: SbiMetrics | None = None,
        client: Callable[[float], httpx.AsyncClient] = sbi_client,
    ) -> None:
        self.attempts = max(1, attempts)
        self.backoff_first = backoff_first
        self.metrics = metrics
        self._client = client(timeout)

    async def __aenter__(self) -> ChargingNotifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def notify(self, uri: str, kind: str, rating_groups: tuple[int, ...] = ()) -> Outcome:
        """POST one ChargingNotifyRequest of ``kind``; never raises."""
        if not usable_uri(uri):
            return self._count(kind, Outcome(REFUSED))
        body = notify_request(kind, rating_groups)
        last = 0
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self.backoff_first * 2.0 ** (attempt - 2))
            try:
                answer = await request(self._client, "POST", uri, body)
            except SbiError as exc:
                log.debug("notification to %s: %s", uri, exc)
                continue
            last = answer.status
            if 200 <= last < 300:
                return self._count(kind, Outcome(DELIVERED, last, attempt))
            if last in (404, 410):
                return self._count(kind, Outcome(GONE, last, attempt))
            if last not in RETRY_STATUS:
                log.warning("%s notification to %s refused: %d", kind, uri, last)
                return self._count(kind, Outcome(REFUSED, last, attempt))
        log.warning(
            "%s notification to %s not delivered after %d attempts%s",
            *(kind, uri, self.attempts, f" (last answer {last})" if last else ""),
        )
        return self._count(kind, Outcome(UNREACHABLE, last, self.attempts))

    def _count(self, kind: str, outcome: Outcome) -> Outcome:
        if self.metrics is not None:
            self.metrics.notifications.labels(kind, outcome.status).inc()
        return outcome
