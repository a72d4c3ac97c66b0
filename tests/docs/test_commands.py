"""Every ``ocs`` command the docs name (code spans and shell blocks of README.md and
docs/*.md) is a real subcommand, and every flag written after it one of its options
(issue 11: docs/offline.md named `ocs invoice export` and `--credit`, which do not exist)."""

from __future__ import annotations

from pathlib import Path

from ocs.cli import build_parser
from tests.docs.markdown import ROOT, check_command, commands, documents


def test_every_documented_command_exists() -> None:
    parser = build_parser()
    checked = 0
    problems: list[str] = []
    for path in documents():
        for command in commands(path):
            checked += 1
            problems += [f"{command.where}: {p}" for p in check_command(parser, command)]
    assert checked > 50  # the docs name many commands: none found means the reader broke
    assert not problems, "\n".join(problems)


def test_a_wrong_command_is_caught(tmp_path: Path) -> None:
    """The check itself: the mistakes issue 11 found in docs/offline.md are reported."""
    page = ROOT / "docs" / "_probe.md"  # commands() names files relative to the repo
    parser = build_parser()
    text = (
        "`ocs invoice export --format csv`, `ocs invoice adjust N --credit AMOUNT`,\n"
        "`ocs report usage\\|revenue [--by DIMS]`\n\n```sh\nocs catalog sync policies/demo\n```\n"
    )
    try:
        page.write_text(text, encoding="utf-8")
        found = [p for c in commands(page) for p in check_command(parser, c)]
    finally:
        page.unlink()
    assert found == [
        "`ocs invoice export`: no such command (known: adjust)",
        "`ocs invoice adjust`: no option --credit",
        "`ocs catalog sync`: no such command (known: apply, check)",
    ]
