"""Every ``ocs`` command the docs name (code spans and shell blocks of README.md and
docs/*.md) is a real subcommand, and every flag written after it one of its options
(issue 11: docs/offline.md named `ocs invoice export` and `--credit`, which do not exist)."""

from __future__ import annotations

from pathlib import Path

from ocs.cli import build_parser
from tests.docs.markdown import check_command, commands, commands_in, documents


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


def test_a_wrong_command_is_caught() -> None:
    """The check itself: a command that does not exist (in a code span or a shell block) and
    a flag a command does not have are reported; the docs' notation (`a|b`, `[--flag X]`)
    is understood."""
    text = (
        "`ocs invoice void --number 1`, `ocs invoice adjust N --credit AMOUNT`,\n"
        "`ocs report usage\\|revenue [--by DIMS]`\n\n```sh\nocs catalog sync policies/demo\n```\n"
    )
    parser = build_parser()
    found = [p for c in commands_in(text, Path("probe.md")) for p in check_command(parser, c)]
    assert found == [
        "`ocs invoice void`: no such command (known: adjust, export)",
        "`ocs invoice adjust`: no option --credit",
        "`ocs catalog sync`: no such command (known: apply, check)",
    ]
