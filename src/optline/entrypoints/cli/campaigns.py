"""``optline campaigns create|lint|audience|schedule|send|pause|resume|cancel|status|list``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optline.domain.dates import parse_datetime
from optline.entrypoints.cli.common import console, container, fail
from optline.services import audience
from optline.services import campaigns as service

app = typer.Typer(help="Campaigns: compose, lint, send and watch.", no_args_is_help=True)

ProgramOpt = typer.Option(..., "--program", "-p", help="the program the campaign belongs to")


def _filters(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--filter {item!r}: use key=value (e.g. --filter us_state=CA --filter tier=gold)")
        values = [v.strip() for v in value.split(",")]
        out[key.strip()] = values if len(values) > 1 else values[0]
    return out


def _campaign(conn: Any, program: str, name: str) -> dict[str, Any]:
    try:
        return service.get(conn, program, name)
    except LookupError as exc:
        fail(str(exc))


@app.command("create")
def create(
    name: str = typer.Argument(..., help="campaign name (unique within the program)"),
    program: str = ProgramOpt,
    template: str = typer.Option(None, "--template", "-t", help="message text (Jinja2: {{ first_name }})"),
    template_file: Path = typer.Option(None, help="read the template from a file"),
    message_type: str = typer.Option("marketing", "--type", help="marketing or transactional"),
    filter_: list[str] = typer.Option([], "--filter", help="audience filter key=value[,value]; repeatable"),
    tag: str = typer.Option(None, help="a tag for reports"),
) -> None:
    """Create a draft campaign."""
    if template_file is not None:
        try:
            template = template_file.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"cannot read {template_file}: {exc.strerror}")
    if not template:
        fail("give the message with --template or --template-file")
    c = container()
    with c.db.transaction() as conn:
        try:
            row = service.create(conn, c.clock, program=program, name=name, template=template,
                                 message_type=message_type, audience_filter=_filters(filter_), tag=tag)  # fmt: skip
        except (LookupError, ValueError) as exc:
            fail(str(exc))
    console.print(f"created campaign [bold]{row['name']}[/bold] (id {row['id']}, draft)")


def _print_lint(result: Any) -> None:
    for f in result.findings:
        colour = "red" if f.level == "error" else "yellow"
        console.print(f"[{colour}]{f.level}[/{colour}] {f.code}: {f.message}")
    if result.segments is not None:
        from optline.domain.segments import describe

        console.print(f"estimate: {describe(result.segments)}")
    if not result.findings:
        console.print("[green]no findings[/green]")


@app.command("lint")
def lint(name: str, program: str = ProgramOpt,
         at: str = typer.Option(None, help="planned send time (ISO 8601); default: the schedule or now")) -> None:  # fmt: skip
    """Check a campaign: errors block sending, warnings are shown. Exit 1 on errors."""
    c = container()
    with c.db.read() as conn:
        campaign = _campaign(conn, program, name)
        result = service.lint(conn, c.clock, campaign, parse_datetime(at) if at else None)
    _print_lint(result)
    if result.errors:
        raise typer.Exit(1)


@app.command("audience")
def audience_(name: str, program: str = ProgramOpt) -> None:
    """Dry run: how many would receive the campaign, and how many are excluded for each reason."""
    c = container()
    with c.db.read() as conn:
        campaign = _campaign(conn, program, name)
        dry = _dry_run(conn, campaign)
    _print_dry_run(dry)


def _dry_run(conn: Any, campaign: dict[str, Any]) -> audience.DryRun:
    try:
        return audience.dry_run(conn, campaign["program_id"], campaign["audience_filter"])
    except audience.FilterError as exc:
        fail(f"campaign {campaign['name']!r}: {exc}")


def _print_dry_run(dry: audience.DryRun) -> None:
    table = Table("", "contacts")
    table.add_row("[bold]recipients[/bold]", f"{dry.recipients:,}")
    for reason, n in dry.excluded.items():
        table.add_row(f"excluded: {reason.replace('_', ' ')}", f"{n:,}")
    console.print(table)


@app.command("schedule")
def schedule(name: str, program: str = ProgramOpt,
             at: str = typer.Option(..., help="when to start (ISO 8601, e.g. 2026-12-01T15:00:00Z)")) -> None:  # fmt: skip
    """Queue the audience now, to be sent from ``--at`` by the workers."""
    when = parse_datetime(at)
    c = container()
    with c.db.transaction() as conn:
        campaign = _campaign(conn, program, name)
        try:
            row, queued = service.start(conn, c.clock, campaign, at=when)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"scheduled [bold]{row['name']}[/bold]: {queued:,} messages from {when:%Y-%m-%d %H:%M} UTC")


@app.command("send")
def send(
    name: str,
    program: str = ProgramOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="show the audience and lint, queue nothing"),
    dispatch: bool = typer.Option(True, help="dispatch in this process (--no-dispatch: leave it to workers)"),
    wait: bool = typer.Option(True, help="show progress until nothing is left to send now"),
) -> None:
    """Lint, queue the audience and send, with a live progress bar."""
    c = container()
    with c.db.transaction() as conn:
        campaign = _campaign(conn, program, name)
        if dry_run:
            _print_lint(service.lint(conn, c.clock, campaign))
            _print_dry_run(_dry_run(conn, campaign))
            return
        if campaign["status"] in ("draft", "scheduled"):
            try:
                campaign, queued = service.start(conn, c.clock, campaign)
            except ValueError as exc:
                fail(str(exc))
            console.print(f"queued {queued:,} messages")
        elif campaign["status"] not in ("sending",):
            fail(f"campaign {name!r} is {campaign['status']}")
    if not wait:
        return
    stop = threading.Event()
    thread = None
    if dispatch:
        from optline.entrypoints.worker import run

        thread = threading.Thread(target=run, args=(c, stop), kwargs={"once": False}, daemon=True)
        thread.start()
    try:
        final = _watch(c, campaign)
    finally:
        stop.set()
        if thread:
            thread.join(timeout=60)
    counts = final.counts
    console.print(
        f"[bold]{campaign['name']}[/bold]: sent {counts.get('sent', 0) + counts.get('delivered', 0):,}, "
        f"suppressed {counts.get('suppressed', 0):,}, deferred {counts.get('deferred', 0):,}, "
        f"skipped {counts.get('skipped', 0):,}, failed {counts.get('failed', 0):,}"
    )


def _watch(c: Any, campaign: dict[str, Any]) -> service.Status:
    """The live progress bar: done = everything not queued, claimed or sending."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, refresh_per_second=4) as progress:
        task = progress.add_task(campaign["name"], total=None, detail="")
        while True:
            with c.db.read() as conn:
                st = service.status(conn, campaign)
            n = st.counts
            detail = (f"sent {n.get('sent', 0) + n.get('delivered', 0):,}  suppressed {n.get('suppressed', 0):,}  "
                      f"deferred {n.get('deferred', 0):,}  failed {n.get('failed', 0):,}")  # fmt: skip
            progress.update(task, total=st.total, completed=st.total - st.remaining, detail=detail)
            if st.remaining == 0 or st.campaign["status"] in ("paused", "cancelled", "done"):
                return st
            time.sleep(0.25)


def _simple(action: str) -> Any:
    def command(name: str, program: str = ProgramOpt) -> None:
        c = container()
        with c.db.transaction() as conn:
            campaign = _campaign(conn, program, name)
            try:
                if action == "cancel":
                    row, n = service.cancel(conn, c.clock, campaign)
                    console.print(f"cancelled [bold]{row['name']}[/bold]: {n:,} messages will not be sent")
                    return
                row = service.pause(conn, campaign) if action == "pause" else service.resume(conn, campaign)
            except ValueError as exc:
                fail(str(exc))
        console.print(f"{row['name']}: {row['status']}")

    command.__doc__ = {"pause": "Stop claiming this campaign's messages.", "resume": "Continue a paused campaign.",
                       "cancel": "Cancel: nothing not yet handed over is sent."}[action]  # fmt: skip
    return command


for _action in ("pause", "resume", "cancel"):
    app.command(_action)(_simple(_action))


@app.command("status")
def status(name: str, program: str = ProgramOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Message counts per status."""
    c = container()
    with c.db.read() as conn:
        st = service.status(conn, _campaign(conn, program, name))
    if as_json:
        console.print_json(json.dumps({"status": st.campaign["status"], "counts": st.counts}))
        return
    table = Table("status", "messages", title=f"{st.campaign['name']} ({st.campaign['status']})")
    for key in sorted(st.counts):
        table.add_row(key, f"{st.counts[key]:,}")
    console.print(table)


@app.command("list")
def list_(program: str = typer.Option(None, "--program", "-p")) -> None:
    """List campaigns."""
    c = container()
    with c.db.read() as conn:
        try:
            rows = service.list_all(conn, program)
        except LookupError as exc:
            fail(str(exc))
    table = Table("id", "name", "program id", "type", "status", "created")
    for r in rows:
        table.add_row(str(r["id"]), r["name"], str(r["program_id"]), r["message_type"], r["status"],
                      f"{r['created_at']:%Y-%m-%d %H:%M}")  # fmt: skip
    console.print(table)
