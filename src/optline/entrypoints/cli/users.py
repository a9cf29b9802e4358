"""``optline users create|list|reset-password``: dashboard operators."""

from __future__ import annotations

import typer
from rich.table import Table
from sqlalchemy import select

from optline.adapters.db.tables import users as users_table
from optline.entrypoints.cli.common import console, container, fail
from optline.services import users

app = typer.Typer(help="Dashboard users.", no_args_is_help=True)


@app.command("create")
def create(
    username: str = typer.Argument(..., help="login name"),
    password: str = typer.Option(
        None, help="password (prompted when omitted; generated and printed with --generate)"
    ),
    generate: bool = typer.Option(False, "--generate", help="generate a one-time password and print it"),
) -> None:
    """Create a dashboard user (the password is stored as an argon2 hash)."""
    one_time = False
    if generate:
        password, one_time = users.generate_password(), True
    elif password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    c = container()
    with c.db.transaction() as conn:
        try:
            users.create(conn, c.clock, username, password, must_change_password=one_time)
        except users.UserError as exc:
            fail(str(exc))
    console.print(f"created user [bold]{username}[/bold]")
    if one_time:
        console.print("one-time password (to be changed at first login):")
        print(password)


@app.command("list")
def list_() -> None:
    """List dashboard users."""
    c = container()
    with c.db.read() as conn:
        rows = conn.execute(select(users_table).order_by(users_table.c.username)).all()
    table = Table("username", "created", "last login", "must change password")
    for r in rows:
        table.add_row(
            r.username,
            str(r.created_at),
            str(r.last_login_at or "-"),
            "yes" if r.must_change_password else "",
        )
    console.print(table)


@app.command("reset-password")
def reset_password(username: str = typer.Argument(..., help="login name")) -> None:
    """Give a user a new one-time password (printed once; they choose their own at the next sign-in)."""
    c = container()
    with c.db.transaction() as conn:
        try:
            password = users.reset_password(conn, username)
        except users.UserError as exc:
            fail(str(exc))
    console.print(f"new one-time password for [bold]{username}[/bold] (to be changed at sign-in):")
    print(password)
