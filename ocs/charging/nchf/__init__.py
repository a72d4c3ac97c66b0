"""Nchf_ConvergedCharging v3 (3GPP TS 32.291, Release 17): the 5G adapter over the charging
core (``ocs.charging.decision``), as the Gy/Ro application is the Diameter one. docs/nchf.md."""

from __future__ import annotations

from ocs.charging.nchf.service import COLLECTION, NchfService

__all__ = ["COLLECTION", "NchfService"]
