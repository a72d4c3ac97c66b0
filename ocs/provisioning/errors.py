"""Why provisioning refused a change, as data every front door can answer with (the API as
an RFC 9457 problem document, the CLI as ``ocs: error: ...``)."""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    """A refused change: ``status`` is the HTTP status it maps to, ``kind`` the problem type
    (``catalogue-invalid``, ``no-catalogue``, ``tenant-mismatch``, ...), ``extra`` more
    members of the answer (e.g. ``issues``)."""

    def __init__(
        self, status: int, kind: str, title: str, detail: str | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.extra = extra
