"""Who may speak Diameter to us: the configured peers, and the checks a connection passes
before and after its capabilities exchange. Sans I/O like :mod:`ocs.diameter.peer`.

A peer is known by its Origin-Host (a DiameterIdentity; compared case-insensitively, as
FQDNs are). It is admitted when its CER names a configured Origin-Host, with that peer's
realm, from one of its source networks and, over TLS with a client certificate, with a
certificate whose subject CN or a DNS subjectAltName is one of its TLS names (the
Origin-Host itself when none are configured). Anything else is answered
DIAMETER_UNKNOWN_PEER (3010) and closed (RFC 6733 5.3: a CER from an unknown peer MAY be
answered with an error and the connection closed).

``accept_unknown`` admits any Origin-Host (``ocs demo``; every admission is logged by the
transport). Even then our own Origin-Host is never accepted from a peer, and a client
certificate must name the Origin-Host its CER claims.

After the CER every request's Origin-Host must be the peer's (or one of the Origin-Hosts a
routing agent in front of us is configured to relay for): a request that claims to come from
another node is answered 3010 (RFC 6733 6.1: requests are accepted from known peers only).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# reasons a connection or request is refused: the label of the refusal metric
REFUSED_UNKNOWN_PEER: Final = "unknown_peer"
REFUSED_OWN_ORIGIN_HOST: Final = "own_origin_host"
REFUSED_REALM: Final = "realm"
REFUSED_ADDRESS: Final = "source_address"
REFUSED_TLS_IDENTITY: Final = "tls_identity"
REFUSED_APPLICATION: Final = "application"
REFUSED_FORGED_ORIGIN_HOST: Final = "forged_origin_host"
REFUSED_CER_TIMEOUT: Final = "cer_timeout"
REFUSED_CER_SIZE: Final = "cer_size"
REFUSED_MESSAGE_SIZE: Final = "message_size"
REFUSED_SLOW_MESSAGE: Final = "slow_message"
REFUSED_SLOW_READER: Final = "slow_reader"
REFUSED_MAX_CONNECTIONS: Final = "max_connections"
REFUSED_MAX_PER_ADDRESS: Final = "max_connections_per_address"
REFUSED_EVICTED: Final = "pre_cer_evicted"


@dataclass(frozen=True, slots=True)
class ConnectionOrigin:
    """What the transport knows of the other end before its first byte."""

    address: str | None = None  # the remote IP address
    tls: bool = False
    cert_names: frozenset[str] = frozenset()  # subject CN and DNS SANs, lower case

    def describe(self) -> str:
        where = self.address or "?"
        return f"{where} (TLS, certificate {sorted(self.cert_names)})" if self.tls else where


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """One configured peer. Empty ``networks`` admit any source address (then
    ``tls_names`` should pin the peer); empty ``applications`` allow every application we
    serve; empty ``tenants`` allow every tenant."""

    origin_host: str
    realm: str | None = None
    networks: tuple[IpNetwork, ...] = ()
    tls_names: frozenset[str] = frozenset()
    applications: frozenset[int] = frozenset()
    tenants: frozenset[str] = frozenset()
    relays_for: frozenset[str] = frozenset()  # Origin-Hosts of requests it relays (a DRA)
    configured: bool = True  # False: admitted by accept_unknown

    @classmethod
    def of(
        cls,
        origin_host: str,
        *,
        realm: str | None = None,
        addresses: Iterable[str] = (),
        tls_names: Iterable[str] = (),
        applications: Iterable[int] = (),
        tenants: Iterable[str] = (),
        relays_for: Iterable[str] = (),
    ) -> PeerSpec:
        """A spec from plain values; ``addresses`` are IP addresses or networks (CIDR)."""
        return cls(
            origin_host=origin_host,
            realm=realm,
            networks=tuple(ipaddress.ip_network(a, strict=False) for a in addresses),
            tls_names=frozenset(n.lower() for n in tls_names),
            applications=frozenset(applications),
            tenants=frozenset(tenants),
            relays_for=frozenset(h.lower() for h in relays_for),
        )

    def may_originate(self, origin_host: str) -> bool:
        """May a request with this Origin-Host come over this peer's connection?"""
        host = origin_host.lower()
        return host == self.origin_host.lower() or host in self.relays_for

    def allows_address(self, address: str | None) -> bool:
        if not self.networks:
            return True
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)


class PeerRefused(Exception):
    """A CER that is not admitted: ``reason`` (a metric label) and a line for the log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PeerTable:
    """The configured peers, by lower-case Origin-Host."""

    peers: Mapping[str, PeerSpec] = field(default_factory=dict)
    accept_unknown: bool = False

    @classmethod
    def of(cls, *specs: PeerSpec, accept_unknown: bool = False) -> PeerTable:
        return cls({s.origin_host.lower(): s for s in specs}, accept_unknown)

    def get(self, origin_host: str) -> PeerSpec | None:
        return self.peers.get(origin_host.lower())

    def admit(
        self, origin_host: str, origin_realm: str, origin: ConnectionOrigin, *, own_host: str
    ) -> PeerSpec:
        """The spec a CER from ``origin`` claiming ``origin_host`` is admitted under; raises
        :class:`PeerRefused` otherwise."""
        who = f"{origin_host!r} from {origin.describe()}"
        if origin_host.lower() == own_host.lower():
            raise PeerRefused(REFUSED_OWN_ORIGIN_HOST, f"CER {who} claims our own Origin-Host")
        spec = self.get(origin_host)
        if spec is None:
            if not self.accept_unknown:
                raise PeerRefused(REFUSED_UNKNOWN_PEER, f"CER {who}: not a configured peer")
            spec = PeerSpec(origin_host=origin_host, realm=origin_realm, configured=False)
        if spec.realm is not None and spec.realm.lower() != origin_realm.lower():
            raise PeerRefused(
                REFUSED_REALM, f"CER {who}: realm {origin_realm!r}, configured {spec.realm!r}"
            )
        if not spec.allows_address(origin.address):
            raise PeerRefused(REFUSED_ADDRESS, f"CER {who}: source address not allowed")
        wanted = spec.tls_names or frozenset({spec.origin_host.lower()})
        pinned_by_address = bool(spec.networks) or not spec.configured
        if (spec.tls_names or not pinned_by_address) and not origin.cert_names:
            raise PeerRefused(REFUSED_TLS_IDENTITY, f"CER {who}: no client certificate")
        if origin.cert_names and not origin.cert_names & wanted:
            raise PeerRefused(
                REFUSED_TLS_IDENTITY,
                f"CER {who}: certificate names none of {sorted(wanted)}",
            )
        return spec


def certificate_names(cert: Mapping[str, object] | None) -> frozenset[str]:
    """Subject CN and DNS subjectAltNames of a certificate as :meth:`ssl.SSLSocket.getpeercert`
    returns it, lower case."""
    if not cert:
        return frozenset()
    names: set[str] = set()
    subject = cert.get("subject", ())
    if isinstance(subject, tuple):
        for rdn in subject:
            for pair in rdn if isinstance(rdn, tuple) else ():
                if isinstance(pair, tuple) and len(pair) == 2 and pair[0] == "commonName":
                    names.add(str(pair[1]).lower())
    san = cert.get("subjectAltName", ())
    if isinstance(san, tuple):
        for pair in san:
            if isinstance(pair, tuple) and len(pair) == 2 and pair[0] == "DNS":
                names.add(str(pair[1]).lower())
    return frozenset(names)
