"""``optline contacts import|show``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from optline.domain.phones import InvalidPhoneNumber
from optline.entrypoints.cli.common import console, container, fail, show_import
from optline.services import contacts as contact_service
from optline.services.contacts_import import ImportError_, import_file
from optline.services.programs import require_program

app = typer.Typer(help="Contacts: import lists, look people up.", no_args_is_help=True)


@app.command("import")
def import_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="CSV file"),
    program: str = typer.Option(..., help="program the consent in the file is for"),
    default_region: str = typer.Option(None, help="region for numbers without +country (default US)"),
    rejects: Path = typer.Option(None, help="where to write rejected rows (default FILE.rejects.csv)"),
) -> None:
    """Import contacts (and their consent evidence) from a CSV file; every rejected row is explained."""
    c = container()
    with c.db.read() as conn:
        try:
            prog = require_program(conn, program)
        except LookupError as exc:
            fail(str(exc))
    region = default_region or c.settings.default_region
    columns = (
        TextColumn("importing {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(file.name, total=file.stat().st_size)
        try:
            s = import_file(
                c.db, c.clock, file, prog, default_region=region, rejects_path=rejects,
                on_progress=lambda n: progress.advance(task, n),
            )  # fmt: skip
        except ImportError_ as exc:
            fail(str(exc))
    outcomes = (
        ("rows read", s.rows), ("contacts created", s.created), ("contacts updated", s.updated),
        ("contacts unchanged", s.unchanged), ("consent recorded (opt-in events)", s.consent_recorded),
        ("already subscribed", s.already_subscribed), ("held: opted out, consent not recorded", s.kept_opted_out),
        ("no consent evidence (no marketing)", s.without_consent), ("rejected", s.rejected),
    )  # fmt: skip
    show_import(f"{file.name} → {prog['name']}", outcomes, s.reject_reasons, s.rejected, s.rejects_path)
    for reason, count in s.held_reasons.most_common():
        console.print(f"  held {count:,} × {reason}")
    if s.kept_opted_out:
        console.print(
            f"held rows (contact imported, consent not recorded), with reasons: [bold]{s.rejects_path}[/bold]"
        )


@app.command("show")
def show(phone: str = typer.Argument(..., help="phone number in any common format")) -> None:
    """A contact with its subscriptions and the consent ledger history."""
    c = container()
    with c.db.read() as conn:
        try:
            found = contact_service.show_contact(conn, phone, c.settings.default_region)
        except InvalidPhoneNumber as exc:
            fail(str(exc))
    if found is None:
        fail(f"no contact with phone {phone}")
    console.print(f"[bold]{found['phone']}[/bold]  type {found['number_type']}  tz {found['time_zone'] or '?'}"
                  f"  state {found['us_state'] or '-'}  attributes {found['attributes']}")  # fmt: skip
    subs = Table("program", "status", "held", "since", title="subscriptions")
    for s in found["subscriptions"]:
        subs.add_row(s["program"], s["status"], "yes" if s["held"] else "", str(s["since"]))
    console.print(subs)
    hist = Table("seq", "when", "action", "channel", "scope", "evidence", title="consent ledger")
    for e in found["history"]:
        scope = "brand-wide" if e["program_id"] is None else f"program {e['program_id']}"
        hist.add_row(
            str(e["seq"]), str(e["occurred_at"]), e["action"], e["channel"], scope, str(e["evidence"])
        )
    console.print(hist)
