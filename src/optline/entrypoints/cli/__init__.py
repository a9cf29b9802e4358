"""The ``optline`` command line (Typer). One module per command group."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from optline.entrypoints.cli import apikeys, contacts, help_format, ledger, programs, server, signups
from optline.entrypoints.cli import audit as audit_cli
from optline.entrypoints.cli import campaigns as campaigns_cli
from optline.entrypoints.cli import counts as counts_cli
from optline.entrypoints.cli import demo as demo_cli
from optline.entrypoints.cli import hooks as hooks_cli
from optline.entrypoints.cli import inbound as inbound_cli
from optline.entrypoints.cli import lists as lists_cli
from optline.entrypoints.cli import proof as proof_cli
from optline.entrypoints.cli import report as report_cli
from optline.entrypoints.cli import secrets_at_rest as secrets_cli
from optline.entrypoints.cli import users as users_cli
from optline.entrypoints.cli.common import CliError, err_console, seal_ledger

help_format.install()
app = typer.Typer(
    help="optline: SMS campaigns built around consent.", no_args_is_help=True, add_completion=False
)


def _print_version(value: bool) -> None:
    if value:
        import optline

        print(f"optline {optline.__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """optline: SMS campaigns built around consent."""


app.registered_commands += server.app.registered_commands
app.add_typer(programs.app, name="programs")
app.add_typer(contacts.app, name="contacts")
app.add_typer(ledger.app, name="ledger")
app.add_typer(apikeys.app, name="apikey")
app.add_typer(signups.app, name="signups")
programs.app.command("disclosure")(signups.disclosure)
app.add_typer(campaigns_cli.app, name="campaigns")
app.registered_commands += inbound_cli.classify_app.registered_commands
app.add_typer(inbound_cli.app, name="inbound")
app.registered_commands += report_cli.app.registered_commands
app.registered_commands += audit_cli.app.registered_commands
app.add_typer(lists_cli.dnc_app, name="dnc")
app.add_typer(lists_cli.reassigned_app, name="reassigned")
app.add_typer(users_cli.app, name="users")
app.registered_commands += demo_cli.app.registered_commands
app.add_typer(hooks_cli.app, name="hooks")
app.add_typer(secrets_cli.app, name="secrets")
app.registered_commands += proof_cli.app.registered_commands
app.add_typer(counts_cli.app, name="counts")


def main() -> None:
    try:
        _run()
    finally:  # also after a failed command: what it committed before failing is sealed too
        seal_ledger()


def _run() -> None:
    # Standalone mode: Typer/Click print usage errors themselves (exit 2). Our own expected failures
    # propagate out of it and are printed here as one line, never as a traceback.
    try:
        app()
    except CliError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    except ValidationError as exc:  # settings from the environment
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        err_console.print(f"[red]configuration error:[/red] {message}", markup=True, highlight=False)
        sys.exit(2)
    except OperationalError as exc:
        err_console.print(f"[red]database error:[/red] {exc.orig}")
        sys.exit(1)
