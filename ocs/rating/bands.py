"""Time-of-day and weekday bands, evaluated in the subscriber's local time."""

from __future__ import annotations

from dataclasses import dataclass

from ocs.rating.filters import CompiledWindow
from ocs.rating.models import BandSet


@dataclass(frozen=True, slots=True)
class BandIndex:
    id: str
    bands: tuple[tuple[str, tuple[CompiledWindow, ...]], ...]
    default: str

    @property
    def band_ids(self) -> frozenset[str]:
        return frozenset(b for b, _ in self.bands) | {self.default}

    def band_at(self, weekday: int, minute: int) -> str:
        for band, windows in self.bands:
            for window in windows:
                if window.contains(weekday, minute):
                    return band
        return self.default

    @classmethod
    def build(cls, spec: BandSet) -> BandIndex:
        bands = tuple((b.id, tuple(CompiledWindow.of(w) for w in b.windows)) for b in spec.bands)
        return cls(spec.id, bands, spec.default)
