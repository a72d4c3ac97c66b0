"""Wiring: which applications `ocs serve` attaches to the Diameter node, and the CLI actions
that need the stores. Kept apart from ``cli.py`` (argument parsing) and ``server.py``
(lifecycle)."""

from __future__ import annotations

from .config import Settings
from .diameter.node import Node
from .server import Closer, serve


async def attach_applications(settings: Settings, node: Node) -> list[Closer]:
    """Register the Gy/Ro application; returns the closers of what it opened."""
    return []


async def run_server(settings: Settings, demo_catalog: str | None = None) -> None:
    await serve(settings, attach_applications)


async def apply_catalog_cli(settings: Settings, path: str) -> int:
    print("ocs: error: catalog apply is not available yet", flush=True)
    return 2


async def show_balance_cli(settings: Settings, msisdn: str, *, as_json: bool) -> int:
    print("ocs: error: balance show is not available yet", flush=True)
    return 2
