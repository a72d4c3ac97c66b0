"""Time-of-day and weekday bands, evaluated in the subscriber's local time.

At compile time each weekday is cut into minute ranges, each labelled with the band in force
(first matching band wins, else the default), so a lookup is one bisect.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from ocs.rating.filters import CompiledWindow
from ocs.rating.models import BandSet

MINUTES_PER_DAY = 1440


@dataclass(frozen=True, slots=True)
class BandIndex:
    id: str
    bands: tuple[tuple[str, tuple[CompiledWindow, ...]], ...]
    default: str
    day_starts: tuple[tuple[int, ...], ...]  # per weekday: minute where each range starts
    day_bands: tuple[tuple[str, ...], ...]  # per weekday: the band of each range

    @property
    def band_ids(self) -> frozenset[str]:
        return frozenset(b for b, _ in self.bands) | {self.default}

    def band_at(self, weekday: int, minute: int) -> str:
        return self.day_bands[weekday][bisect_right(self.day_starts[weekday], minute) - 1]

    def band_by_scan(self, weekday: int, minute: int) -> str:
        """The definition, scanned (used to build the table and to test it)."""
        for band, windows in self.bands:
            for window in windows:
                if window.contains(weekday, minute):
                    return band
        return self.default

    @classmethod
    def build(cls, spec: BandSet) -> BandIndex:
        bands = tuple((b.id, tuple(CompiledWindow.of(w) for w in b.windows)) for b in spec.bands)
        probe = cls(spec.id, bands, spec.default, (), ())
        cuts = {0}
        for _, windows in bands:
            for window in windows:
                cuts.update(m for m in (window.start, window.end) if m < MINUTES_PER_DAY)
        points = sorted(cuts)
        day_starts: list[tuple[int, ...]] = []
        day_bands: list[tuple[str, ...]] = []
        for weekday in range(7):
            starts: list[int] = []
            labels: list[str] = []
            for minute in points:
                band = probe.band_by_scan(weekday, minute)
                if not labels or labels[-1] != band:
                    starts.append(minute)
                    labels.append(band)
            day_starts.append(tuple(starts))
            day_bands.append(tuple(labels))
        return cls(spec.id, bands, spec.default, tuple(day_starts), tuple(day_bands))
