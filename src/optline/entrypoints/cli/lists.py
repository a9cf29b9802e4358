"""``optline dnc import`` and ``optline reassigned import``: outside number lists the audit checks against."""

from __future__ import annotations

from pathlib import Path

import typer

from optline.entrypoints.cli.common import container, fail, show_import
from optline.services import number_lists

dnc_app = typer.Typer(help="The National Do-Not-Call list.", no_args_is_help=True)
reassigned_app = typer.Typer(help="FCC Reassigned Numbers Database results.", no_args_is_help=True)

FILE = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="text or CSV file")


def _show(title: str, s: number_lists.ListImportSummary) -> None:
    outcomes = (
        ("rows read", s.rows),
        ("added", s.added),
        ("already known", s.already_known),
        ("rejected", s.rejected),
    )
    show_import(title, outcomes, s.reject_reasons, s.rejected, s.rejects_path)


@dnc_app.command("import")
def dnc_import(
    file: Path = FILE,
    source: str = typer.Option(None, help="where the list comes from (default: the file name)"),
    rejects: Path = typer.Option(None, help="where to write rejected rows (default FILE.rejects.csv)"),
) -> None:
    """Import Do-Not-Call numbers: one per line, 'area code,number' pairs, or a CSV with a phone column."""
    c = container()
    try:
        s = number_lists.import_dnc(
            c.db, c.clock, file, source=source, default_region=c.settings.default_region, rejects_path=rejects
        )
    except number_lists.ListImportError as exc:
        fail(str(exc))
    _show(f"{file.name} → Do-Not-Call list", s)


@reassigned_app.command("import")
def reassigned_import(
    file: Path = FILE,
    source: str = typer.Option(None, help="where the results come from (default: the file name)"),
    rejects: Path = typer.Option(None, help="where to write rejected rows (default FILE.rejects.csv)"),
) -> None:
    """Import FCC Reassigned Numbers Database results: 'number, disconnect date' per line."""
    c = container()
    try:
        s = number_lists.import_reassigned(
            c.db, c.clock, file, source=source, default_region=c.settings.default_region, rejects_path=rejects
        )
    except number_lists.ListImportError as exc:
        fail(str(exc))
    _show(f"{file.name} → reassigned numbers", s)
