"""Shared CLI plumbing: building the container, printing, failing with one clear line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from optline.bootstrap import Container, build

console = Console()
err_console = Console(stderr=True)


class CliError(Exception):
    """A user mistake or an expected failure: printed as one line, exit code 1, no traceback."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def container(*, migrate: bool = True) -> Container:
    """The CLI always runs against a migrated database, so every command works on a fresh machine."""
    return build(migrate_db=migrate)


def exit_code(code: int) -> NoReturn:
    raise typer.Exit(code)


def show_import(title: str, outcomes: Iterable[tuple[str, int]], reject_reasons: Counter[str],
                rejected: int, rejects_path: Path | None) -> None:  # fmt: skip
    """An import's outcome table, the reasons rows were rejected, and where the rejected rows went."""
    table = Table("outcome", "rows", title=title)
    for label, value in outcomes:
        table.add_row(label, f"{value:,}")
    console.print(table)
    for reason, count in reject_reasons.most_common():
        console.print(f"  rejected {count:,} × {reason}")
    if rejected:
        console.print(f"rejected rows, with line numbers and reasons: [bold]{rejects_path}[/bold]")
