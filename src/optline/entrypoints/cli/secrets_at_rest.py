"""``optline secrets``: the secrets kept in the database, encrypted under OPTLINE_SECRET_KEY."""

from __future__ import annotations

import typer

from optline.adapters.secret_box import SecretBoxError
from optline.entrypoints.cli.common import console, container, fail, plural
from optline.services import event_hooks

app = typer.Typer(help="Secrets kept in the database (webhook signing secrets).", no_args_is_help=True)


@app.command("rotate")
def rotate() -> None:
    """Re-encrypt every stored secret under the current OPTLINE_SECRET_KEY (and encrypt any stored in clear
    by an older version). Run it after changing the key, with the old one in OPTLINE_PREVIOUS_SECRET_KEYS;
    once it has run, the old key can be dropped from that list."""
    c = container()
    try:
        with c.db.transaction() as conn:
            counts = event_hooks.rotate_secrets(conn, c.secret_box())
    except SecretBoxError as exc:
        fail(str(exc))
    console.print(
        f"webhook signing secrets: {plural(counts.re_encrypted, 'secret')} re-encrypted under the current key, "
        f"{plural(counts.encrypted, 'secret')} stored in clear now encrypted, "
        f"{counts.unchanged:,} already under the current key"
    )
