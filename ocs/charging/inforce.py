"""The catalogues this node charges by: one compiled catalogue per tenant, and the index from
a SIM's IMSI (else MSISDN) to its tenant's catalogue, so one ``ocs serve`` charges the SIMs
of every tenant. A CCR costs one dict lookup here.

Each tenant is swapped alone (:meth:`InForce.put`): the new catalogue is compiled off the
event loop, then its index entries replace the old ones; CCRs of other tenants never wait
for it. An identity belongs to one tenant (:mod:`ocs.provisioning.identity`), so the index
has one answer per IMSI. ``fallback`` answers every SIM no tenant holds: the placeholder
catalogue of a node before provisioning (every SIM unknown, 5030), or the catalogue of the
legacy single pointer ``ocs:catalog`` of a tenant not in force per tenant (tests, tools)."""

from __future__ import annotations

from ocs.rating.catalogue import Catalogue


class InForce:
    __slots__ = ("_by_imsi", "_by_msisdn", "_tenants", "fallback", "stamps")

    def __init__(self, fallback: Catalogue) -> None:
        self.fallback = fallback
        self._tenants: dict[str, Catalogue] = {}
        self._by_imsi: dict[str, Catalogue] = {}
        self._by_msisdn: dict[str, Catalogue] = {}
        self.stamps: dict[str, str] = {}  # tenant -> the in-force stamp its catalogue is of

    def of(self, imsi: str | None, msisdn: str | None) -> Catalogue:
        """The catalogue of the tenant holding this IMSI (else MSISDN); the fallback if none."""
        found = self._by_imsi.get(imsi) if imsi else None
        if found is None and msisdn:
            found = self._by_msisdn.get(msisdn)
        return self.fallback if found is None else found

    def tenant_of(self, imsi: str | None, msisdn: str | None) -> str | None:
        found = self.of(imsi, msisdn)
        if found is self.fallback and not (
            (imsi and imsi in found.sims_by_imsi) or (msisdn and msisdn in found.sims_by_msisdn)
        ):
            return None
        return found.tenant.id

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
        """Swap ``tenant``'s catalogue (None: the tenant is gone). Its SIMs leave the index
        and its new SIMs enter it; other tenants' entries are not touched."""
        old = self._tenants.pop(tenant, None)
        if old is not None:
            for imsi in old.sims_by_imsi:
                if self._by_imsi.get(imsi) is old:
                    del self._by_imsi[imsi]
            for msisdn in old.sims_by_msisdn:
                if self._by_msisdn.get(msisdn) is old:
                    del self._by_msisdn[msisdn]
        if catalogue is None:
            self.stamps.pop(tenant, None)
            return
        self._tenants[tenant] = catalogue
        self.stamps[tenant] = stamp
        self._by_imsi.update(dict.fromkeys(catalogue.sims_by_imsi, catalogue))
        self._by_msisdn.update(dict.fromkeys(catalogue.sims_by_msisdn, catalogue))
