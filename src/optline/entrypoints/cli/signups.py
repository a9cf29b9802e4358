"""``optline signups list|expire`` and ``optline programs disclosure NAME``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from optline.adapters.db import signups as signup_repo
from optline.entrypoints.cli.common import console, container, fail, plural
from optline.services import signup as service
from optline.services.programs import require_program

app = typer.Typer(help="Sign-ups: double opt-ins waiting for their YES.", no_args_is_help=True)

STATUSES = ("pending", "confirmed", "expired", "cancelled")


@app.command("list")
def list_(
    program: str = typer.Option(None, help="only this program"),
    status: str = typer.Option(None, help="pending, confirmed, expired or cancelled"),
    limit: int = typer.Option(50, min=1, max=10000, help="newest first, at most this many"),
) -> None:
    """Sign-ups, newest first."""
    if status and status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}, not {status!r}")
    c = container()
    with c.db.read() as conn:
        program_id = None
        if program:
            try:
                program_id = require_program(conn, program)["id"]
            except LookupError as exc:
                fail(str(exc))
        rows = signup_repo.listing(conn, program_id=program_id, status=status, limit=limit)
    table = Table("id", "program", "channel", "status", "started", "expires", "confirmed/closed")
    # A phone number cut or wrapped at 80 columns is a wrong number: it never folds, other columns do.
    table.add_column("phone", no_wrap=True, min_width=16)
    table.columns.insert(1, table.columns.pop())
    for r in rows:
        closed = r["confirmed_at"] or r["expired_at"] or r["cancelled_at"]
        table.add_row(
            str(r["id"]),
            r["phone"],
            r["program"],
            r["channel"],
            r["status"],
            f"{r['started_at']:%Y-%m-%d %H:%M}",
            f"{r['expires_at']:%Y-%m-%d %H:%M}",
            f"{closed:%Y-%m-%d %H:%M}" if closed else "",
        )
    console.print(table)


@app.command("expire")
def expire() -> None:
    """Expire pending sign-ups whose confirmation window has passed (the worker also does this)."""
    c = container()
    total = 0
    while True:  # in batches, each its own transaction
        with c.db.transaction() as conn:
            n = service.expire_due(conn, c.clock, limit=1000)
        total += n
        if n < 1000:
            break
    console.print(f"expired {plural(total, 'unconfirmed sign-up')}; nothing was sent to them")


def disclosure(
    name: str = typer.Argument(..., help="program name"),
    text: str = typer.Option(None, help="the new disclosure text (creates a new version)"),
    file: Path = typer.Option(None, exists=True, dir_okay=False, help="read the new disclosure from a file"),
    default: bool = typer.Option(False, "--default", help="go back to the text composed from the program"),
    window_hours: float = typer.Option(None, help="how long a double opt-in waits for the YES (default 24)"),
) -> None:
    """Show a program's sign-up disclosure and its versions, or set a new one (never edits an old one)."""
    if sum(x is not None and x is not False for x in (text, file, default)) > 1:
        fail("give only one of --text, --file, --default")
    new_text = file.read_text(encoding="utf-8") if file else text
    c = container()
    with c.db.transaction() as conn:
        try:
            program = require_program(conn, name)
            if window_hours is not None:
                program = service.set_window(conn, program, window_hours)
            if new_text is not None or default:
                version, created = service.set_disclosure(conn, c.clock, program, new_text)
            else:
                version, created = service.current_disclosure(conn, c.clock, program), False
            versions = signup_repo.disclosures_of(conn, program["id"])
        except (LookupError, service.SignupError) as exc:
            fail(str(exc))
    table = Table("version", "created", "kind", "text", title=f"disclosure of {program['name']}")
    for v in versions:
        table.add_row(
            str(v["version"]),
            f"{v['created_at']:%Y-%m-%d %H:%M}",
            "custom" if v["custom"] else "default",
            v["text"],
        )
    console.print(table)
    hours = service.window(program).total_seconds() / 3600
    state = "new version" if created else "current version"
    console.print(f"{state} [bold]{version['version']}[/bold]; confirmation window {hours:g} h")
