"""Shared CLI plumbing: building the container, printing, failing with one clear line."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

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
