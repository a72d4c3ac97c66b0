"""The variants of a KoSIT test instance that its ``<?xmute ...?>`` instructions describe
(KoSIT's xmute tool, re-implemented for the mutators the vendored instances use). Each
instruction applies to the next sibling element and makes one variant (``identity``,
``remove``) or one per value (``code``, ``values`` split at ``separator``, default ``,``:
the element's text, or its ``attribute``, set to the value). ``schematron-valid`` names the
rules the variant must pass, ``schematron-invalid`` those it must fail (``xrubl:BR-DE-15``,
several split by spaces or commas)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

MUTATORS = ("identity", "remove", "code")
_PSEUDO_ATTR = re.compile(r'([\w-]+)\s*=\s*"([^"]*)"')


@dataclass(frozen=True, slots=True)
class Variant:
    name: str  # file, instruction id, value
    mutator: str
    xml: bytes
    valid: frozenset[str]
    invalid: frozenset[str]


def _rule_ids(text: str | None, prefix: str) -> frozenset[str]:
    out = set()
    for token in re.split(r"[\s,]+", text or ""):
        if token:
            scheme, _, rule = token.rpartition(":")
            if scheme != prefix:
                raise ValueError(f"rule {token!r}: not of the {prefix} rules")
            out.add(rule)
    return frozenset(out)


def _target(pi: etree._Element) -> etree._Element:
    for sibling in pi.itersiblings():
        if isinstance(sibling.tag, str):
            return sibling
    raise ValueError(f"xmute instruction {pi.text!r} has no element after it")


def variants(path: Path, prefix: str) -> list[Variant]:
    tree = etree.parse(str(path))
    count = len(tree.xpath("//processing-instruction('xmute')"))
    out = []
    for index in range(count):
        pi = tree.xpath("//processing-instruction('xmute')")[index]
        attrs = dict(_PSEUDO_ATTR.findall(pi.text or ""))
        mutator = attrs.get("mutator", "")
        if mutator not in MUTATORS:
            raise ValueError(f"{path.name}: mutator {mutator!r} is not one of {MUTATORS}")
        valid = _rule_ids(attrs.get("schematron-valid"), prefix)
        invalid = _rule_ids(attrs.get("schematron-invalid"), prefix)
        values = [None]
        if mutator == "code":
            values = [v.strip() for v in attrs["values"].split(attrs.get("separator", ","))]
        for value in values:
            mutant = copy.deepcopy(tree)
            target = _target(mutant.xpath("//processing-instruction('xmute')")[index])
            if mutator == "remove":
                parent = target.getparent()
                assert parent is not None
                parent.remove(target)
            elif mutator == "code":
                if "attribute" in attrs:
                    target.set(attrs["attribute"], value or "")
                else:
                    target.text = value
            for other in mutant.xpath("//processing-instruction('xmute')"):
                _drop(other)
            name = f"{path.name}#{attrs.get('id', index)}" + (f"={value}" if value else "")
            out.append(Variant(name, mutator, etree.tostring(mutant), valid, invalid))
    return out


def _drop(node: etree._Element) -> None:
    """Remove ``node`` keeping its tail text."""
    parent = node.getparent()
    if parent is None:  # a processing instruction before the root element
        return
    prev = node.getprevious()
    if node.tail:
        if prev is not None:
            prev.tail = (prev.tail or "") + node.tail
        else:
            parent.text = (parent.text or "") + node.tail
    parent.remove(node)
