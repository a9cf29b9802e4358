"""Every command's ``--help`` reads cleanly: no ``<bool>`` beside a flag, no ``{name}`` for an argument
(Typer 0.29's placeholders, removed in ``entrypoints/cli/help_format.py``), no sentence cut by a line break."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from optline.entrypoints.cli import app

# A single-brace {word} is Typer's argument placeholder; {{ first_name }} is the campaign template syntax.
PLACEHOLDER = re.compile(r"<bool>|(?<!\{)\{[A-Za-z_][\w-]*\}(?!\})")


def _paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _paths(sub, (*path, name))


PATHS = list(_paths(typer.main.get_command(app)))


def _clean(output: str) -> None:
    assert not PLACEHOLDER.findall(output), output
    # A paragraph of the description wrapped where the docstring's source line ended (a short line followed
    # by the rest of its sentence) means Typer printed a hard line break.
    lines = [line.strip() for line in output.splitlines()]
    for line, following in itertools.pairwise(lines):
        if line and following and not line.startswith(("│", "╭", "╰", "Usage")) and following[0].islower():
            assert len(line) > 60, f"a sentence broken after {line!r}:\n{output}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "optline")
def test_every_help_reads_cleanly(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="optline", env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert "Usage: optline" in result.output
    _clean(result.output)


def test_arguments_and_flags_are_named_as_in_unix_manuals() -> None:
    imported = (
        CliRunner()
        .invoke(app, ["contacts", "import", "--help"], prog_name="optline", env={"COLUMNS": "100"})
        .output
    )
    assert "Usage: optline contacts import [OPTIONS] FILE" in imported
    audit = CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "100"}).output
    assert re.search(r"--strict\s+--no-strict\s+exit 1 when there are findings", audit), audit


def test_the_installed_command_too() -> None:
    env = {**os.environ, "COLUMNS": "100"}
    result = subprocess.run(
        [sys.executable, "-m", "optline", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0 and "--version" in result.stdout
    _clean(result.stdout)
