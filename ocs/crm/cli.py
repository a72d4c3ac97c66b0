"""``ocs import accounts|subscriptions FILE``: exit 0 when every row was imported, 1 when
rows were rejected (the good ones are kept) or a store failed, 2 when the file or the command
line is wrong (one ``ocs: error:`` line from ``ocs.cli``, never a traceback)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from ocs.balance.keys import CATALOG
from ocs.config import Settings
from ocs.crm.importer import DEFAULT_BATCH, KINDS, run_import
from ocs.crm.readers import FileError, Format, Row, decode, format_of_name, read_rows
from ocs.crm.report import ImportReport
from ocs.errors import CommandError, UsageError
from ocs.provisioning.errors import Refused
from ocs.provisioning.identity import IdentityTaken
from ocs.provisioning.states import cli_actor

REDIS_TIMEOUT = 60.0  # seconds per command: one batch's state is one large value


async def _run(
    settings: Settings,
    kind: str,
    file: str,
    rows: list[Row],
    tenant: str | None,
    dry_run: bool,
    batch: int,
) -> ImportReport:
    from ocs.api.asgi import build_state  # noqa: PLC0415 (FastAPI only when importing)
    from ocs.redis_client import open_redis  # noqa: PLC0415

    handle = await open_redis(settings, timeout=REDIS_TIMEOUT)
    try:
        api = build_state(settings, handle.client)
        if tenant is None:
            pointer = await handle.client.hget(CATALOG, "tenant")
            if pointer is None:
                raise UsageError("no tenant is in force: give --tenant")
            tenant = pointer.decode() if isinstance(pointer, bytes) else str(pointer)
        report = await run_import(
            api, tenant, kind, file, rows, dry_run=dry_run, batch=batch, actor=cli_actor()
        )
        await api.drain()
        return report
    finally:
        await handle.close()


def main_import(
    settings: Settings,
    kind: str,
    file: str,
    *,
    tenant: str | None = None,
    fmt: str | None = None,
    dry_run: bool = False,
    report_path: str | None = None,
    batch: int | None = None,
) -> int:
    batch = DEFAULT_BATCH if batch is None else batch
    if kind not in KINDS:
        raise UsageError(f"unknown import {kind!r} (one of {', '.join(KINDS)})")
    if batch < 1:
        raise UsageError("--batch must be at least 1")
    chosen: Format | None = "csv" if fmt == "csv" else "json" if fmt == "json" else None
    if fmt is not None and chosen is None:
        raise UsageError(f"unknown format {fmt!r} (csv or json)")
    chosen = chosen or format_of_name(file)
    if chosen is None:
        raise UsageError(f"{file}: cannot tell the format from the name; give --format csv|json")
    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        raise UsageError(f"{file}: cannot read: {exc.strerror or exc}") from None
    cpu = time.process_time()
    try:
        rows = read_rows(file, decode(file, data), chosen, KINDS[kind])
    except FileError as exc:
        raise UsageError(str(exc)) from None
    read_cpu = time.process_time() - cpu
    try:
        report = asyncio.run(_run(settings, kind, file, rows, tenant, dry_run, batch))
    except Refused as exc:
        raise CommandError(f"{file}: {exc.detail or exc.title}") from None
    except IdentityTaken as exc:
        raise CommandError(f"{file}: {exc}") from None
    report.add_cpu("read", read_cpu)
    for rejection in sorted(report.rejected, key=lambda r: r.line):
        print(rejection, file=sys.stderr)
    print(report.summary())
    if report_path is not None:
        try:
            Path(report_path).write_text(json.dumps(report.as_dict(), indent=1) + "\n", "utf-8")
        except OSError as exc:
            raise CommandError(
                f"{report_path}: cannot write the report: {exc.strerror or exc}"
            ) from None
    return 0 if report.ok else 1
