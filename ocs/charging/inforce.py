"""The catalogues this node charges by: one compiled catalogue per tenant, and the index from
a SIM's IMSI (else MSISDN) to its tenant, so one ``ocs serve`` charges the SIMs of every
tenant. A CCR costs two dict lookups here (identity -> tenant -> catalogue).

Each tenant is swapped alone (:meth:`InForce.swap`), and no step of a swap is long, whatever
the tenant's size: the new catalogue is compiled off the event loop; then its new identities
enter the index in chunks of :data:`CHUNK` (each pointing at the tenant, whose catalogue in
force still answers 5030 for them), the catalogue is swapped in by one assignment, and the
identities it no longer holds leave the index in chunks. Every SIM of the tenant is charged
by the old catalogue up to that assignment and by the new one from it (the swap is atomic
per tenant), and the CCRs of every tenant are served between the chunks. An identity
belongs to one tenant (:mod:`ocs.provisioning.identity`), so the index has one answer per
IMSI; a re-apply of the same SIMs changes no index entry at all. ``fallback`` answers every
SIM no tenant holds: the placeholder catalogue of a node before provisioning (every SIM
unknown, 5030), or the catalogue of the legacy single pointer ``ocs:catalog`` of a tenant
not in force per tenant (tests, tools)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Final

from ocs.rating.catalogue import Catalogue

CHUNK: Final = 2_000  # index entries a step of a swap writes before the loop runs again


def _chunks(keys: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(keys)
    while chunk := list(islice(it, size)):
        yield chunk


class InForce:
    __slots__ = ("_by_imsi", "_by_msisdn", "_tenants", "fallback", "stamps")

    def __init__(self, fallback: Catalogue) -> None:
        self.fallback = fallback
        self._tenants: dict[str, Catalogue] = {}
        self._by_imsi: dict[str, str] = {}  # IMSI -> tenant
        self._by_msisdn: dict[str, str] = {}  # MSISDN -> tenant
        self.stamps: dict[str, str] = {}  # tenant -> the in-force stamp its catalogue is of

    def _tenant(self, imsi: str | None, msisdn: str | None) -> Catalogue | None:
        tenant = self._by_imsi.get(imsi) if imsi else None
        if tenant is None and msisdn:
            tenant = self._by_msisdn.get(msisdn)
        return None if tenant is None else self._tenants.get(tenant)

    def of(self, imsi: str | None, msisdn: str | None) -> Catalogue:
        """The catalogue of the tenant holding this IMSI (else MSISDN); the fallback if none."""
        found = self._tenant(imsi, msisdn)
        return self.fallback if found is None else found

    def tenant_of(self, imsi: str | None, msisdn: str | None) -> str | None:
        found = self._tenant(imsi, msisdn)
        if found is not None:
            return found.tenant.id
        fallback = self.fallback
        if (imsi and imsi in fallback.sims_by_imsi) or (
            msisdn and msisdn in fallback.sims_by_msisdn
        ):
            return fallback.tenant.id
        return None

    @property
    def current(self) -> Catalogue:
        """One catalogue in force (the first tenant's, else the fallback): for a node serving
        one tenant, and for the readiness check (the placeholder means none)."""
        return next(iter(self._tenants.values()), self.fallback)

    def tenants(self) -> dict[str, Catalogue]:
        return dict(self._tenants)

    def catalogues(self) -> list[Catalogue]:
        """Every catalogue charged by: each tenant's, and the fallback's if it holds SIMs."""
        out = list(self._tenants.values())
        if self.fallback.sims_by_imsi and self.fallback.tenant.id not in self._tenants:
            out.append(self.fallback)
        return out

    def put(self, tenant: str, catalogue: Catalogue | None, stamp: str = "") -> None:
        """Swap ``tenant``'s catalogue at once (tests, small tenants); :meth:`swap` does the
        same in bounded steps."""
        steps = self._steps(tenant, catalogue, stamp, chunk=1 << 62)
        for _ in steps:
            pass

    async def swap(
        self, tenant: str, catalogue: Catalogue | None, stamp: str = "", *, chunk: int = CHUNK
    ) -> None:
        """Swap ``tenant``'s catalogue (None: the tenant is gone), letting the event loop run
        after every ``chunk`` index entries (see the module doc). One swap at a time (the
        runtime's reload lock)."""
        for _ in self._steps(tenant, catalogue, stamp, chunk=chunk):
            await asyncio.sleep(0)

    def _steps(
        self, tenant: str, catalogue: Catalogue | None, stamp: str, *, chunk: int
    ) -> Iterator[None]:
        old = self._tenants.get(tenant)
        if catalogue is not None:
            for index, keys in (
                (self._by_imsi, catalogue.sims_by_imsi),
                (self._by_msisdn, catalogue.sims_by_msisdn),
            ):
                for part in _chunks(keys, chunk):
                    for key in part:
                        if index.get(key) != tenant:
                            index[key] = tenant
                    yield
            self._tenants[tenant] = catalogue  # the swap: every SIM of the tenant at once
            self.stamps[tenant] = stamp
        else:
            self._tenants.pop(tenant, None)
            self.stamps.pop(tenant, None)
        if old is None:
            return
        for index, keys, kept in (
            (self._by_imsi, old.sims_by_imsi, catalogue.sims_by_imsi if catalogue else {}),
            (self._by_msisdn, old.sims_by_msisdn, catalogue.sims_by_msisdn if catalogue else {}),
        ):
            for part in _chunks(keys, chunk):
                for key in part:
                    if key not in kept and index.get(key) == tenant:
                        del index[key]
                yield
