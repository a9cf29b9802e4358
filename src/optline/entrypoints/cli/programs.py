"""``optline programs create|list|set``."""

from __future__ import annotations

import typer
from rich.table import Table

from optline.domain.support_contact import SupportContactError
from optline.entrypoints.cli.common import console, container, fail
from optline.services import programs as service

app = typer.Typer(help="Messaging programs (one brand's campaign program).", no_args_is_help=True)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="unique program name"),
    brand: str = typer.Option(..., help="brand name shown in every message"),
    sender: list[str] = typer.Option(
        [], help="sender number in any common format (stored as E.164) or 5–6 digit short code; repeatable"
    ),
    help_contact: str = typer.Option(
        None,
        help="customer care named in the HELP reply: a website, email address or phone number (required)",
    ),
    help_text: str = typer.Option(
        None, help="the reply to HELP (default: built from brand, contact, frequency)"
    ),
    frequency: str = typer.Option("Msg frequency varies", help="message-frequency disclosure"),
    terms_url: str = typer.Option(None),
    privacy_url: str = typer.Option(None),
    scope: str = typer.Option(
        "brand", help="opt-out scope: 'brand' (all programs of the brand) or 'program'"
    ),
    double_opt_in: bool = typer.Option(False, help="new sign-ups must confirm with YES"),
    join_keyword: list[str] = typer.Option([], help="keyword that starts a sign-up; repeatable"),
    optout_link: bool = typer.Option(
        True, help="add each person's one-tap opt-out link to marketing messages (default on)"
    ),
) -> None:
    """Create a program."""
    if scope not in ("brand", "program"):
        fail(f"--scope must be 'brand' or 'program', not {scope!r}")
    c = container()
    with c.db.transaction() as conn:
        try:
            program = service.create_program(
                conn,
                c.clock,
                default_region=c.settings.default_region,
                name=name,
                brand=brand,
                sender_numbers=list(sender),
                help_text=help_text,
                help_contact=help_contact,
                frequency_text=frequency,
                terms_url=terms_url,
                privacy_url=privacy_url,
                optout_scope=scope,
                double_opt_in=double_opt_in,
                join_keywords=list(join_keyword),
                optout_link=optout_link,
            )
        except SupportContactError as exc:
            fail(f"--help-contact: {exc}")
        except ValueError as exc:
            fail(str(exc))
    console.print(
        f"created program [bold]{program['name']}[/bold] (id {program['id']}, brand {program['brand']})"
    )


@app.command("set")
def set_(
    name: str = typer.Argument(..., help="program name"),
    optout_link: bool = typer.Option(
        None,
        "--optout-link/--no-optout-link",
        help="each person's one-tap opt-out link in marketing messages",
    ),
    optout_instruction: str = typer.Option(
        None, help="'every' marketing message says Reply STOP, or only the 'monthly' first one"
    ),
    sending_window: str = typer.Option(
        None,
        help="the program's sending window in the recipient's time, e.g. 09:00-20:00 (inside 08:00-21:00)",
    ),
) -> None:
    """Change some of a program's settings; the others stay as they are."""
    changes: dict[str, object] = {}
    if optout_link is not None:
        changes["optout_link"] = optout_link
    if optout_instruction is not None:
        changes["optout_instruction"] = optout_instruction
    if sending_window is not None:
        start, _, end = sending_window.partition("-")
        changes.update(quiet_start=start, quiet_end=end)
    if not changes:
        fail(
            "nothing to change: give --optout-link/--no-optout-link, --optout-instruction or --sending-window"
        )
    c = container()
    with c.db.transaction() as conn:
        try:
            program = service.require_program(conn, name)
            program = service.change_settings(
                conn, program, default_region=c.settings.default_region, **changes
            )
        except LookupError as exc:
            fail(str(exc))
        except ValueError as exc:
            fail(f"--sending-window: {exc}" if "sending window" in str(exc) else str(exc))
    settings = program["settings"]
    window = settings.get("quiet_hours")
    hours = f"{window['start']}-{window['end']}" if window else "the law's (08:00-21:00)"
    link = "on" if settings["optout_link"] else "off"
    console.print(
        f"program [bold]{program['name']}[/bold]: opt-out link {link}, Reply STOP in "
        f"{settings['optout_instruction']} marketing message(s), sending window {hours}"
    )


@app.command("list")
def list_() -> None:
    """List programs."""
    c = container()
    with c.db.read() as conn:
        rows = service.list_programs(conn)
    table = Table("id", "name", "brand", "senders", "opt-out scope", "double opt-in")
    for p in rows:
        table.add_row(
            str(p["id"]),
            p["name"],
            p["brand"],
            ", ".join(p["sender_numbers"] or []) or "-",
            p["optout_scope"],
            "yes" if p["double_opt_in"] else "no",
        )
    console.print(table)
