"""Zone lookup: MCC-MNC first, then country, then the zone set's default. Two dict lookups."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ocs.rating.models import ZoneSet


@dataclass(frozen=True, slots=True)
class ZoneIndex:
    id: str
    by_plmn: Mapping[str, str]
    by_country: Mapping[str, str]
    default: str | None
    zone_ids: frozenset[str]
    names: Mapping[str, str] = field(default_factory=dict)  # zone id -> name for people

    def zone_for(self, plmn: str, country: str | None) -> str | None:
        zone = self.by_plmn.get(plmn)
        if zone is not None:
            return zone
        if country is not None:
            zone = self.by_country.get(country)
            if zone is not None:
                return zone
        return self.default

    @classmethod
    def build(cls, spec: ZoneSet) -> tuple[ZoneIndex, list[tuple[str, str]]]:
        """Index a zone set; also return (path, reason) problems such as a network listed in
        two zones, relative to the zone set."""
        problems: list[tuple[str, str]] = []
        by_plmn: dict[str, str] = {}
        by_country: dict[str, str] = {}
        ids: set[str] = set()
        names = {zone.id: zone.name for zone in spec.zones if zone.name}
        for i, zone in enumerate(spec.zones):
            if zone.id in ids:
                problems.append((f"zones[{i}].id", f"duplicate zone id {zone.id!r}"))
            ids.add(zone.id)
            for j, plmn in enumerate(zone.networks):
                other = by_plmn.setdefault(plmn, zone.id)
                if other != zone.id:
                    where = f"zones[{i}].networks[{j}]"
                    problems.append((where, f"network {plmn} is already in zone {other!r}"))
            for j, country in enumerate(zone.countries):
                other = by_country.setdefault(country, zone.id)
                if other != zone.id:
                    where = f"zones[{i}].countries[{j}]"
                    problems.append((where, f"country {country} is already in zone {other!r}"))
        if spec.default is not None and spec.default not in ids:
            problems.append(("default", f"default zone {spec.default!r} is not in this set"))
        index = cls(spec.id, by_plmn, by_country, spec.default, frozenset(ids), names)
        return index, problems
