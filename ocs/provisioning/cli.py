"""``ocs identity show VALUE`` and ``ocs identity transfer IMSI --from A --to B``: who owns
a SIM identity, and the explicit move of a SIM between tenants (operator commands; see
docs/provisioning.md)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ocs.config import Settings

KINDS = ("imsi", "msisdn", "iccid")  # ocs.provisioning.identity.KINDS (imported lazily)


def add_parsers(sub: Any, store_flags: Any) -> None:
    ident = sub.add_parser("identity", help="who owns an IMSI/MSISDN/ICCID; move a SIM")
    isub = ident.add_subparsers(dest="identity_command", metavar="ACTION")
    show = isub.add_parser("show", help="the tenant holding an identity")
    show.add_argument("value")
    show.add_argument("--kind", choices=KINDS, default="imsi")
    store_flags(show)
    move = isub.add_parser("transfer", help="move a SIM (and its MSISDN, ICCID) to a tenant")
    move.add_argument("imsi")
    move.add_argument("--from", dest="source", required=True, help="the tenant holding it")
    move.add_argument("--to", dest="target", required=True, help="the tenant receiving it")
    store_flags(move)


async def main_identity(settings: Settings, args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError  # noqa: PLC0415

    from ocs.balance import BalanceStore  # noqa: PLC0415
    from ocs.provisioning.errors import Refused  # noqa: PLC0415
    from ocs.provisioning.identity import IdentityTaken, owner_of  # noqa: PLC0415
    from ocs.provisioning.transfer import transfer_sim  # noqa: PLC0415
    from ocs.store import open_redis  # noqa: PLC0415

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
    except (Refused, IdentityTaken) as exc:
        print(f"ocs: error: {getattr(exc, 'detail', None) or exc}", file=sys.stderr)
        return 1
    except (RedisError, OSError) as exc:
        print(f"ocs: error: Redis: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
