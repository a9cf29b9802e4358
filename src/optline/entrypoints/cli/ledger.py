"""``optline ledger verify|digest``."""

from __future__ import annotations

import typer

from optline.adapters.db import ledger
from optline.entrypoints.cli.common import console, container, err_console

app = typer.Typer(help="The consent ledger.", no_args_is_help=True)


@app.command()
def verify() -> None:
    """Recompute the hash chains and digests; exit 1 and name the first broken event if any."""
    c = container()
    with c.db.read() as conn:
        result = ledger.verify(conn)
    if result.ok:
        console.print(
            f"[green]OK[/green]: {result.events:,} events in {result.chains:,} chains, "
            f"{result.digests:,} digests verified"
        )
        return
    first = result.breaks[0]
    err_console.print(
        f"[red]BROKEN[/red]: event {first.event_id} (contact {first.contact_id}, seq {first.seq}): {first.reason}"
    )
    if len(result.breaks) > 1:
        err_console.print(f"{len(result.breaks) - 1} more break(s) after it")
    raise typer.Exit(1)


@app.command()
def digest() -> None:
    """Record a digest of the chain heads now (the worker also does this periodically)."""
    c = container()
    with c.db.transaction() as conn:
        value = ledger.record_digest(conn, c.clock.now())
    console.print(f"digest {value}" if value else "nothing changed since the last digest")
