"""The `ocs` command line: `ocs serve | demo | catalog | balance | ...`.

Errors are reported as one line naming what is wrong (file, field, reason) with a non-zero
exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import date
from typing import Any

from .config import ConfigError, Settings, parse_peer_flag
from .observability.logs import configure_logging


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (also OCS_CONFIG)")
    p.add_argument("--host", help="listen address (OCS_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="Diameter port (OCS_PORT, default 3868)")
    p.add_argument("--origin-host", help="our Origin-Host (OCS_ORIGIN_HOST, default ocs.local)")
    p.add_argument("--origin-realm", help="our Origin-Realm (OCS_ORIGIN_REALM, default local)")
    p.add_argument("--redis-url", help="Redis URL (OCS_REDIS_URL); embedded Redis if unset")
    p.add_argument("--data-dir", help="data directory for embedded services (OCS_DATA_DIR)")
    p.add_argument(
        "--http-port", type=int, help="HTTP API port (OCS_HTTP_PORT, default 8080; 0 disables)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics port (OCS_METRICS_PORT, default 9464; 0 disables)",
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (OCS_LOG_LEVEL)")
    p.add_argument("--log-format", choices=["text", "json"], help="OCS_LOG_FORMAT, default text")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocs", description="Online Charging System for IoT connectivity (Diameter Gy/Ro)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the Diameter charging server")
    _server_flags(serve)
    demo = sub.add_parser("demo", help="load policies/demo and serve it on embedded defaults")
    _server_flags(demo)
    for p in (serve, demo):
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
            "--accept-unknown-peers",
            action="store_true",
            default=None,
            help="admit any Diameter peer, logging each (OCS_ACCEPT_UNKNOWN_PEERS=1; "
            "on in ocs demo)",
        )
    demo.add_argument("--catalog", default="policies/demo", help="catalogue folder to load")

    catalog = sub.add_parser("catalog", help="validate or apply a product catalogue")
    csub = catalog.add_subparsers(dest="catalog_command", metavar="ACTION")
    check = csub.add_parser("check", help="validate a catalogue folder without applying it")
    check.add_argument("path")
    apply = csub.add_parser("apply", help="validate and load a catalogue into the balance store")
    apply.add_argument("path")
    _server_flags(apply)

    balance = sub.add_parser("balance", help="inspect balances")
    bsub = balance.add_subparsers(dest="balance_command", metavar="ACTION")
    show = bsub.add_parser("show", help="show the payer buckets of a subscriber")
    show.add_argument("msisdn")
    show.add_argument("--json", action="store_true", help="print JSON")
    _server_flags(show)

    life = sub.add_parser("lifecycle", help="pool periods, renewals (docs/lifecycle.md)")
    lsub = life.add_subparsers(dest="lifecycle_command", metavar="ACTION")
    lrun = lsub.add_parser("run", help="one renewal pass now (ocs serve runs one a minute)")
    lrun.add_argument("--now", metavar="ISO", help="the time of the pass (default: now)")
    lrun.add_argument("--json", action="store_true", help="print JSON")
    _server_flags(lrun)
    _offline_parsers(sub)

    api = sub.add_parser("api", help="run the HTTP API alone (ocs serve runs it too)")
    _server_flags(api)
    token = sub.add_parser("token", help="API bearer tokens")
    tsub = token.add_subparsers(dest="token_command", metavar="ACTION")
    create = tsub.add_parser("create", help="create a token and print it (stored hashed)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--scope", required=True, choices=["read", "top-up", "admin"])
    _store_flags(create)
    revoke = tsub.add_parser("revoke", help="revoke a token by its id (ocs token list)")
    revoke.add_argument("id", help="the token id (16 hex digits, printed by ocs token create)")
    revoke.add_argument("--tenant", required=True)
    _store_flags(revoke)
    tlist = tsub.add_parser("list", help="token ids, tenants, scopes, creation times (no secrets)")
    tlist.add_argument("--tenant", help="one tenant (default: every tenant)")
    tlist.add_argument("--json", action="store_true", help="print JSON")
    _store_flags(tlist)
    _import_parsers(sub)
    from .provisioning.cli import add_parsers as identity_parsers  # noqa: PLC0415

    identity_parsers(sub, _store_flags)
    from .audit.cli import add_parsers as audit_parsers  # noqa: PLC0415

    audit_parsers(sub, _store_flags)
    return parser


def _import_parsers(sub: Any) -> None:
    imp = sub.add_parser("import", help="import accounts or subscriptions from a CRM export")
    isub = imp.add_subparsers(dest="import_kind", metavar="KIND")
    for kind in ("accounts", "subscriptions"):
        p = isub.add_parser(kind, help=f"create or update {kind} (CSV or JSON, docs/import.md)")
        p.add_argument("file")
        p.add_argument("--tenant", help="tenant (default: the one in force)")
        p.add_argument("--format", choices=["csv", "json"], help="default: from the file name")
        p.add_argument("--dry-run", action="store_true", help="validate and report, write nothing")
        p.add_argument("--report", help="write the report (JSON) to this file")
        p.add_argument("--batch", type=int, help="rows per state write (default 100,000)")
        _store_flags(p)


def _offline_parsers(sub: Any) -> None:
    db = sub.add_parser("db", help="PostgreSQL schema")
    dsub = db.add_subparsers(dest="db_command", metavar="ACTION")
    _store_flags(dsub.add_parser("migrate", help="apply pending SQL migrations"))

    cdr = sub.add_parser("cdr", help="usage records: drain, import, reconcile")
    csub = cdr.add_subparsers(dest="cdr_command", metavar="ACTION")
    drain = csub.add_parser("drain", help="move rated records from Redis Streams to PostgreSQL")
    drain.add_argument("--batch", type=int, default=20_000)
    drain.add_argument("--claim-idle-ms", type=int, default=60_000)
    drain.add_argument(
        "--follow",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep draining every SECONDS until SIGTERM, with /metrics, /healthz and /readyz "
        "on --metrics-port (default: drain once and exit)",
    )
    drain.add_argument("--metrics-port", type=int, help="OCS_METRICS_PORT (with --follow)")
    _store_flags(drain)
    imp = csub.add_parser("import", help="import network CDRs (CSV, see docs/offline.md)")
    imp.add_argument("file")
    imp.add_argument("--catalog", help="catalogue folder (default policies/demo)")
    _store_flags(imp)
    rec = csub.add_parser("reconcile", help="match network CDRs to online records")
    rec.add_argument("--catalog")
    rec.add_argument("--tolerance-percent", type=float, default=1.0)
    rec.add_argument("--tolerance-units", type=int, default=0)
    _store_flags(rec)

    run = sub.add_parser("billrun", help="bill a cycle (or one account) and issue invoices")
    run.add_argument("--cycle", type=int, help="bill day of the cycle")
    run.add_argument("--account", help="single-invoice run for one account")
    run.add_argument("--preview", action="store_true", help="compute without issuing")
    run.add_argument("--date", type=date.fromisoformat, help="run date (YYYY-MM-DD)")
    run.add_argument("--catalog")
    run.add_argument("--terms", help="billing terms YAML (taxes, pool fees)")
    run.add_argument("--out-dir", help="where rendered invoices are written")
    run.add_argument(
        "--einvoice",
        action="store_true",
        help="also write each invoice as UBL, CII and Factur-X PDF (EN 16931)",
    )
    run.add_argument(
        "--metrics-port", type=int, default=0, help="serve progress on /metrics there (0: no)"
    )
    _store_flags(run)

    invoice = sub.add_parser("invoice", help="invoice adjustments")
    isub = invoice.add_subparsers(dest="invoice_command", metavar="ACTION")
    adj = isub.add_parser("adjust", help="issue a credit or debit note against an invoice")
    adj.add_argument("--number", type=int, required=True, help="invoice number")
    adj.add_argument("--kind", choices=["credit", "debit"], required=True)
    adj.add_argument("--amount", type=int, required=True, help="minor units, e.g. cents")
    adj.add_argument("--reason", required=True)
    adj.add_argument("--catalog")
    adj.add_argument("--out-dir", help="where the note's documents are written")
    _store_flags(adj)
    iexp = isub.add_parser("export", help="one document as HTML, PDF or EN 16931 e-invoice")
    iexp.add_argument("--number", type=int, required=True, help="invoice or note number")
    iexp.add_argument("--format", choices=["html", "pdf", "ubl", "cii", "facturx"], required=True)
    iexp.add_argument("--out", help="output file (default <tenant>-<number><suffix>)")
    iexp.add_argument("--catalog")
    _store_flags(iexp)

    export = sub.add_parser("export", help="accounting export (journal lines)")
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--out", help="output file (default stdout)")
    export.add_argument("--catalog")
    _store_flags(export)

    report = sub.add_parser("report", help="usage and revenue reports (see docs/offline.md)")
    report.add_argument("kind", choices=["usage", "revenue"])
    report.add_argument("--by", default="period,account", help="comma separated dimensions")
    report.add_argument("--from", dest="start", type=date.fromisoformat, help="YYYY-MM-DD")
    report.add_argument("--to", dest="end", type=date.fromisoformat, help="YYYY-MM-DD, excluded")
    report.add_argument("--period", choices=["day", "month"], default="month")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.add_argument("--out", help="output file for csv/json (default stdout)")
    report.add_argument("--catalog", help="catalogue folder naming the tenant")
    _store_flags(report)


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (also OCS_CONFIG)")
    p.add_argument("--redis-url", help="Redis URL (OCS_REDIS_URL); embedded Redis if unset")
    p.add_argument("--database-url", help="PostgreSQL URL (OCS_DATABASE_URL); embedded if unset")
    p.add_argument("--data-dir", help="data directory for embedded services (OCS_DATA_DIR)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (OCS_LOG_LEVEL)")
    p.add_argument("--log-format", choices=["text", "json"], help="OCS_LOG_FORMAT, default text")


def _offline(args: argparse.Namespace, settings: Settings) -> int | None:
    """Run an offline (PostgreSQL) command; None when ``args`` is not one."""
    from .offline import cli as off  # noqa: PLC0415

    command = args.command
    if command == "db" and args.db_command == "migrate":
        return off.main_db_migrate(settings)
    if command == "cdr" and args.cdr_command == "drain":
        return off.main_drain(
            settings, batch=args.batch, claim_idle_ms=args.claim_idle_ms, follow=args.follow
        )
    if command == "cdr" and args.cdr_command == "import":
        return off.main_import(settings, args.file, catalog=args.catalog)
    if command == "cdr" and args.cdr_command == "reconcile":
        return off.main_reconcile(
            settings,
            catalog=args.catalog,
            tolerance_percent=args.tolerance_percent,
            tolerance_units=args.tolerance_units,
        )
    if command == "billrun":
        return off.main_billrun(
            settings,
            cycle=args.cycle,
            account=args.account,
            preview=args.preview,
            on=args.date,
            catalog=args.catalog,
            terms=args.terms,
            out_dir=args.out_dir,
            metrics_port=args.metrics_port,
            einvoice=args.einvoice,
        )
    if command == "invoice" and args.invoice_command == "adjust":
        return off.main_invoice_adjust(
            settings,
            number=args.number,
            kind=args.kind,
            amount=args.amount,
            reason=args.reason,
            catalog=args.catalog,
            out_dir=args.out_dir,
        )
    if command == "invoice" and args.invoice_command == "export":
        return off.main_invoice_export(
            settings, number=args.number, fmt=args.format, out=args.out, catalog=args.catalog
        )
    if command == "export":
        return off.main_export(settings, fmt=args.format, out=args.out, catalog=args.catalog)
    if command == "report":
        return off.main_report(
            settings,
            args.kind,
            by=args.by,
            start=args.start,
            end=args.end,
            granularity=args.period,
            fmt=args.format,
            out=args.out,
            catalog=args.catalog,
        )
    return None


def load_settings(args: argparse.Namespace) -> Settings:
    accept_unknown = getattr(args, "accept_unknown_peers", None)
    if args.command == "demo":
        accept_unknown = True  # the demo serves whoever connects, and says so
    return Settings.load(
        getattr(args, "config", None),
        add_peers=[parse_peer_flag(p) for p in getattr(args, "peer", None) or ()],
        accept_unknown_peers=accept_unknown,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        origin_host=getattr(args, "origin_host", None),
        origin_realm=getattr(args, "origin_realm", None),
        redis_url=getattr(args, "redis_url", None),
        database_url=getattr(args, "database_url", None),
        data_dir=getattr(args, "data_dir", None),
        http_port=getattr(args, "http_port", None),
        metrics_port=getattr(args, "metrics_port", None),
        log_level=getattr(args, "log_level", None),
        log_format=getattr(args, "log_format", None),
        workers=getattr(args, "workers", None),
    )


def _run(coro: Any) -> Any:
    try:
        import uvloop  # noqa: PLC0415

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def _fail(message: str) -> int:
    print(f"ocs: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "catalog" and args.catalog_command == "check":
            from .rating.loader import main_check  # noqa: PLC0415

            return main_check(args.path)
        settings = load_settings(args)
        configure_logging(settings.log_level, settings.log_format)
        if args.command in ("serve", "demo"):
            from .app import run_server  # noqa: PLC0415

            catalog = args.catalog if args.command == "demo" else None
            if settings.workers > 1:
                from .workers import run_supervisor  # noqa: PLC0415

                return run_supervisor(settings, demo_catalog=catalog)
            return int(_run(run_server(settings, demo_catalog=catalog)))
        if args.command == "catalog" and args.catalog_command == "apply":
            from .app import apply_catalog_cli  # noqa: PLC0415

            return int(_run(apply_catalog_cli(settings, args.path)))
        if args.command == "api":
            from .api import main_api  # noqa: PLC0415

            return main_api(settings)
        if args.command == "token" and args.token_command == "create":
            from .api import main_token_create  # noqa: PLC0415

            return main_token_create(settings, args.tenant, args.scope)
        if args.command == "token" and args.token_command == "revoke":
            from .api.cli import main_token_revoke  # noqa: PLC0415

            return main_token_revoke(settings, args.id, args.tenant)
        if args.command == "token" and args.token_command == "list":
            from .api.cli import main_token_list  # noqa: PLC0415

            return main_token_list(settings, args.tenant, as_json=args.json)
        if args.command == "import" and args.import_kind is not None:
            from .crm.cli import main_import  # noqa: PLC0415

            return main_import(
                settings,
                args.import_kind,
                args.file,
                tenant=args.tenant,
                fmt=args.format,
                dry_run=args.dry_run,
                report_path=args.report,
                batch=args.batch,
            )
        if args.command in ("db", "cdr", "billrun", "invoice", "export"):
            code = _offline(args, settings)
            if code is not None:
                return code
        if args.command == "lifecycle" and args.lifecycle_command == "run":
            from .lifecycle.cli import main_lifecycle_run  # noqa: PLC0415

            return int(_run(main_lifecycle_run(settings, args.now, as_json=args.json)))
        if args.command == "audit":
            from .audit.cli import main_audit  # noqa: PLC0415

            return int(_run(main_audit(settings, args)))
        if args.command == "identity" and args.identity_command is not None:
            from .provisioning.cli import main_identity  # noqa: PLC0415

            return int(_run(main_identity(settings, args)))
        if args.command == "balance" and args.balance_command == "show":
            from .app import show_balance_cli  # noqa: PLC0415

            return int(_run(show_balance_cli(settings, args.msisdn, as_json=args.json)))
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
