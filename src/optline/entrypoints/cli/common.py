"""Shared CLI plumbing: building the container, printing, failing with one clear line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from optline.adapters.db import ledger
from optline.bootstrap import Container, build

console = Console()
err_console = Console(stderr=True)


class CliError(Exception):
    """A user mistake or an expected failure: printed as one line, exit code 1, no traceback."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


# Containers this command opened, each with the ledger's newest event id when it was opened.
_opened: list[tuple[Container, int | None]] = []


def container(*, migrate: bool = True) -> Container:
    """The CLI always runs against a migrated database, so every command works on a fresh machine."""
    c = build(migrate_db=migrate)
    with c.db.read() as conn:
        _opened.append((c, ledger.newest_event_id(conn)))
    return c


def seal_ledger() -> None:
    """After a command, record a ledger digest if the command changed the ledger.

    A CLI-only installation runs no worker, so without this no digest would ever be recorded and a
    deleted chain head edited into the projection too would go unnoticed. One digest per command that
    changed consent (not per event: that would serialise every writer on the digest lock).
    """
    while _opened:
        c, mark = _opened.pop()
        try:
            with c.db.transaction() as conn:
                if ledger.newest_event_id(conn) != mark:
                    ledger.record_digest(conn, c.clock.now())
        except Exception as exc:  # the command's own outcome stands; the next command or worker retries
            err_console.print(f"[yellow]warning:[/yellow] could not record a ledger digest: {exc}")
        finally:
            c.close()


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
