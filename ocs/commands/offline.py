"""The offline side (PostgreSQL): ``ocs db migrate``, ``ocs cdr drain|import|reconcile``,
``ocs billrun``, ``ocs invoice adjust``, ``ocs export``, ``ocs report``, ``ocs usage export``;
and the CRM import (``ocs import accounts|subscriptions``). The handlers are in
``ocs.offline.cli`` (``ocs.offline.usage_cli``) and ``ocs.crm.cli``, imported when the
command runs."""

from __future__ import annotations

import argparse

from ocs.commands import (
    Subparsers,
    command,
    database_flags,
    folder,
    group,
    iso_date,
    redis_flags,
    run,
    store_flags,
)
from ocs.config import Settings

CATALOG_HELP = "catalogue folder naming the tenant (default: the demo catalogue)"


def register(sub: Subparsers) -> None:
    db = group(sub, "db", help="PostgreSQL schema")
    database_flags(command(db, "migrate", _migrate, help="apply pending SQL migrations"))

    cdr = group(sub, "cdr", help="usage records: drain, import, reconcile")
    drain = command(cdr, "drain", _drain, help="move rated records from Redis to PostgreSQL")
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
    store_flags(drain)
    imp = command(cdr, "import", _cdr_import, help="import network CDRs (docs/offline.md)")
    imp.add_argument("file")
    imp.add_argument("--catalog", type=folder, help=CATALOG_HELP)
    database_flags(imp)
    rec = command(cdr, "reconcile", _reconcile, help="match network CDRs to online records")
    rec.add_argument("--catalog", type=folder, help=CATALOG_HELP)
    rec.add_argument("--tolerance-percent", type=float, default=1.0)
    rec.add_argument("--tolerance-units", type=int, default=0)
    database_flags(rec)

    run = command(sub, "billrun", _billrun, help="bill a cycle (or one account), issue invoices")
    run.add_argument("--cycle", type=int, help="bill day of the cycle")
    run.add_argument("--account", help="single-invoice run for one account")
    run.add_argument("--preview", action="store_true", help="compute without issuing")
    run.add_argument(
        "--date", type=iso_date, help="run date, YYYY-MM-DD (default: today in the tenant's zone)"
    )
    run.add_argument(
        "--force", action="store_true", help="allow a --date after today (issues early)"
    )
    run.add_argument("--catalog", type=folder, help=CATALOG_HELP)
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
    database_flags(run)

    invoice = group(sub, "invoice", help="credit and debit notes; one document in any form")
    adj = command(invoice, "adjust", _adjust, help="issue a credit or debit note")
    adj.add_argument("--number", required=True, help="the invoice's number, as printed")
    adj.add_argument("--kind", choices=["credit", "debit"], required=True)
    adj.add_argument("--amount", type=int, required=True, help="minor units, e.g. cents")
    adj.add_argument("--reason", required=True)
    adj.add_argument("--catalog", type=folder, help=CATALOG_HELP)
    adj.add_argument("--out-dir", help="where the note's documents are written")
    database_flags(adj)
    iexp = command(invoice, "export", _invoice_export, help="one document as HTML, PDF, e-invoice")
    iexp.add_argument(
        "--number", required=True, help="the document's number as printed: 12, CN-3, DN-1"
    )
    iexp.add_argument("--format", choices=["html", "pdf", "ubl", "cii", "facturx"], required=True)
    iexp.add_argument("--out", help="output file (default <tenant>-<number><suffix>)")
    iexp.add_argument("--catalog", type=folder, help=CATALOG_HELP)
    database_flags(iexp)

    export = command(sub, "export", _export, help="accounting export (journal lines)")
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--out", help="output file (default stdout)")
    export.add_argument("--catalog", type=folder, help=CATALOG_HELP)
    database_flags(export)

    report = command(sub, "report", _report, help="usage and revenue reports (docs/offline.md)")
    report.add_argument("kind", choices=["usage", "revenue"])
    report.add_argument("--by", default="period,account", help="comma separated dimensions")
    report.add_argument("--from", dest="start", type=iso_date, help="YYYY-MM-DD")
    report.add_argument("--to", dest="end", type=iso_date, help="YYYY-MM-DD, excluded")
    report.add_argument("--period", choices=["day", "month"], default="month")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.add_argument("--out", help="output file for csv/json (default stdout)")
    report.add_argument("--catalog", type=folder, help=CATALOG_HELP)
    database_flags(report)

    audit = command(sub, "audit", _audit, help="check the balances in Redis and the usage")
    audit.add_argument("--tenant", help="one tenant (default: every tenant in Redis)")
    audit.add_argument("--json", action="store_true", help="one JSON document")
    audit.add_argument(
        "--redis-only", action="store_true", help="the Redis checks alone (no PostgreSQL)"
    )
    audit.add_argument(
        "--stale-after",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a reservation this long past its reclaim deadline is reported (default 60)",
    )
    store_flags(audit)

    usage = group(sub, "usage", help="usage records of a tenant (docs/usage-api.md)")
    uexp = command(usage, "export", _usage_export, help="usage records of a period, CSV or NDJSON")
    uexp.add_argument("--tenant", required=True)
    uexp.add_argument("--from", dest="start", type=iso_date, help="first local day, YYYY-MM-DD")
    uexp.add_argument("--to", dest="end", type=iso_date, help="local day after the last")
    uexp.add_argument("--format", choices=["csv", "ndjson"], default="csv")
    uexp.add_argument("--out", help="output file (default stdout)")
    store_flags(uexp)

    crm = group(sub, "import", help="import accounts or subscriptions from a CRM export")
    for kind in ("accounts", "subscriptions"):
        p = command(crm, kind, _crm_import, help=f"create or update {kind} (docs/import.md)")
        p.set_defaults(import_kind=kind)
        p.add_argument("file")
        p.add_argument("--tenant", help="tenant (default: the one in force)")
        p.add_argument("--format", choices=["csv", "json"], help="default: from the file name")
        p.add_argument("--dry-run", action="store_true", help="validate and report, write nothing")
        p.add_argument("--report", help="write the report (JSON) to this file")
        p.add_argument("--batch", type=int, help="rows per state write (default 100,000)")
        redis_flags(p)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.offline.cli import main_db_migrate  # noqa: PLC0415

    return main_db_migrate(settings)


def _drain(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.offline.cli import main_drain  # noqa: PLC0415

    return main_drain(
        settings, batch=args.batch, claim_idle_ms=args.claim_idle_ms, follow=args.follow
    )


def _cdr_import(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.offline.cli import main_import  # noqa: PLC0415

    return main_import(settings, args.file, catalog=args.catalog)


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.offline.cli import main_reconcile  # noqa: PLC0415

    return main_reconcile(
        settings,
        catalog=args.catalog,
        tolerance_percent=args.tolerance_percent,
        tolerance_units=args.tolerance_units,
    )


def _billrun(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.offline.cli import main_billrun  # noqa: PLC0415

    return main_billrun(
        settings,
        cycle=args.cycle,
        account=args.account,
        preview=args.preview,
        on=args.date,
        force=args.force,
        catalog=args.catalog,
        terms=args.terms,
        out_dir=args.out_dir,
        metrics_port=args.metrics_port,
        einvoice=args.einvoice,
    )


def _adjust(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.offline.cli import main_invoice_adjust  # noqa: PLC0415

    return main_invoice_adjust(
        settings,
        number=args.number,
        kind=args.kind,
        amount=args.amount,
        reason=args.reason,
        catalog=args.catalog,
        out_dir=args.out_dir,
    )


def _invoice_export(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.offline.cli import main_invoice_export  # noqa: PLC0415

    return main_invoice_export(
        settings, number=args.number, fmt=args.format, out=args.out, catalog=args.catalog
    )


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.offline.cli import main_export  # noqa: PLC0415

    return main_export(settings, fmt=args.format, out=args.out, catalog=args.catalog)


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.offline.cli import main_report  # noqa: PLC0415

    return main_report(
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


def _usage_export(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.offline.usage_cli import main_usage_export  # noqa: PLC0415

    return main_usage_export(
        settings,
        tenant=args.tenant,
        start=args.start,
        end=args.end,
        fmt=args.format,
        out=args.out,
    )


def _crm_import(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.crm.cli import main_import  # noqa: PLC0415

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


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from ocs.audit.cli import main_audit  # noqa: PLC0415

    return run(main_audit(settings, args))
