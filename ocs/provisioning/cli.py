"""``ocs identity show VALUE`` and ``ocs identity transfer IMSI --from A --to B``: who owns
a SIM identity, and the explicit move of a SIM between tenants (operator commands; see
docs/provisioning.md). The parsers are in :mod:`ocs.commands.serve`; errors are raised
(``ocs.cli`` reports them)."""

from __future__ import annotations

import argparse
import json

from ocs.config import Settings
from ocs.errors import CommandError

KINDS = ("imsi", "msisdn", "iccid")  # ocs.provisioning.identity.KINDS (imported lazily)


async def main_identity(settings: Settings, args: argparse.Namespace) -> int:
    from ocs.balance import BalanceStore  # noqa: PLC0415
    from ocs.provisioning.errors import Refused  # noqa: PLC0415
    from ocs.provisioning.identity import IdentityTaken, owner_of  # noqa: PLC0415
    from ocs.provisioning.transfer import transfer_sim  # noqa: PLC0415
    from ocs.redis_client import open_redis  # noqa: PLC0415

    try:
        handle = await open_redis(settings, timeout=10.0)
        try:
            if args.identity_command == "show":
                owner = await owner_of(handle.client, args.kind, args.value)
                print(json.dumps({"kind": args.kind, "value": args.value, "tenant": owner}))
                return 0 if owner is not None else 1
            summary = await transfer_sim(
                BalanceStore(handle.client), settings.data_dir, args.imsi, args.source, args.target
            )
        finally:
            await handle.close()
    except (Refused, IdentityTaken) as exc:  # the rest: ocs.cli reports it
        raise CommandError(str(getattr(exc, "detail", None) or exc)) from None
    print(json.dumps(summary, indent=2))
    return 0
