"""Shared CLI plumbing: building the container, printing, failing with one clear line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from optline.adapters.db.database import is_initialised, make_engine, sqlite_path
from optline.bootstrap import Container, build
from optline.config import get_settings

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one error = one line, whatever the width


class CliError(Exception):
    """A user mistake or an expected failure: printed as one line, exit code 1, no traceback."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


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
    return build(migrate_db=True)


def _initialised(url: str) -> bool:
    engine = make_engine(url)
    try:
        return is_initialised(engine)
    finally:
        engine.dispose()


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 message``, ``2 messages``, ``1,000 digests`` — one place for counted nouns."""
    return f"{n:,} {noun if n == 1 else (nouns or noun + 's')}"


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
