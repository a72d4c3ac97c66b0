"""What a store outage writes to the log: one line per state change, never one per call.

Under load every CCR, session write and housekeeping pass meets the same dead connection; a
line (or a traceback) each made ~7,700 WARNING lines in 5 s of outage. :class:`OutageLog`
writes one WARNING when the store goes down (with the first error), one WARNING every
``every`` seconds while it stays down (how long, how many failed calls), and one INFO line
when a call succeeds again. The calls are counted in ``ocs_redis_errors_total`` besides.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

STILL_DOWN_EVERY: Final = 10.0  # seconds between two "still unreachable" lines


class OutageLog:
    __slots__ = ("_clock", "_last_line", "down_since", "every", "failures", "name")

    def __init__(
        self,
        name: str = "Redis",
        *,
        every: float = STILL_DOWN_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.every = every
        self._clock = clock
        self.down_since: float | None = None  # None: the store answers
        self.failures = 0  # failed calls in the current outage
        self._last_line = 0.0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        """A call to the store failed because it cannot be reached (never raises)."""
        now = self._clock()
        self.failures += 1
        if self.down_since is None:
            self.down_since = self._last_line = now
            self.failures = 1
            log.warning(
                "%s unreachable: %s: %s (one line every %g s until it answers again)",
                self.name,
                type(exc).__name__,
                exc,
                self.every,
                extra={"store": self.name.lower(), "state": "down"},
            )
        elif now - self._last_line >= self.every:
            self._last_line = now
            log.warning(
                "%s still unreachable after %.0f s: %d failed calls",
                self.name,
                now - self.down_since,
                self.failures,
                extra={"store": self.name.lower(), "state": "down", "failures": self.failures},
            )

    def succeeded(self) -> None:
        """A call to the store succeeded: ends an outage (one line), else nothing."""
        if self.down_since is None:
            return
        took = self._clock() - self.down_since
        log.info(
            "%s reachable again after %.1f s: %d failed calls",
            self.name,
            took,
            self.failures,
            extra={"store": self.name.lower(), "state": "up", "failures": self.failures},
        )
        self.down_since = None
        self.failures = 0


_keep: dict[str, OutageLog] = {}


def outage_log(name: str = "Redis") -> OutageLog:
    """The process-wide :class:`OutageLog` of the store ``name``: every component calling
    the same store (charging, session writes, the network tracker and listener,
    housekeeping) shares it, so the process writes one line per state change."""
    found = _keep.get(name)
    if found is None:
        found = _keep[name] = OutageLog(name)
    return found
