"""Wiring: which applications `ocs serve` attaches to the Diameter node, and the CLI actions
that need the stores. Kept apart from ``cli.py`` (argument parsing) and ``server.py``
(lifecycle)."""

from __future__ import annotations

import json
import sys

from .charging import NoCatalogue, apply_catalog, create_charging, show_balance
from .config import Settings
from .diameter.constants import Application, Command
from .diameter.node import Node
from .rating.errors import CatalogueError
from .server import Attach, Closer, serve


def charging_attacher(catalog_path: str | None) -> Attach:
    """Attach the Gy/Ro application; ``catalog_path`` is applied first (``ocs demo``)."""

    async def attach(settings: Settings, node: Node) -> list[Closer]:
        runtime = await create_charging(settings, catalog_path=catalog_path)
        node.register(
            Application.CREDIT_CONTROL, Command.CREDIT_CONTROL, runtime.application.handle_ccr
        )
        return [runtime.close]

    return attach


async def run_server(settings: Settings, demo_catalog: str | None = None) -> int:
    try:
        await serve(settings, charging_attacher(demo_catalog))
    except NoCatalogue as exc:
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 2
    except CatalogueError as exc:
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 2
    return 0


async def apply_catalog_cli(settings: Settings, path: str) -> int:
    try:
        summary = await apply_catalog(path, settings)
    except CatalogueError as exc:
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


async def show_balance_cli(settings: Settings, msisdn: str, *, as_json: bool) -> int:
    try:
        balance = await show_balance(msisdn, settings)
    except LookupError as exc:
        print(f"ocs: error: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(balance, indent=2, default=str))
        return 0
    for payer in balance.get("payers", []):
        print(f"{payer.get('payer', payer.get('id', '?'))}:")
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
