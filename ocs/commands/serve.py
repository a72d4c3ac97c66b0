"""The real-time side: ``ocs serve | demo | api``, ``ocs catalog check|apply``, ``ocs balance
show``, ``ocs lifecycle run``, ``ocs token create``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ocs.commands import (
    Subparsers,
    catalogue_at,
    command,
    folder,
    group,
    http_flags,
    redis_flags,
    run,
    server_flags,
)
from ocs.config import DEMO_NCHF_PORT, Settings, demo_catalog
from ocs.errors import CommandError, bind


def register(sub: Subparsers) -> None:
    serve = command(sub, "serve", _serve, help="run the Diameter charging server")
    demo = command(
        sub, "demo", _serve, help="load the demo catalogue and serve it on embedded defaults"
    )
    for p in (serve, demo):
        server_flags(p)
        p.add_argument(
            "--workers",
            type=int,
            help="worker processes sharing the ports (OCS_WORKERS, default 1; see docs/scaling.md)",
        )
        p.add_argument(
            "--peer",
            action="append",
            metavar="ORIGIN-HOST=ADDRESS",
            help="a Diameter peer allowed to connect from ADDRESS (IP or CIDR, comma separated); "
            "repeatable, added to the peers of the config file (docs/operations.md)",
        )
        p.add_argument(
            "--nrf-url",
            metavar="URL",
            help="register this CHF's Nchf service at the NRF with this apiRoot, e.g. "
            "http://nrf:8000 (OCS_NRF_URL; docs/nchf.md)",
        )
    serve.add_argument(
        "--accept-unknown-peers",
        action="store_true",
        default=None,
        help="admit any Diameter peer, logging each (OCS_ACCEPT_UNKNOWN_PEERS=1; on in ocs demo)",
    )
    demo.set_defaults(accept_unknown_peers=True)  # the demo serves whoever connects, and says so
    demo.add_argument(
        "--catalog",
        type=folder,
        default=demo_catalog(),
        help="catalogue folder to load (default: the demo catalogue shipped with ocs)",
    )

    catalog = group(sub, "catalog", help="validate or apply a product catalogue")
    check = command(catalog, "check", _catalog_check, help="validate a folder, apply nothing")
    check.add_argument("path", type=folder)
    apply = command(catalog, "apply", _catalog_apply, help="validate and load a catalogue")
    apply.add_argument("path", type=folder)
    redis_flags(apply)

    balance = group(sub, "balance", help="inspect balances")
    show = command(balance, "show", _balance_show, help="show the payer buckets of a subscriber")
    show.add_argument("msisdn")
    show.add_argument("--json", action="store_true", help="print JSON")
    redis_flags(show)

    life = group(sub, "lifecycle", help="pool periods, renewals (docs/lifecycle.md)")
    lrun = command(
        life, "run", _lifecycle_run, help="one renewal pass now (serve runs one a minute)"
    )
    lrun.add_argument("--now", metavar="ISO", help="the time of the pass (default: now)")
    lrun.add_argument("--json", action="store_true", help="print JSON")
    redis_flags(lrun)

    api = command(sub, "api", _api, help="run the HTTP API alone (ocs serve runs it too)")
    redis_flags(api)
    http_flags(api)

    ident = group(sub, "identity", help="who owns an IMSI/MSISDN/ICCID; move a SIM")
    owner = command(ident, "show", _identity, help="the tenant holding an identity")
    owner.add_argument("value")
    owner.add_argument("--kind", choices=["imsi", "msisdn", "iccid"], default="imsi")
    redis_flags(owner)
    move = command(ident, "transfer", _identity, help="move a SIM (with its MSISDN, ICCID)")
    move.add_argument("imsi")
    move.add_argument("--from", dest="source", required=True, help="the tenant holding it")
    move.add_argument("--to", dest="target", required=True, help="the tenant receiving it")
    redis_flags(move)

    token = group(sub, "token", help="API bearer tokens")
    create = command(token, "create", _token_create, help="create a token and print it")
    create.add_argument("--tenant", help="a tenant with a catalogue in force")
    create.add_argument("--scope", choices=["read", "top-up", "admin"])
    create.add_argument(
        "--operator", action="store_true", help="an operator token (no tenant): /v1/operator/"
    )
    redis_flags(create)
    revoke = command(token, "revoke", _token_revoke, help="revoke a token by its id")
    revoke.add_argument("id", help="the token id (16 hex digits, printed by ocs token create)")
    revoke.add_argument("--tenant")
    revoke.add_argument("--operator", action="store_true", help="an operator token")
    redis_flags(revoke)
    tlist = command(token, "list", _token_list, help="token ids, tenants, scopes (no secrets)")
    tlist.add_argument("--tenant", help="one tenant (default: every tenant)")
    tlist.add_argument("--json", action="store_true", help="print JSON")
    redis_flags(tlist)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    folder = args.catalog if args.command == "demo" else None
    if folder is not None and "webhook_private_targets" not in settings.model_fields_set:
        # the demo runs on one machine: its webhooks may call a receiver on localhost
        settings = settings.model_copy(update={"webhook_private_targets": True})
    catalog = None if folder is None else str(folder)
    if settings.nchf_port is None:  # not configured: the demo serves Nchf, serve does not
        port = DEMO_NCHF_PORT if args.command == "demo" else 0
        settings = settings.model_copy(update={"nchf_port": port})
    if settings.workers > 1:
        from ocs.supervisor import run_supervisor  # noqa: PLC0415

        with catalogue_at(folder):
            return run_supervisor(settings, demo_catalog=catalog)
    ports_free(settings)
    from ocs.wiring import run_server  # noqa: PLC0415

    with catalogue_at(folder):
        return run(run_server(settings, demo_catalog=catalog))


def ports_free(settings: Settings) -> None:
    """Fail fast on a taken port (:class:`~ocs.errors.PortInUse` naming it): each port the
    process will listen on is bound once and let go before anything starts. Each server
    binds its port when it starts, after the charging stack's imports, the embedded Redis,
    the demo catalogue and the services started before it, which a taken port then had to
    stop again (an ``ocs demo`` on a loaded machine did not exit within 90 s). A port
    taken in between is still named when its server binds it. (``--workers N``: the
    supervisor holds its ports itself.)"""
    for what, flag, port in (
        ("Diameter", "--port", settings.port),
        ("HTTP", "--http-port", settings.http_port),
        ("Nchf", "--nchf-port", settings.nchf_port or 0),
        ("metrics", "--metrics-port", settings.metrics_port),
    ):
        if port:
            bind(what, flag, settings.host, port).close()


def _catalog_check(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.rating.loader import main_check  # noqa: PLC0415

    return main_check(str(args.path))


def _catalog_apply(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.charging import apply_catalog  # noqa: PLC0415

    with catalogue_at(args.path):
        summary = run(apply_catalog(args.path, settings))
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _balance_show(args: argparse.Namespace, settings: Settings) -> int:
    balance = run(_find_balance(settings, args.msisdn))
    if args.json:
        print(json.dumps(balance, indent=2, default=str))
        return 0
    for payer in balance.get("payers", []):
        print(f"{payer.get('payer', payer.get('id', '?'))}:")
        life = payer.get("lifecycle")
        if life:  # docs/lifecycle.md
            tier = f" tier={life['tier']} ({life['tier_size']})" if "tier" in life else ""
            held = " SUSPENDED" if life.get("suspended") else ""
            print(f"  period {life['period']} top-offs={life['top_offs']}{tier}{held}")
        for bucket in payer.get("buckets", []):
            print(
                "  {id}: {unit} available={available} reserved={reserved} used={used}".format(
                    id=bucket.get("id", "?"),
                    unit=bucket.get("unit", "?"),
                    available=bucket.get("available"),
                    reserved=bucket.get("reserved"),
                    used=bucket.get("used"),
                )
            )
    return 0


async def _find_balance(settings: Settings, msisdn: str) -> dict[str, Any]:
    """The subscriber's payers and buckets, or a :class:`CommandError` saying it is unknown
    (and, when the store holds no catalogue at all, where to look)."""
    from ocs.balance.keys import CATALOG  # noqa: PLC0415
    from ocs.balance.store import BalanceStore  # noqa: PLC0415
    from ocs.provisioning.keys import IN_FORCE  # noqa: PLC0415
    from ocs.provisioning.payers import balance_of  # noqa: PLC0415
    from ocs.redis_client import open_redis  # noqa: PLC0415

    handle = await open_redis(settings, timeout=10.0)
    try:
        found = await balance_of(BalanceStore(handle.client), msisdn)
        empty = found is None and not await handle.client.exists(CATALOG, IN_FORCE)
    finally:
        await handle.close()
    if found is not None:
        return found
    hint = ""
    if empty:
        where = settings.redis_url or f"the embedded Redis in {settings.data_dir}"
        hint = (
            f"; {where} holds no catalogue: start `ocs demo` or run `ocs catalog apply FOLDER`"
            " with the same --data-dir / --redis-url"
        )
    raise CommandError(f"no subscriber with MSISDN {msisdn}{hint}")


def _lifecycle_run(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.lifecycle.cli import main_lifecycle_run  # noqa: PLC0415

    return run(main_lifecycle_run(settings, args.now, as_json=args.json))


def _api(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.api.cli import main_api  # noqa: PLC0415

    return main_api(settings)


def _token_create(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.api.cli import main_token_create  # noqa: PLC0415

    return main_token_create(settings, args.tenant, args.scope, operator=args.operator)


def _identity(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.provisioning.cli import main_identity  # noqa: PLC0415

    args.identity_command = args.command.rpartition(" ")[2]  # show | transfer
    return run(main_identity(settings, args))


def _token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.api.cli import main_token_revoke  # noqa: PLC0415

    return main_token_revoke(settings, args.id, args.tenant, operator=args.operator)


def _token_list(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.api.cli import main_token_list  # noqa: PLC0415

    return main_token_list(settings, args.tenant, as_json=args.json)
