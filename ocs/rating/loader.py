"""Read a catalogue folder (every *.yaml / *.yml file in it, recursively, in name order),
validate each item into its model, compile, and report every issue with file and path.

This is the only module of `ocs.rating` that touches the file system.
"""

from __future__ import annotations

import gc
import json
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import TypeAdapter, ValidationError

from ocs.rating.catalogue import Catalogue
from ocs.rating.compiler import Sourced, Where, compile_catalogue
from ocs.rating.errors import CatalogueError, Issue, Severity
from ocs.rating.models import SECTIONS, Tenant


class _StrictLoader(yaml.SafeLoader):
    """YAML 1.1 without its surprises: only true/false are booleans, so the country code
    NO stays a string and yes/no/on/off are plain words."""


_StrictLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

if yaml.__with_libyaml__:

    class _StrictCLoader(yaml.CSafeLoader):
        """The same rules on libyaml's parser (several times faster on large folders)."""

    _StrictCLoader.yaml_implicit_resolvers = _StrictLoader.yaml_implicit_resolvers
    _LOADER: type[Any] = _StrictCLoader
else:  # pragma: no cover - PyYAML wheels ship libyaml
    _LOADER = _StrictLoader


def parse_document(text: str) -> Any:
    """One catalogue file: JSON when it is JSON (the API writes its catalogue folders as
    JSON, which is also YAML, and ``json`` reads 100,000 SIMs in a fraction of a second
    where a YAML parser takes tens of seconds), else YAML with the strict rules above."""
    if text[:1] in ("{", "[") or text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML flow style such as {a: 1}: not JSON
    return yaml.load(text, Loader=_LOADER)


_ADAPTERS: dict[str, TypeAdapter[Any]] = {name: TypeAdapter(m) for name, m in SECTIONS.items()}
_TENANT = TypeAdapter(Tenant)


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _validate(
    adapter: TypeAdapter[Any], raw: object, where: Where, issues: list[Issue]
) -> Any | None:
    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            issues.append(Issue(where.file, _path(where.path, loc), err["msg"]))
        return None


def add_document(
    name: str, document: object, sections: dict[str, list[Sourced]], issues: list[Issue]
) -> None:
    """Validate one parsed document (the content of one file) item by item into `sections`,
    recording every problem in `issues`."""
    if document is None:
        return
    if not isinstance(document, dict):
        issues.append(Issue(name, "", "top level must be a mapping of sections"))
        return
    for key, value in document.items():
        where = Where(name, str(key))
        if key == "tenant":
            tenant = _validate(_TENANT, value, where, issues)
            if tenant is not None:
                sections.setdefault("tenant", []).append((where, tenant))
            continue
        adapter = _ADAPTERS.get(str(key))
        if adapter is None:
            known = ", ".join(["tenant", *SECTIONS])
            issues.append(Issue(name, str(key), f"unknown section (known: {known})"))
            continue
        if not isinstance(value, list):
            issues.append(Issue(name, str(key), "must be a list"))
            continue
        bucket = sections.setdefault(str(key), [])
        for index, raw in enumerate(value):
            item_where = Where(name, f"{key}[{index}]")
            item = _validate(adapter, raw, item_where, issues)
            if item is not None:
                bucket.append((item_where, item))


def read_sources(folder: Path) -> tuple[dict[str, list[Sourced]], list[Issue]]:
    """Parse and validate every file; keep the valid items with where they came from."""
    sections: dict[str, list[Sourced]] = {}
    issues: list[Issue] = []
    if not folder.is_dir():
        return sections, [Issue(str(folder), "", "not a directory")]
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        issues.append(Issue(str(folder), "", "no .yaml files found"))
    for file in files:
        name = str(file.relative_to(folder))
        try:
            document = parse_document(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            issues.append(Issue(name, "", f"cannot read YAML: {exc}".replace("\n", " ")))
            continue
        add_document(name, document, sections, issues)
    return sections, issues


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The outcome of checking a folder: the catalogue (None when refused) and every issue."""

    path: str
    catalogue: Catalogue | None
    issues: tuple[Issue, ...] = field(default=())

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        return self.catalogue is not None and not self.errors


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a catalogue is read and compiled.

    Loading allocates millions of long-lived objects and no cycles worth collecting; with the
    collector running, its full collections re-scan the growing object graph again and again
    and take most of the load time of a large catalogue (three quarters at 1,000 plans).
    Reference counting still frees everything as usual; the collector is enabled again (if
    it was) when the load ends, also on error.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _report(path: str, sections: dict[str, list[Sourced]], issues: list[Issue]) -> CheckReport:
    # Cross references are checked even after schema errors, so one run shows every
    # problem; references to items that failed validation may add follow-up errors.
    catalogue, more = compile_catalogue(sections)
    if any(i.severity is Severity.ERROR for i in issues):
        catalogue = None
    return CheckReport(path, catalogue, tuple(issues + more))


def check_catalog(path: str | Path) -> CheckReport:
    """Validate a catalogue folder without applying it."""
    with _collector_paused():
        sections, issues = read_sources(Path(path))
        return _report(str(path), sections, issues)


def check_documents(documents: Mapping[str, object]) -> CheckReport:
    """Validate already-parsed documents ({file name: content}); used by tools and tests."""
    sections: dict[str, list[Sourced]] = {}
    issues: list[Issue] = []
    with _collector_paused():
        for name, document in documents.items():
            add_document(name, document, sections, issues)
        return _report("(memory)", sections, issues)


def load_catalogue(path: str | Path) -> Catalogue:
    """Load a folder or raise `CatalogueError` listing every error."""
    report = check_catalog(path)
    if report.catalogue is None or report.errors:
        raise CatalogueError(list(report.errors))
    return report.catalogue


def main_check(path: str) -> int:
    """`ocs catalog check PATH`: print a summary or every issue; 0 when the folder is valid."""
    report = check_catalog(path)
    for issue in report.issues:
        print(issue, file=sys.stderr if issue.severity is Severity.ERROR else sys.stdout)
    if not report.ok or report.catalogue is None:
        print(f"{path}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
        return 1
    summary = report.catalogue.summary()
    counts = ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in summary.items())
    print(f"{path}: tenant {report.catalogue.tenant.id!r} OK: {counts}")
    return 0


class Catalogues(Protocol):
    """Where the charging side finds the catalogue a usage is rated by: the tenant's of the
    SIM (``ocs.charging.inforce.InForce``, many tenants), or one catalogue for every SIM
    (:class:`CatalogueHolder`)."""

    def of(self, imsi: str | None, msisdn: str | None) -> Catalogue: ...


class CatalogueHolder:
    """The catalogue in force. `current` is swapped in one reference assignment, so readers
    never see a half-built catalogue; a folder with errors leaves the old one in place."""

    def __init__(self, catalogue: Catalogue, path: str | Path | None = None) -> None:
        self._current = catalogue
        self._path = None if path is None else Path(path)
        self._lock = threading.Lock()

    @classmethod
    def from_path(cls, path: str | Path) -> CatalogueHolder:
        return cls(load_catalogue(path), path)

    @property
    def current(self) -> Catalogue:
        return self._current

    def of(self, imsi: str | None, msisdn: str | None) -> Catalogue:
        """The one catalogue, whatever the SIM (:class:`Catalogues`)."""
        return self._current

    def replace(self, catalogue: Catalogue) -> None:
        self._current = catalogue

    def reload(self, path: str | Path | None = None) -> CheckReport:
        """Load `path` (default: the last one) and swap it in only if it has no errors."""
        target = Path(path) if path is not None else self._path
        if target is None:
            raise ValueError("no catalogue path to reload from")
        with self._lock:
            report = check_catalog(target)
            if report.ok and report.catalogue is not None:
                # A holder that never loaded a folder (a node started before provisioning)
                # takes whatever tenant comes first; after that the tenant is fixed.
                if self._path is not None and report.catalogue.tenant.id != self._current.tenant.id:
                    issue = Issue(str(target), "tenant.id", "reload may not change the tenant")
                    return CheckReport(str(target), None, (*report.issues, issue))
                self._current = report.catalogue
                self._path = target
            return report
