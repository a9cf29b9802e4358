"""``optline apikey create``."""

from __future__ import annotations

import typer

from optline.adapters.db import api_keys
from optline.entrypoints.cli.common import console, container

app = typer.Typer(help="API keys for /v1.", no_args_is_help=True)


@app.command()
def create(name: str = typer.Argument(..., help="who or what uses the key")) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    c = container()
    with c.db.transaction() as conn:
        key = api_keys.create(conn, name, c.clock.now())
    console.print(f"API key for [bold]{name}[/bold] (shown once; store it now):")
    print(key)
