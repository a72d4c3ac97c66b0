"""Entry points the ``ocs`` command wires (``ocs.commands.offline``): each takes the settings
and returns an exit code; errors are raised, and ``ocs.cli`` reports each as one ``ocs:
error:`` line (``ocs.offline`` errors name the file, field or setting at fault).

    ocs db migrate                -> main_db_migrate(settings)
    ocs cdr drain                 -> main_drain(settings, batch=..., claim_idle_ms=...)
    ocs cdr import FILE           -> main_import(settings, path, catalog=...) (CSV or BER)
    ocs cdr reconcile             -> main_reconcile(settings, catalog=..., tolerance_percent=...)
    ocs billrun --cycle D [--preview] [--account ID] [--date YYYY-MM-DD [--force]] [--einvoice]
                                  -> main_billrun(settings, cycle=..., account=..., ...)
    ocs invoice adjust --number N --kind credit|debit --amount MINOR --reason TEXT
                                  -> main_invoice_adjust(settings, number=..., kind=..., ...)
    ocs export --format csv|json [--out FILE]
                                  -> main_export(settings, fmt=..., out=...)
    ocs invoice export --number N --format html|pdf|ubl|cii|facturx [--out FILE]
                                  -> main_invoice_export(settings, number=..., fmt=..., ...)
    ocs report usage|revenue [--by DIMS] [--from D] [--to D] [--period day|month]
           [--format table|csv|json] [--out FILE]
                                  -> main_report(settings, kind, by=..., ...)

The catalogue defaults to the demo one shipped with ocs (:func:`ocs.config.demo_catalog`) and
the billing terms to the demo terms when the catalogue is the demo one (``--terms FILE``
otherwise).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ocs.config import demo_catalog
from ocs.errors import UsageError
from ocs.observability.health import postgres_check, redis_check
from ocs.observability.metrics import offline_metrics
from ocs.offline.adjust import adjust_invoice
from ocs.offline.billrun import bill_run
from ocs.offline.cdrs import import_file, reconcile
from ocs.offline.charges import DraftInvoice
from ocs.offline.crypto import TenantCipher, master_key, tenant_cipher
from ocs.offline.db import Database, connect, migrate
from ocs.offline.drain import BATCH, CLAIM_IDLE_MS, Drainer
from ocs.offline.einvoice.document import printed_numbers, resolve_document
from ocs.offline.einvoice.forms import FORMATS, SUFFIX, document_forms, write_forms
from ocs.offline.event_relay import relay, relay_all
from ocs.offline.render import journal, journal_csv, journal_json, money
from ocs.offline.reports import MONEY, Report, make_report, report_csv, report_json
from ocs.offline.service import open_ops_server, run_service
from ocs.offline.state_moves import drain_state_moves
from ocs.offline.sync import sync_catalogue
from ocs.offline.terms import DEMO_TERMS, load_terms
from ocs.rating.catalogue import Catalogue
from ocs.rating.errors import CatalogueError
from ocs.rating.loader import load_catalogue
from ocs.redis_client import open_redis

T = TypeVar("T")
_err = Console(stderr=True, highlight=False)
_out = Console(highlight=False)


def _run(main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main`` on a fresh event loop; what it raises reaches ``ocs.cli``."""
    return asyncio.run(main())  # type: ignore[arg-type]


def _catalogue(path: Path | str | None) -> Catalogue:
    """The catalogue at ``path`` (default: the demo one); its errors name the files in it."""
    folder = Path(path) if path is not None else demo_catalog()
    try:
        return load_catalogue(folder)
    except CatalogueError as exc:
        issues = [replace(i, file=str(folder / i.file)) for i in exc.issues]
        raise CatalogueError(issues) from None


def _terms_for(catalog: Path | str | None, terms: Path | str | None) -> Path | None:
    if terms is not None:
        return Path(terms)
    if catalog is None or Path(catalog).resolve() == demo_catalog().resolve():
        return DEMO_TERMS
    return None


def _run_date(catalogue: Catalogue, on: date | None, *, force: bool, preview: bool) -> date:
    """The bill run's date: ``on``, or today in the tenant's time zone (a period ends at the
    tenant's midnight, not UTC's). A date after today would invoice a period that has not
    ended: refused unless ``force`` (a preview issues nothing, so it may look ahead)."""
    zone = catalogue.tenant.time_zone
    today = datetime.now(ZoneInfo(zone)).date()
    if on is None:
        return today
    if on > today and not (force or preview):
        raise UsageError(
            f"billrun: --date: {on} is after today ({today} in {zone}): its period has not"
            " ended; add --force to issue it anyway, or --preview"
        )
    return on


async def _open(settings: Any, catalogue: Catalogue) -> tuple[Database, TenantCipher]:
    db = await connect(settings)
    async with db.tenant(catalogue.tenant.id) as conn:
        cipher = await tenant_cipher(conn, catalogue.tenant.id, master_key(settings))
    return db, cipher


async def _relay_events(settings: Any, db: Database, tenant: str) -> None:
    """Relay the tenant's document events (``invoice.issued``, ...) to its Redis outbox
    right after they were committed. The documents are issued either way: when Redis cannot
    be reached, the events wait in PostgreSQL for the next relay (every ``ocs cdr drain``),
    and the command says so on stderr."""
    try:
        handle = await open_redis(settings, timeout=10.0)
        try:
            await relay(db, handle.client, tenant, keep_ms=_keep_ms(settings))
        finally:
            await handle.close()
    except Exception as exc:  # a store outage: the events stay pending, nothing is lost
        _err.print(
            f"ocs: warning: document events not relayed yet ({type(exc).__name__}: {exc});"
            " they wait in PostgreSQL for the next `ocs cdr drain`",
            markup=False,
            soft_wrap=True,
        )


def _keep_ms(settings: Any) -> int:
    return int(float(settings.webhook_retention) * 1000)


def main_db_migrate(settings: Any) -> int:
    async def go() -> int:
        db = await connect(settings, migrate_now=False)
        try:
            async with db.pool.acquire() as conn:
                applied = await migrate(conn)
        finally:
            await db.close()
        _out.print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
        return 0

    return _run(go)


def main_drain(
    settings: Any,
    *,
    batch: int = BATCH,
    claim_idle_ms: int = CLAIM_IDLE_MS,
    follow: float = 0.0,
) -> int:
    """Drain once, or (``follow`` > 0) every ``follow`` seconds until SIGTERM, serving the
    metrics port meanwhile (``ocs.offline.service``)."""

    async def go() -> int:
        db = await connect(settings)
        handle = await open_redis(settings, timeout=30.0)
        try:
            drainer = Drainer(
                handle.client,
                db,
                master_key(settings),
                batch=batch,
                claim_idle_ms=claim_idle_ms,
                trim=settings.drain_trim,
            )
            master = master_key(settings)

            async def both() -> None:
                await drainer.run()
                await drain_state_moves(handle.client, db, master)
                await relay_all(db, handle.client, keep_ms=_keep_ms(settings))

            if follow > 0:
                checks = {
                    "redis": redis_check(handle.client),
                    "postgresql": postgres_check(db.pool),
                }
                return await run_service("drain", both, settings, interval=follow, checks=checks)
            with _progress() as progress:
                task = progress.add_task("drain", total=None)
                stats = await drainer.run(progress=lambda n: progress.advance(task, n))
            moves = await drain_state_moves(handle.client, db, master)
            relayed = await relay_all(db, handle.client, keep_ms=_keep_ms(settings))
        finally:
            await handle.close()
            await db.close()
        _out.print(
            f"drained {stats.read} records from {stats.streams} streams: {stats.inserted} new,"
            f" {stats.duplicates} already stored, {stats.claimed} reclaimed,"
            f" {stats.rate:,.0f} records/s"
        )
        if moves:
            _out.print(f"drained {moves} SIM state changes")
        if relayed:
            _out.print(f"relayed {relayed} document events")
        return 0

    return _run(go)


def main_import(settings: Any, path: Path | str, *, catalog: Path | str | None = None) -> int:
    async def go() -> int:
        catalogue = _catalogue(catalog)
        db, cipher = await _open(settings, catalogue)
        try:
            with _progress() as progress:
                task = progress.add_task("import", total=None)

                def step(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                async with db.tenant(catalogue.tenant.id) as conn:
                    report = await import_file(conn, cipher, Path(path), step)
        finally:
            await db.close()
        for line in report.errors:
            _err.print(line, markup=False, soft_wrap=True)
        _out.print(
            f"{path}: {report.rows} rows, {report.imported} imported,"
            f" {report.duplicates} already imported, {len(report.errors)} rejected"
        )
        return 1 if report.errors else 0

    return _run(go)


def main_reconcile(
    settings: Any,
    *,
    catalog: Path | str | None = None,
    tolerance_percent: float = 1.0,
    tolerance_units: int = 0,
) -> int:
    async def go() -> int:
        catalogue = _catalogue(catalog)
        db, cipher = await _open(settings, catalogue)
        try:
            async with db.tenant(catalogue.tenant.id) as conn:
                rep = await reconcile(
                    conn,
                    catalogue,
                    cipher,
                    tolerance_percent=tolerance_percent,
                    tolerance_units=tolerance_units,
                )
        finally:
            await db.close()
        table = Table("session / rating group", "network", "online", "difference", "status")
        for d in rep.differences:
            table.add_row(d.key, str(d.network), str(d.online), str(d.diff), d.status)
        _out.print(table)
        _out.print(
            f"{rep.groups} groups: {rep.matched} within tolerance, {len(rep.differences)}"
            f" differences, {rep.rated} CDRs rated in batch"
        )
        return 0

    return _run(go)


def main_billrun(
    settings: Any,
    *,
    cycle: int | None = None,
    account: str | None = None,
    preview: bool = False,
    on: date | None = None,
    force: bool = False,
    catalog: Path | str | None = None,
    terms: Path | str | None = None,
    out_dir: Path | str | None = None,
    metrics_port: int = 0,
    einvoice: bool = False,
) -> int:
    """Sync the catalogue and terms, run the cycle (or one account), render the invoices
    (HTML and PDF under ``out_dir``, default ``<data_dir>/invoices``; with ``einvoice`` also
    UBL, CII and Factur-X) and print a summary.
    With ``metrics_port`` its progress is on /metrics there while it runs."""
    if cycle is None and account is None:
        raise UsageError("billrun: --cycle: give a bill day (1-28) or --account")
    if cycle is not None and not 1 <= cycle <= 28:
        raise UsageError(f"billrun: --cycle: {cycle} is not a bill day (1-28)")

    async def go() -> int:
        catalogue = _catalogue(catalog)
        run_date = _run_date(catalogue, on, force=force, preview=preview)
        billing_terms = load_terms(_terms_for(catalog, terms))
        db, cipher = await _open(settings, catalogue)
        tid = catalogue.tenant.id
        ops = open_ops_server(metrics_port, settings.host)
        try:
            async with db.tenant(tid) as conn:
                await sync_catalogue(conn, catalogue, cipher, billing_terms)
            with _progress() as progress:
                task = progress.add_task("bill run", total=None)

                def step(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                try:
                    summary = await bill_run(
                        db,
                        catalogue,
                        cipher,
                        bill_day=cycle,
                        account=account,
                        preview=preview,
                        on=run_date,
                        progress=step,
                    )
                except BaseException:
                    offline_metrics().billrun_failed()  # outcome="failed", if it had begun
                    raise
            if not preview and summary.numbers:
                await _relay_events(settings, db, tid)
                folder = Path(out_dir or Path(settings.data_dir) / "invoices")
                formats = FORMATS if einvoice else ("html", "pdf")
                async with db.tenant(tid) as conn:
                    printed = await printed_numbers(conn, summary.numbers)
                    for number in summary.numbers:
                        forms = await document_forms(conn, number, formats)
                        name = f"{tid}-{printed[number]}"
                        await asyncio.to_thread(write_forms, folder, name, forms)
            else:
                printed = {}
            _print_summary(summary.invoices, [printed[n] for n in summary.numbers], preview)
            _out.print(
                f"run {summary.run_key}: {summary.accounts} accounts invoiced,"
                f" {summary.skipped} already done, {len(summary.invoices)} invoices"
                + (" (preview, nothing issued)" if preview else "")
            )
        finally:
            await db.close()
            if ops is not None:  # the outcome (issued, preview, failed) stays scrapeable
                await ops.close(linger=settings.metrics_linger)
        return 0

    return _run(go)


def _print_summary(invoices: list[DraftInvoice], numbers: list[str], preview: bool) -> None:
    table = Table("number", "account", "issuer", "level", "currency", "net", "tax", "gross")
    for i, inv in enumerate(invoices):
        number = "-" if preview or i >= len(numbers) else numbers[i]
        table.add_row(
            number,
            inv.account_id,
            inv.issuer,
            inv.level,
            inv.currency,
            f"{inv.net / 100:.2f}",
            f"{inv.tax / 100:.2f}",
            f"{inv.gross / 100:.2f}",
        )
    _out.print(table)


def main_invoice_adjust(
    settings: Any,
    *,
    number: str,
    kind: str,
    amount: int,
    reason: str,
    catalog: Path | str | None = None,
    out_dir: Path | str | None = None,
) -> int:
    """``kind`` is ``credit`` or ``debit``; ``amount`` is net minor units. The note is
    written in every form (HTML, PDF, UBL, CII, Factur-X) beside the invoices."""

    async def go() -> int:
        catalogue = _catalogue(catalog)
        tid = catalogue.tenant.id
        db, _ = await _open(settings, catalogue)
        try:
            async with db.tenant(tid) as conn:
                invoice = await resolve_document(conn, number, kind="invoice")
            note = await adjust_invoice(db, tid, invoice, kind=kind, net=amount, reason=reason)
            await _relay_events(settings, db, tid)
            async with db.tenant(tid) as conn:
                forms = await document_forms(conn, note.number, FORMATS)
                currency = await conn.fetchval(
                    "SELECT currency FROM invoices WHERE number = $1", note.number
                )
        finally:
            await db.close()
        folder = Path(out_dir or Path(settings.data_dir) / "invoices")
        paths = await asyncio.to_thread(write_forms, folder, f"{tid}-{note.doc_id}", forms)
        _out.print(
            f"{note.kind.replace('_', ' ')} {note.doc_id} against invoice {number.strip()}:"
            f" net {money(note.net)} {currency}, tax {money(note.tax)} {currency},"
            f" gross {money(note.gross)} {currency}"
        )
        _out.print(f"written: {', '.join(str(p) for p in paths)}")
        return 0

    return _run(go)


def main_invoice_export(
    settings: Any,
    *,
    number: str,
    fmt: str,
    out: Path | str | None = None,
    catalog: Path | str | None = None,
) -> int:
    """One form (``html``, ``pdf``, ``ubl``, ``cii``, ``facturx``) of document ``number``
    to ``out`` (default ``<tenant>-<number><suffix>`` in the current folder)."""
    if fmt not in FORMATS:
        raise UsageError(f"invoice export: --format: {fmt!r} is not one of {', '.join(FORMATS)}")

    async def go() -> int:
        catalogue = _catalogue(catalog)
        tid = catalogue.tenant.id
        db, _ = await _open(settings, catalogue)
        try:
            async with db.tenant(tid) as conn:
                key = await resolve_document(conn, number)
                forms = await document_forms(conn, key, (fmt,))
                printed = (await printed_numbers(conn, [key]))[key]
        finally:
            await db.close()
        path = Path(out) if out else Path(f"{tid}-{printed}{SUFFIX[fmt]}")
        await asyncio.to_thread(path.write_bytes, forms[fmt])
        what = "invoice" if printed.isdigit() else "note"
        _out.print(f"{what} {printed}: {fmt} written to {path}")
        return 0

    return _run(go)


def main_export(
    settings: Any,
    *,
    fmt: str = "csv",
    out: Path | str | None = None,
    catalog: Path | str | None = None,
) -> int:
    if fmt not in ("csv", "json"):
        raise UsageError(f"export: --format: {fmt!r} is not csv or json")

    async def go() -> int:
        catalogue = _catalogue(catalog)
        db, _ = await _open(settings, catalogue)
        try:
            async with db.tenant(catalogue.tenant.id) as conn:
                entries = await journal(conn)
        finally:
            await db.close()
        text = journal_csv(entries) if fmt == "csv" else journal_json(entries)
        await _write_out(text, out)
        return 0

    return _run(go)


def main_report(
    settings: Any,
    kind: str,
    *,
    by: str = "period,account",
    start: date | None = None,
    end: date | None = None,
    granularity: str = "month",
    fmt: str = "table",
    out: Path | str | None = None,
    catalog: Path | str | None = None,
) -> int:
    """``ocs report usage|revenue``: a rich table on the terminal, or CSV/JSON to ``out``
    (default stdout). The tenant is the catalogue's."""
    if fmt not in ("table", "csv", "json"):
        raise UsageError(f"report: --format: {fmt!r} is not table, csv or json")

    async def go() -> int:
        catalogue = _catalogue(catalog)
        db = await connect(settings)
        try:
            report = await make_report(
                db,
                catalogue.tenant.id,
                kind,
                by=by,
                start=start,
                end=end,
                granularity=granularity,
            )
        finally:
            await db.close()
        if fmt == "table":
            _print_report(report)
            return 0
        text = report_csv(report) if fmt == "csv" else report_json(report)
        await _write_out(text, out)
        return 0

    return _run(go)


async def _write_out(text: str, out: Path | str | None) -> None:
    """``text`` to the file ``out``, or to stdout without one."""
    if out is None:
        sys.stdout.write(text)
    else:
        await asyncio.to_thread(Path(out).write_text, text, encoding="utf-8")


def _print_report(report: Report) -> None:
    table = Table(*report.columns, title=f"{report.kind} report")

    def cells(row: dict[str, Any]) -> list[str]:
        return [
            f"{row[c] / 100:.2f}"
            if c in MONEY and isinstance(row.get(c), int)
            else str(row.get(c, ""))
            for c in report.columns
        ]

    for row in report.rows:
        table.add_row(*cells(row))
    for row in report.totals():
        table.add_row(*cells(row), style="bold")
    _out.print(table)
    span = f"{report.start or '-'} .. {report.end or '-'}"
    _out.print(f"{len(report.rows)} rows, {span}; totals per currency in bold (minor units / 100)")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
        disable=not _err.is_terminal,  # a bar for a person; nothing in a pipe or a log
    )
