"""Local weekday and minute of day of a UTC instant in one time zone, without a time zone
conversion per call.

`datetime.astimezone(ZoneInfo)` costs about a microsecond. A `LocalClock` learns the UTC
offset of its zone once per UTC hour (probing the first and the last microsecond of the hour)
and then derives the local weekday and minute with integer arithmetic. An hour whose two probes
disagree (it contains a transition) or whose offset is not a whole number of minutes (local
mean time before 1900, say) is marked, and instants in it are converted exactly with
`astimezone`. The result is the same as converting every instant (tested): tzdata has no two
transitions within one hour that would undo each other between the probes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

MINUTES_PER_DAY = 1440
_MINUTE = timedelta(minutes=1)
_EXACT = 1 << 40
"""Marks an hour in which instants are converted with `astimezone` (not a real offset)."""
OFFSET_CACHE_LIMIT = 1 << 16
"""Hours remembered per zone (about 7 years); the cache starts over when it is full."""


class LocalClock:
    """Local (weekday, minute of day) of UTC instants in `tz`; one per zone per catalogue."""

    __slots__ = ("offsets", "tz")

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.offsets: dict[int, int] = {}
        """UTC hour (minutes since 0001-01-01 // 60) -> UTC offset in minutes, or `_EXACT`."""

    def weekday_minute(self, at: datetime) -> tuple[int, int]:
        """Local weekday (0 = Monday) and minute of the local day of `at`, which must be in
        UTC (`tzinfo is datetime.UTC`)."""
        minutes = at.toordinal() * MINUTES_PER_DAY + at.hour * 60 + at.minute
        hour = minutes // 60
        offset = self.offsets.get(hour)
        if offset is None:
            offset = self._learn(at, hour)
        if offset == _EXACT:
            local = at.astimezone(self.tz)
            return local.weekday(), local.hour * 60 + local.minute
        minutes += offset
        # date.weekday() == (toordinal() + 6) % 7
        return (minutes // MINUTES_PER_DAY + 6) % 7, minutes % MINUTES_PER_DAY

    def _learn(self, at: datetime, hour: int) -> int:
        first = at.replace(minute=0, second=0, microsecond=0)
        last = first.replace(minute=59, second=59, microsecond=999_999)
        try:
            before = first.astimezone(self.tz).utcoffset()
            after = last.astimezone(self.tz).utcoffset()
        except (OverflowError, ValueError):
            before = after = None
        offset = _EXACT
        if before is not None and before == after and not before % _MINUTE:
            offset = before // _MINUTE
        if len(self.offsets) >= OFFSET_CACHE_LIMIT:
            self.offsets.clear()
        self.offsets[hour] = offset
        return offset
