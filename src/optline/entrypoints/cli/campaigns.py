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

from optline.domain.dates import WHEN_FORMATS, local_zone, parse_when
from optline.entrypoints.cli.common import console, container, fail, plural
from optline.services import audience
from optline.services import campaigns as service

app = typer.Typer(help="Campaigns: compose, lint, send and watch.", no_args_is_help=True)

ProgramOpt = typer.Option(..., "--program", "-p", help="the program the campaign belongs to")
TzOpt = typer.Option(
    None,
    "--tz",
    help="your time zone for times without one (IANA, e.g. America/New_York; default: this machine's)",
)


def _when(text: str, tz: str | None, now: Any) -> Any:
    try:
        return parse_when(text, now, local_zone(tz))
    except ValueError as exc:
        fail(f"--at: {exc}")


def _both_zones(when: Any, tz: str | None) -> str:
    zone = local_zone(tz)
    local = when.astimezone(zone)
    utc = f"{when:%Y-%m-%d %H:%M} UTC"
    return utc if local.utcoffset() == when.utcoffset() else f"{local:%Y-%m-%d %H:%M %Z} ({utc})"


def _filters(items: list[str]) -> dict[str, Any]:
    try:
        return audience.parse_filter_items(items)
    except audience.FilterError as exc:
        fail(f"--filter {exc}")


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
            row = service.create(
                conn,
                c.clock,
                program=program,
                name=name,
                template=template,
                message_type=message_type,
                audience_filter=_filters(filter_),
                tag=tag,
            )
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
def lint(
    name: str,
    program: str = ProgramOpt,
    at: str = typer.Option(None, help="planned send time; default: the schedule or now"),
    tz: str = TzOpt,
) -> None:
    """Check a campaign: errors block sending, warnings are shown. Exit 1 on errors."""
    c = container()
    when = _when(at, tz, c.clock.now()) if at else None
    with c.db.read() as conn:
        campaign = _campaign(conn, program, name)
        result = service.lint(conn, c.clock, campaign, when, public_url=c.settings.public_url)
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
        result = service.lint(conn, c.clock, campaign, public_url=c.settings.public_url)
    _print_dry_run(dry)
    for f in result.findings:
        if f.code == "missing_field":
            console.print(f"[yellow]warning[/yellow] {f.message}")


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
def schedule(
    name: str,
    program: str = ProgramOpt,
    at: str = typer.Option(..., help=f"when to start: {WHEN_FORMATS}"),
    tz: str = TzOpt,
) -> None:
    """Queue the audience now, to be sent from ``--at`` by the workers."""
    c = container()
    when = _when(at, tz, c.clock.now())
    if when < c.clock.now():
        fail(f"--at {at!r} is {_both_zones(when, tz)}, which has passed; use `campaigns send` to send now")
    with c.db.transaction() as conn:
        campaign = _campaign(conn, program, name)
        try:
            row, queued = service.start(conn, c.clock, campaign, at=when, public_url=c.settings.public_url)
        except ValueError as exc:
            fail(str(exc))
    if queued == 0:
        console.print(
            f"[yellow]{row['name']}: no recipients[/yellow] — nothing to schedule; the campaign is done "
            "(see `optline campaigns audience` for who was excluded and why)"
        )
        return
    console.print(
        f"scheduled [bold]{row['name']}[/bold]: {plural(queued, 'message')} from {_both_zones(when, tz)}"
    )
    console.print("a worker sends them then: `optline worker` (or `optline serve` on SQLite) must be running")


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
            _print_lint(service.lint(conn, c.clock, campaign, public_url=c.settings.public_url))
            _print_dry_run(_dry_run(conn, campaign))
            return
        if campaign["status"] in ("draft", "scheduled"):
            try:
                campaign, queued = service.start(conn, c.clock, campaign, public_url=c.settings.public_url)
            except ValueError as exc:
                fail(str(exc))
            if queued == 0:
                console.print(
                    f"[yellow]{campaign['name']}: no recipients[/yellow] — nothing was queued and the "
                    "campaign is done (see `optline campaigns audience` for who was excluded and why)"
                )
                return
            console.print(f"queued {plural(queued, 'message')}")
        elif campaign["status"] not in ("sending",):
            fail(f"campaign {name!r} is {campaign['status']}")
    if not dispatch:
        console.print(
            "not dispatching here (--no-dispatch): a worker must be running to send them — "
            "`optline worker`, or `optline serve` on SQLite"
        )
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
    _explain_deferred(c, campaign)


def _explain_deferred(c: Any, campaign: dict[str, Any]) -> None:
    """Deferred is not dropped: say until when, and who sends them then."""
    with c.db.read() as conn:
        n, first, last = service.deferred_window(conn, campaign)
    if not n or first is None or last is None:
        return
    span = (
        f"{first:%Y-%m-%d %H:%M} UTC"
        if first == last
        else f"{first:%Y-%m-%d %H:%M} – {last:%Y-%m-%d %H:%M} UTC"
    )
    console.print(
        f"{plural(n, 'message')} deferred (quiet hours in the recipient's time zone, or the frequency cap) "
        f"until {span}; a running worker sends them then (`optline worker`, or `optline serve` on SQLite)"
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
            detail = (
                f"sent {n.get('sent', 0) + n.get('delivered', 0):,}  suppressed {n.get('suppressed', 0):,}  "
                f"deferred {n.get('deferred', 0):,}  failed {n.get('failed', 0):,}"
            )
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
                    console.print(
                        f"cancelled [bold]{row['name']}[/bold]: {plural(n, 'message')} will not be sent"
                    )
                    return
                row = service.pause(conn, campaign) if action == "pause" else service.resume(conn, campaign)
            except ValueError as exc:
                fail(str(exc))
        console.print(f"{row['name']}: {row['status']}")

    command.__doc__ = {
        "pause": "Stop claiming this campaign's messages.",
        "resume": "Continue a paused campaign.",
        "cancel": "Cancel: nothing not yet handed over is sent.",
    }[action]
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
        table.add_row(
            str(r["id"]),
            r["name"],
            str(r["program_id"]),
            r["message_type"],
            r["status"],
            f"{r['created_at']:%Y-%m-%d %H:%M}",
        )
    console.print(table)
