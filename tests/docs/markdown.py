"""Reading the shell examples of README.md and docs/*.md, for the tests that run them.

Convention (docs/README.md): a fenced ``sh`` block directly after the line
``<!-- runnable -->`` is executed by ``tests/docs/test_runnable.py``; after
``<!-- runnable: server -->`` it is a server (one command, started in the background,
ready once it prints ``ocs: Diameter ... listening on``); a fenced ``text`` block directly
after ``<!-- output -->`` is what the runnable block before it prints: each line must
appear in the output, in order, ``...`` standing for any text. Every ``ocs`` command named
anywhere in the docs (code spans and shell blocks, runnable or not) must be a real
subcommand with real flags.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
MARKER: Final = re.compile(r"^<!--\s*(runnable(?::\s*server)?|output)\s*-->$")
SHELL: Final = frozenset({"sh", "bash", "shell", "console"})
OCS_IN_LINE: Final = re.compile(r"(?:^|[\s;&|(`])(?:\.venv/bin/)?ocs((?:\s+[^\s;&|)`#]+)*)")
CODE_SPAN: Final = re.compile(r"`((?:\.venv/bin/)?ocs [^`]+)`")


def documents() -> list[Path]:
    """README.md first, then docs/*.md by name: the order the runnable blocks run in."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True, slots=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    marker: str | None  # "runnable", "runnable: server", "output" or None
    text: str

    @property
    def where(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{shown}:{self.line}"


def blocks(text: str, path: Path) -> Iterator[Block]:
    """Every fenced block, with the marker on the line before its fence (if any)."""
    lines = text.splitlines()
    i = 0
    previous = ""
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang = line[3:].strip().split()[0] if line[3:].strip() else ""
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            found = MARKER.match(previous.strip())
            marker = re.sub(r"\s+", " ", found.group(1)) if found else None
            yield Block(path, start + 1, lang, marker, "\n".join(body) + "\n")
            previous = ""
        elif line.strip():
            previous = line
        i += 1


def prose(text: str) -> str:
    """The text outside fenced blocks."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside:
            out.append(line)
    return "\n".join(out)


def shell_lines(block: str) -> Iterator[str]:
    """Logical lines of a shell block (backslash continuations joined, comments dropped)."""
    pending = ""
    for raw in block.splitlines():
        line = pending + raw
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        yield re.sub(r"(^|\s)#.*$", "", line)


@dataclass(frozen=True, slots=True)
class Command:
    where: str
    text: str  # as written after "ocs"
    notation: bool  # a code span of the docs' notation: `a|b` are alternatives, [..] optional


def commands(path: Path) -> Iterator[Command]:
    """Every ``ocs`` command the document names: code spans and shell block lines."""
    return commands_in(path.read_text(encoding="utf-8"), path)


def commands_in(text: str, path: Path) -> Iterator[Command]:
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    for number, line in enumerate(prose(text).splitlines(), 1):
        for span in CODE_SPAN.findall(line):
            body = span.split("ocs", 1)[1].replace("\\|", "|")
            yield Command(f"{name} (prose line ~{number})", body, notation=True)
    for block in blocks(text, path):
        if block.lang not in SHELL:
            continue
        for line in shell_lines(block.text):
            for found in OCS_IN_LINE.finditer(line):
                yield Command(block.where, found.group(1), notation=False)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return None


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def check_command(parser: argparse.ArgumentParser, command: Command) -> list[str]:
    """What is wrong with ``command`` (empty: it names a real subcommand and real flags)."""
    words = command.text.split()
    return _check(parser, ["ocs"], words, command.notation)


def _check(
    parser: argparse.ArgumentParser, path: list[str], words: list[str], notation: bool
) -> list[str]:
    subs = _subcommands(parser)
    if subs is not None and words and not words[0].startswith("-"):
        word = words[0].strip("[]")
        names = re.split(r"[|/]", word) if notation else [word]
        problems: list[str] = []
        for name in names:
            if name not in subs:
                known = ", ".join(sorted(subs))
                problems.append(f"`{' '.join(path)} {name}`: no such command (known: {known})")
            else:
                problems += _check(subs[name], [*path, name], words[1:], notation)
        return problems
    problems = []
    for word in words:
        for part in re.split(r"[|\[\]]", word) if notation else [word]:
            flag = part.split("=", 1)[0]
            if flag.startswith("-") and flag not in ("-", "--") and flag not in _flags(parser):
                problems.append(f"`{' '.join(path)}`: no option {flag}")
    return problems
