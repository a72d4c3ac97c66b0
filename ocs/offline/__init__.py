"""Offline billing on PostgreSQL: CDR drain and import, reconciliation, bill runs, invoices,
adjustments and accounting exports (asyncpg, no ORM). See docs/offline.md."""

from __future__ import annotations
