"""``optline contacts import|show``."""

from __future__ import annotations

import getpass
import json
from datetime import datetime
from pathlib import Path
from typing import Any

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

from optline.adapters.clock import as_utc
from optline.domain.phones import InvalidPhoneNumber
from optline.entrypoints.cli.common import console, container, fail, show_import
from optline.services import contacts as contact_service
from optline.services import imports
from optline.services.contacts_import import ImportError_
from optline.services.programs import require_program

app = typer.Typer(help="Contacts: import lists, look people up.", no_args_is_help=True)


@app.command("import")
def import_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="CSV file"),
    program: str = typer.Option(..., help="program the consent in the file is for"),
    default_region: str = typer.Option(None, help="region for numbers without +country (default US)"),
    rejects: Path = typer.Option(None, help="where to write rejected rows (default FILE.rejects.csv)"),
    encoding: str = typer.Option(
        None, help="encoding of a file without a byte-order mark, e.g. cp1252 (default: UTF-8; a BOM decides)"
    ),
) -> None:
    """Import contacts (and their consent evidence) from a CSV file; every rejected row is explained.

    The whole file is read before anything is stored: an unreadable file (wrong encoding, binary data) is refused with its line and changes nothing.

    Every import is recorded: its results and rejected rows are on the dashboard's Imports page."""
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
    import_id = imports.start(c.db, c.clock, prog, file_name=file.name, source="cli", imported_by=_who())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(file.name, total=file.stat().st_size)
        try:
            s = imports.run(
                c.db,
                c.clock,
                import_id,
                file,
                prog,
                default_region=region,
                rejects_path=rejects,
                on_progress=lambda n: progress.advance(task, n),
                encoding=encoding,
            )
        except ImportError_ as exc:
            fail(f"{file.name}: {exc}")
    counts = imports.counts(s)
    outcomes = [(label, counts[key]) for key, label in imports.OUTCOMES]
    show_import(f"{file.name} → {prog['name']}", outcomes, s.reject_reasons, s.rejected, s.rejects_path)
    for note in s.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"on the dashboard: /dashboard/imports/{import_id}", highlight=False)
    for reason, count in s.held_reasons.most_common():
        console.print(f"  held {count:,} × {reason}")
    if s.kept_opted_out:
        console.print(
            f"held rows (contact imported, consent not recorded), with reasons: [bold]{s.rejects_path}[/bold]"
        )


def _who() -> str:
    """Who ran the import, for its record: the system user (the CLI has no dashboard login)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or the password database
        return "unknown"


@app.command("show")
def show(
    phone: str = typer.Argument(..., help="phone number in any common format"),
    fmt: str = typer.Option("table", "--format", help="table (to read) or json (for machines)"),
    limit: int = typer.Option(100, min=1, max=10000, help="at most this many timeline entries, newest kept"),
) -> None:
    """A contact: subscriptions by program, and the consent ledger and every message in and out, in order."""
    # Imported here: the dashboard's queries pull in the reply classifier (its lexicons load at import).
    from optline.services.dashboard import contact_timeline

    if fmt not in ("table", "json"):
        fail(f"--format must be table or json, not {fmt!r}")
    c = container()
    with c.db.read() as conn:
        try:
            found = contact_service.show_contact(conn, phone, c.settings.default_region)
        except InvalidPhoneNumber as exc:
            fail(str(exc))
        if found is None:
            fail(f"no contact with phone {phone}")
        timeline = list(reversed(contact_timeline(conn, found["id"], limit=limit)))  # oldest first
    if fmt == "json":
        print(json.dumps(_as_json(found, timeline), ensure_ascii=False, indent=2, default=_json_value))
        return
    attributes = ", ".join(f"{k}={v}" for k, v in sorted((found["attributes"] or {}).items())) or "none"
    console.print(
        f"[bold]{found['phone']}[/bold]  {found['number_type'].replace('_', ' ')}, "
        f"time zone {found['time_zone'] or 'unknown'}, state {found['us_state'] or '-'}"
    )
    console.print(f"attributes: {attributes}", highlight=False)
    subs = Table("program", "status", "held for review", "since", title="subscriptions")
    for s in found["subscriptions"]:
        subs.add_row(s["program"], s["status"], "yes" if s["held"] else "", when(s["since"]))
    console.print(subs)
    table = Table("when", "what", "program", "details", title="consent and messages, oldest first")
    for item in timeline:
        table.add_row(when(item["at"]), *_describe(item))
    console.print(table)


def when(value: datetime | None) -> str:
    """One time format everywhere in this view, with its zone."""
    return f"{as_utc(value):%Y-%m-%d %H:%M} UTC" if value else "-"


def _describe(item: dict[str, Any]) -> tuple[str, str, str]:
    row, program = item["row"], item["program"] or ""
    if item["kind"] == "consent":
        scope = "all programs of the brand" if row["program_id"] is None else program
        evidence = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in (row["evidence"] or {}).items())
        return f"{row['action'].replace('_', ' ')} via {row['channel'].replace('_', ' ')}", scope, evidence
    if item["kind"] == "out":
        what = f"→ {row['kind']} message {row['status']}"
        detail = row["body"] if not row.get("reason") else f"{row['body']}  ({row['reason']})"
        campaign = row.get("campaign")
        return what, f"{program} · {campaign}" if campaign else program, detail
    review = ", held for review" if row["review"] else ""
    return f"← reply read as {row['intent']}{review}", program, row["body"]


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return str(value)


def _as_json(found: dict[str, Any], timeline: list[dict[str, Any]]) -> dict[str, Any]:
    contact = {
        k: found[k] for k in ("id", "phone", "number_type", "time_zone", "us_state", "region", "attributes")
    }
    return {
        "contact": contact,
        "subscriptions": [
            {"program": s["program"], "status": s["status"], "held": bool(s["held"]), "since": s["since"]}
            for s in found["subscriptions"]
        ],
        "timeline": [
            {"at": item["at"], "kind": item["kind"], "program": item["program"], **_public(item)}
            for item in timeline
        ],
    }


def _public(item: dict[str, Any]) -> dict[str, Any]:
    row = item["row"]
    keys: tuple[str, ...]
    if item["kind"] == "consent":
        keys = ("id", "seq", "action", "channel", "evidence", "hash")
    elif item["kind"] == "out":
        keys = ("id", "message_kind", "status", "reason", "body", "from_phone", "campaign", "consent_event_id",
                "provider", "provider_message_id", "handed_over_at", "delivered_at")  # fmt: skip
    else:
        keys = ("id", "body", "intent", "confidence", "language", "review", "consent_event_id", "to_phone")
    row = {**row, "message_kind": row.get("kind")}  # "kind" names the timeline entry (consent, in, out)
    return {k: row.get(k) for k in keys}
