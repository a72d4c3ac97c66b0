"""The 3GPP Release 17 OpenAPI files as test oracles (``shared/specs/3gpp-rel17``, see its
README: used from there, never copied into the repository).

:class:`Specs` turns one component of a YAML file (``TS29510_Nnrf_NFManagement.yaml`` with
``#/components/schemas/NFProfile``) into a JSON Schema with every ``$ref`` it reaches, across
files, held under ``definitions`` (recursive schemas stay references). OpenAPI 3.0's
``nullable`` becomes a ``null`` alternative; annotations that JSON Schema draft 4 does not know
(discriminator, example, ...) are dropped. jsonschema-rs validates (formats are not checked:
the 3GPP files use formats such as ``uri`` loosely).

A test needing the files calls :func:`specs_or_skip`, which skips with the reason when the
folder is absent.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

FOLDER = "shared/specs/3gpp-rel17"
ENV = "OCS_SPECS_DIR"  # overrides where the files are
DROP = frozenset(
    {"discriminator", "example", "examples", "deprecated", "readOnly", "writeOnly",
     "externalDocs", "xml", "nullable"}
)  # fmt: skip
SCHEMA_MAPS = frozenset({"properties", "patternProperties"})
SCHEMA_ONE = frozenset({"items", "additionalProperties", "not"})
SCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf"})


def find_specs() -> Path | None:
    """``$OCS_SPECS_DIR``, else ``shared/specs/3gpp-rel17`` beside the project or an ancestor
    (a worktree lives deeper than the checkout it belongs to)."""
    if os.environ.get(ENV):
        path = Path(os.environ[ENV])
        return path if path.is_dir() else None
    here = Path(__file__).resolve().parents[2]
    for parent in (here, *here.parents):
        candidate = parent.parent / FOLDER if parent != here else here.parent / FOLDER
        if candidate.is_dir():
            return candidate
    return None


def specs_or_skip() -> Specs:
    folder = find_specs()
    if folder is None:
        pytest.skip(
            f"the 3GPP Rel-17 OpenAPI files ({FOLDER} beside the project, or ${ENV}) are "
            "absent: the schema oracle cannot run"
        )
    return Specs.at(folder)


class SchemaError(AssertionError):
    pass


class Specs:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._docs: dict[str, Any] = {}
        self._validators: dict[tuple[str, str], Any] = {}

    @classmethod
    @functools.cache
    def at(cls, folder: Path) -> Specs:
        return cls(folder)

    def doc(self, name: str) -> Any:
        if name not in self._docs:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            with (self.folder / name).open(encoding="utf-8") as fh:
                self._docs[name] = yaml.load(fh, Loader=loader)
        return self._docs[name]

    def node(self, name: str, pointer: str) -> Any:
        node = self.doc(name)
        for part in pointer.lstrip("/").split("/"):
            if part:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    # -- schemas -----------------------------------------------------------------------------
    def schema(self, name: str, pointer: str) -> dict[str, Any]:
        """The JSON Schema of ``name#pointer`` with every schema it references."""
        definitions: dict[str, Any] = {}
        pending: list[tuple[str, str]] = []

        def key_of(ref: str, base: str) -> str:
            file, _, frag = ref.partition("#")
            file = file or base
            key = f"{file.removesuffix('.yaml')}{frag.replace('/', '.')}"
            if key not in definitions:
                definitions[key] = None
                pending.append((file, frag))
            return key

        def convert(node: Any, base: str) -> Any:
            if not isinstance(node, dict):
                return node
            if "$ref" in node:
                return {"$ref": f"#/definitions/{key_of(node['$ref'], base)}"}
            out: dict[str, Any] = {}
            for k, v in node.items():
                if k in DROP or k.startswith("x-"):
                    continue
                if k in SCHEMA_MAPS:
                    out[k] = {p: convert(s, base) for p, s in v.items()}
                elif k in SCHEMA_ONE and isinstance(v, dict):
                    out[k] = convert(v, base)
                elif k in SCHEMA_LIST:
                    out[k] = [convert(s, base) for s in v]
                else:
                    out[k] = v
            if node.get("nullable") is True:
                return {"anyOf": [out, {"type": "null"}]}
            return out

        root = convert(self.node(name, pointer), name)
        while pending:
            file, frag = pending.pop()
            key = f"{file.removesuffix('.yaml')}{frag.replace('/', '.')}"
            definitions[key] = convert(self.node(file, frag), file)
        return {**root, "definitions": definitions}

    def validator(self, name: str, pointer: str) -> Any:
        if (name, pointer) not in self._validators:
            self._validators[name, pointer] = jsonschema_rs.Draft4Validator(
                self.schema(name, pointer), validate_formats=False
            )
        return self._validators[name, pointer]

    def check(self, instance: Any, name: str, pointer: str, *, what: str = "") -> None:
        """SchemaError naming every place ``instance`` breaks ``name#pointer``."""
        errors = [
            f"  at /{'/'.join(str(p) for p in e.instance_path)}: {e.message}"
            for e in self.validator(name, pointer).iter_errors(instance)
        ]
        if errors:
            label = what or f"{name}#{pointer}"
            raise SchemaError(f"{label} breaks its schema:\n" + "\n".join(errors[:20]))

    # -- operations ----------------------------------------------------------------------------
    def response(
        self, name: str, path: str, method: str, status: int, *, callback: str | None = None
    ) -> tuple[str, str, str] | None:
        """Where the answer ``status`` of an operation is defined: (file, pointer of its
        schema, media type), None when the spec defines no body for it. SchemaError when the
        operation does not name the status (nor a ``default``)."""
        op_pointer = f"/paths/{_escape(path)}/{method.lower()}"
        responses_pointer = f"{op_pointer}/responses"
        responses = self.node(name, responses_pointer)
        code = str(status)
        if code not in responses:
            if "default" not in responses:
                raise SchemaError(f"{method} {path}: status {status} is not in the spec")
            code = "default"
        file, pointer = name, f"{responses_pointer}/{code}"
        node = self.node(file, pointer)
        while "$ref" in node:  # TS29571_CommonData.yaml#/components/responses/400
            ref_file, _, frag = node["$ref"].partition("#")
            file, pointer = ref_file or file, frag
            node = self.node(file, pointer)
        content = node.get("content") or {}
        if not content:
            return None
        media = next(iter(content))
        return file, f"{pointer}/content/{_escape(media)}/schema", media


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")
