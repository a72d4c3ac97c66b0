"""A small ISO Schematron -> XSLT compiler for the rules the tests run (the KoSIT XRechnung
Schematron, vendored in ``tests/offline/xrechnung/``), for query binding ``xslt2``, and the
SVRL it produces read back. No registry here ships such a compiler (SchXslt is on Maven
only; the only ``pyschematron`` the package index here serves, 0.1.0, is an empty
placeholder), so it is written out here, in the way SchXslt compiles:

* ``sch:include`` replaced by the element its ``href`` points at (recursively);
* the phase: the schema's ``defaultPhase`` or the one asked for, else ``#ALL``; every active
  pattern runs over the whole document in a mode of its own;
* in a pattern the rules are templates of that mode in document order, each a lower
  priority than the one before, so the first rule whose context matches a node wins and a
  node is checked by at most one rule of a pattern (the Schematron semantics); after a rule
  (or none) the pattern goes on with the node's attributes and child elements;
* ``sch:let`` of the schema and of a pattern become global variables (a rule context may
  name them in a predicate), of a rule local variables before its checks;
* ``sch:assert`` reports ``svrl:failed-assert`` when its test is false, ``sch:report``
  ``svrl:successful-report`` when true, both with ``id``, ``flag``, ``role``, ``test`` and
  the node's ``path()``; the message keeps its text, ``sch:name`` (the node's name) and
  ``sch:value-of`` (the value of ``select``);
* ``sch:ns`` become namespace declarations; ``xsl:*`` children of the schema (functions,
  keys) are copied into the stylesheet.

Abstract patterns and rules, ``sch:extends``, diagnostics and ``sch:param`` are refused
with an error naming them (the vendored rules use none of them), so nothing is silently
compiled wrong. ``tests/offline/test_xrechnung.py`` proves the compiler against the KoSIT
test instances (their ``xmute`` instructions name the rules each variant must pass or
fail)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

SCH = "http://purl.oclc.org/dsdl/schematron"
XSL = "http://www.w3.org/1999/XSL/Transform"
SVRL = "http://purl.oclc.org/dsdl/svrl"
UNSUPPORTED = ("extends", "diagnostics", "diagnostic", "param")


class SchematronError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Finding:
    """One ``failed-assert`` (``kind`` assert) or ``successful-report`` (report)."""

    kind: str
    id: str
    flag: str
    location: str
    text: str


def _sch(name: str) -> str:
    return f"{{{SCH}}}{name}"


def _xsl(parent: etree._Element, tag: str, /, **attrs: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{XSL}}}{tag}", attrs)


def _resolve_includes(el: etree._Element, base: Path, depth: int = 0) -> None:
    if depth > 10:
        raise SchematronError(f"{base}: includes nested more than 10 deep")
    for inc in list(el.iter(_sch("include"))):
        href = inc.get("href")
        if not href or "#" in href:
            raise SchematronError(f"{base}: include without a plain href ({href!r})")
        path = (base.parent / href).resolve()
        included = etree.parse(str(path)).getroot()
        _resolve_includes(included, path, depth + 1)
        parent = inc.getparent()
        assert parent is not None
        parent.replace(inc, included)


def _namespaces(schema: etree._Element) -> dict[str, str]:
    """Every prefix the rules may use: the schema's ``sch:ns`` and the namespaces in scope
    of any element of it (``xsl:function`` names such as ``u:decimalOrZero``)."""
    out: dict[str, str] = {}
    for el in schema.iter():
        if not isinstance(el.tag, str):
            continue
        for prefix, uri in el.nsmap.items():
            if prefix and uri not in (SCH, XSL):
                out.setdefault(prefix, uri)
    for ns in schema.iter(_sch("ns")):
        prefix, uri = ns.get("prefix"), ns.get("uri")
        if not prefix or uri is None:
            raise SchematronError("sch:ns without prefix or uri")
        out[prefix] = uri
    return out


def _active_patterns(schema: etree._Element, phase: str | None) -> list[etree._Element]:
    patterns = list(schema.iter(_sch("pattern")))
    for p in patterns:
        if p.get("abstract") == "true" or p.get("is-a"):
            raise SchematronError(f"abstract pattern {p.get('id')!r}: not supported")
    wanted = phase or schema.get("defaultPhase") or "#ALL"
    if wanted == "#ALL":
        return patterns
    phases = {ph.get("id"): ph for ph in schema.iter(_sch("phase"))}
    if wanted not in phases:
        raise SchematronError(f"phase {wanted!r} not in the schema ({sorted(phases)})")
    ids = [a.get("pattern") for a in phases[wanted].iter(_sch("active"))]
    by_id = {p.get("id"): p for p in patterns}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise SchematronError(f"phase {wanted!r} names unknown patterns {missing}")
    return [by_id[i] for i in ids]


def _message(target: etree._Element, check: etree._Element) -> None:
    """The assertion's text into ``svrl:text``: text, ``sch:name``, ``sch:value-of``, and
    the text of ``sch:emph``/``sch:dir``/``sch:span``."""
    text = etree.SubElement(target, f"{{{SVRL}}}text")
    _xsl_text(text, check.text)
    for child in check:
        if not isinstance(child.tag, str):
            _xsl_text(text, child.tail)
            continue
        local = etree.QName(child).localname
        if child.tag == _sch("name"):
            path = child.get("path")
            _xsl(text, "value-of", select=f"name({path})" if path else "name(.)")
        elif child.tag == _sch("value-of"):
            _xsl(text, "value-of", select=child.get("select") or ".")
        elif etree.QName(child).namespace == SCH and local in ("emph", "dir", "span"):
            _xsl_text(text, "".join(child.itertext()))
        else:
            raise SchematronError(f"unsupported element {child.tag} in an assertion")
        _xsl_text(text, child.tail)


def _xsl_text(parent: etree._Element, value: str | None) -> None:
    if value:
        _xsl(parent, "text").text = value


def _check(template: etree._Element, check: etree._Element) -> None:
    is_assert = check.tag == _sch("assert")
    test = check.get("test")
    if not test:
        raise SchematronError(f"{etree.QName(check).localname} {check.get('id')!r} has no test")
    cond = _xsl(template, "if", test=f"not({test})" if is_assert else test)
    out = etree.SubElement(
        cond, f"{{{SVRL}}}{'failed-assert' if is_assert else 'successful-report'}", test=test
    )
    for attr in ("id", "flag", "role"):
        if check.get(attr) is not None:
            out.set(attr, check.get(attr) or "")
    _xsl(out, "attribute", name="location", select="path(.)")
    _message(out, check)


def compile_schematron(path: Path, phase: str | None = None) -> bytes:
    """The XSLT 2.0 stylesheet of the Schematron schema at ``path``; its output is SVRL."""
    schema = etree.parse(str(path)).getroot()
    if schema.tag != _sch("schema"):
        raise SchematronError(f"{path}: not an ISO Schematron schema")
    binding = schema.get("queryBinding", "xslt")
    if binding not in ("xslt2", "xslt3"):
        raise SchematronError(f"{path}: query binding {binding!r} (xslt2 or xslt3 only)")
    _resolve_includes(schema, path.resolve())
    for name in UNSUPPORTED:
        found = next(schema.iter(_sch(name)), None)
        if found is not None:
            raise SchematronError(f"{path}: sch:{name} is not supported")
    nsmap: Any = {"xsl": XSL, "svrl": SVRL, "xs": "http://www.w3.org/2001/XMLSchema"}
    nsmap |= _namespaces(schema)
    out = etree.Element(f"{{{XSL}}}stylesheet", nsmap=nsmap, version="2.0")
    _xsl(out, "output", method="xml", indent="no")
    for child in schema:  # xsl:function, xsl:key, ... as they are
        if isinstance(child.tag, str) and etree.QName(child).namespace == XSL:
            out.append(_copy(child))
    patterns = _active_patterns(schema, phase)
    for let in schema.findall(_sch("let")):
        _variable(out, let)
    for pattern in patterns:
        for let in pattern.findall(_sch("let")):
            _variable(out, let)
    root = _xsl(out, "template", match="/")
    report = etree.SubElement(root, f"{{{SVRL}}}schematron-output", schemaVersion="")
    report.set("title", " ".join("".join(schema.findtext(_sch("title")) or "").split()))
    for prefix, uri in nsmap.items():
        etree.SubElement(report, f"{{{SVRL}}}ns-prefix-in-attribute-values", prefix=prefix, uri=uri)
    for n, pattern in enumerate(patterns):
        mode = f"pattern-{n}"
        etree.SubElement(
            report, f"{{{SVRL}}}active-pattern", id=pattern.get("id") or mode, name=mode
        )
        _xsl(report, "apply-templates", select="/", mode=mode)
        _pattern(out, pattern, mode)
    return bytes(etree.tostring(out, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _copy(el: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(el))


def _variable(parent: etree._Element, let: etree._Element) -> None:
    name, value = let.get("name"), let.get("value")
    if not name or value is None:
        raise SchematronError(f"sch:let {name!r}: only lets with a value attribute are supported")
    _xsl(parent, "variable", name=name, select=value)


def _pattern(out: etree._Element, pattern: etree._Element, mode: str) -> None:
    rules = pattern.findall(_sch("rule"))
    for n, rule in enumerate(rules):
        if rule.get("abstract") == "true":
            raise SchematronError(f"abstract rule {rule.get('id')!r}: not supported")
        context = rule.get("context")
        if not context:
            raise SchematronError(f"pattern {pattern.get('id')!r}: a rule without context")
        template = _xsl(
            out, "template", match=context, mode=mode, priority=str(1000 + len(rules) - n)
        )
        fired = etree.SubElement(template, f"{{{SVRL}}}fired-rule", context=context)
        if rule.get("id"):
            fired.set("id", rule.get("id") or "")
        for let in rule.findall(_sch("let")):
            _variable(template, let)
        for check in rule:
            if check.tag in (_sch("assert"), _sch("report")):
                _check(template, check)
        _xsl(template, "apply-templates", select="@*|*", mode=mode)
    # nodes no rule matches: go on into their attributes and children; text says nothing
    _xsl(out, "template", match="text()", mode=mode, priority="-1")
    walk = _xsl(out, "template", match="/|@*|node()", mode=mode, priority="-2")
    _xsl(walk, "apply-templates", select="@*|*", mode=mode)


def read_svrl(svrl: bytes) -> tuple[list[Finding], int]:
    """The findings of an SVRL report and how many rules fired."""
    report = etree.fromstring(svrl)
    out = []
    for el in report.iter(f"{{{SVRL}}}failed-assert", f"{{{SVRL}}}successful-report"):
        kind = "assert" if etree.QName(el).localname == "failed-assert" else "report"
        text = " ".join("".join(el.itertext()).split())
        out.append(
            Finding(kind, el.get("id", ""), el.get("flag", ""), el.get("location", ""), text)
        )
    return out, sum(1 for _ in report.iter(f"{{{SVRL}}}fired-rule"))


class Validator:
    """A compiled schema, run with saxonche (Saxon's XSLT 3.0 processor, which runs XSLT
    2.0 stylesheets)."""

    def __init__(self, path: Path, phase: str | None = None) -> None:
        from saxonche import PySaxonProcessor

        self.xslt = compile_schematron(path, phase)
        self._proc = PySaxonProcessor(license=False)
        compiler = self._proc.new_xslt30_processor()
        self._exe = compiler.compile_stylesheet(stylesheet_text=self.xslt.decode("utf-8"))
        if self._exe is None:
            raise SchematronError(f"{path}: the compiled stylesheet did not compile")

    def run(self, xml: bytes) -> tuple[list[Finding], int]:
        node = self._proc.parse_xml(xml_text=xml.decode("utf-8"))
        self._exe.set_global_context_item(xdm_item=node)
        svrl = self._exe.transform_to_string(xdm_node=node)
        return read_svrl(svrl.encode("utf-8"))
