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
from optline.adapters.db.database import is_initialised, make_engine, sqlite_path
from optline.bootstrap import Container, build
from optline.config import get_settings

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one error = one line, whatever the width


class CliError(Exception):
    """A user mistake or an expected failure: printed as one line, exit code 1, no traceback."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


# Containers this command opened, each with the ledger's newest event id when it was opened.
_opened: list[tuple[Container, int | None]] = []


def container(*, create: bool = False) -> Container:
    """The container over a migrated database. Only ``init`` and ``serve`` (``create=True``) may create one:
    any other command on a missing database would leave an empty ``optline.db`` wherever it was typed."""
    url = get_settings().database_url
    path = sqlite_path(url)
    if create:
        if path is not None and not path.parent.is_dir():
            fail(f"cannot create the SQLite database {path}: the folder {path.parent} does not exist")
    elif path is not None and not path.exists():
        fail(f"no database at {path} — run `optline init` first (or set OPTLINE_DATABASE_URL)")
    elif not _initialised(url):
        where = path or "OPTLINE_DATABASE_URL"
        fail(f"the database at {where} has no optline schema — run `optline init` first")
    c = build(migrate_db=True)
    with c.db.read() as conn:
        _opened.append((c, ledger.newest_event_id(conn)))
    return c


def _initialised(url: str) -> bool:
    engine = make_engine(url)
    try:
        return is_initialised(engine)
    finally:
        engine.dispose()


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 message``, ``2 messages``, ``1,000 digests`` — one place for counted nouns."""
    return f"{n:,} {noun if n == 1 else (nouns or noun + 's')}"


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


def show_import(
    title: str,
    outcomes: Iterable[tuple[str, int]],
    reject_reasons: Counter[str],
    rejected: int,
    rejects_path: Path | None,
) -> None:
    """An import's outcome table, the reasons rows were rejected, and where the rejected rows went."""
    table = Table("outcome", "rows", title=title)
    for label, value in outcomes:
        table.add_row(label, f"{value:,}")
    console.print(table)
    for reason, count in reject_reasons.most_common():
        console.print(f"  rejected {count:,} × {reason}")
    if rejected:
        console.print(f"rejected rows, with line numbers and reasons: [bold]{rejects_path}[/bold]")
