"""The tenants a Diameter peer may charge for (``tenants`` of a configured peer,
docs/operations.md "Diameter peers"): a CCR of such a peer for a SIM of another tenant is
answered DIAMETER_USER_UNKNOWN (5030) before charging, the answer to a SIM the OCS does not
know, so the peer learns nothing of other tenants. A peer without ``tenants`` (and every peer
admitted by ``accept_unknown_peers``) may charge any tenant's SIMs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from ocs.diameter.answers import Identity
from ocs.diameter.codec import Message
from ocs.diameter.constants import ResultCode
from ocs.diameter.dcca import CreditControlRequest, credit_control_answer
from ocs.diameter.node import PeerInfo

Handler = Callable[[Message, PeerInfo], Awaitable[Message]]
TenantOf = Callable[[str | None, str | None], str | None]
REFUSED_TENANT: Final = "tenant"  # the label of ocs_diameter_refused_total


def _no_count(_reason: str) -> None:
    return None


def peer_tenants(
    handler: Handler,
    tenant_of: TenantOf,
    identity: Identity,
    on_refusal: Callable[[str], None] = _no_count,
) -> Handler:
    """``handler`` behind the check of the peer's tenants (one dict lookup per CCR, only for
    peers that are restricted)."""

    async def guarded(request: Message, peer: PeerInfo) -> Message:
        if peer.tenants:
            view = CreditControlRequest(request)
            tenant = tenant_of(view.imsi, view.msisdn)
            if tenant is not None and tenant not in peer.tenants:
                on_refusal(REFUSED_TENANT)
                return credit_control_answer(request, identity, ResultCode.DIAMETER_USER_UNKNOWN)
        return await handler(request, peer)

    return guarded
