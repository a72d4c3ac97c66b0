"""Import accounts and subscriptions from CRM exports (CSV, JSON, JSON Lines).

``readers`` turns a file into numbered rows, ``accounts`` and ``subscriptions`` turn each
row into the catalogue item it creates or updates (or a rejection naming the field and
reason), ``importer`` applies the good rows in batches through the tenant's catalogue state
(:mod:`ocs.provisioning.catalogues`), one state write per batch and none when nothing changed.
The formats and semantics are in docs/import.md.
"""

from __future__ import annotations

from ocs.crm.importer import KINDS, run_import
from ocs.crm.readers import FileError, read_rows
from ocs.crm.report import ImportReport, Rejection

__all__ = ["KINDS", "FileError", "ImportReport", "Rejection", "read_rows", "run_import"]
