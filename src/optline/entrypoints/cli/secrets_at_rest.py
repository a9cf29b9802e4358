"""``optline secrets``: the secrets kept in the database, encrypted under OPTLINE_SECRET_KEY."""

from __future__ import annotations

import typer

from optline.entrypoints.cli.common import console, container, fail, plural
from optline.services import event_hooks

app = typer.Typer(help="Secrets kept in the database (webhook signing secrets).", no_args_is_help=True)


@app.command("rotate")
def rotate() -> None:
    """Re-encrypt every stored secret under the current OPTLINE_SECRET_KEY (and encrypt any stored in clear
    by an older version). Run it after changing the key, with the old one in OPTLINE_PREVIOUS_SECRET_KEYS;
    once it has run, the old key can be dropped from that list."""
    c = container()
    box = c.secret_box()  # before the transaction: without OPTLINE_SECRET_KEY it may store the generated key
    with c.db.transaction() as conn:
        counts = event_hooks.rotate_secrets(conn, box)
    console.print(
        f"webhook signing secrets: {plural(counts.re_encrypted, 'secret')} re-encrypted under the current key, "
        f"{plural(counts.encrypted, 'secret')} stored in clear now encrypted, "
        f"{counts.unchanged:,} already under the current key"
    )
    if counts.unreadable:
        fail(
            f"the signing secrets of webhook endpoint(s) {', '.join(map(str, counts.unreadable))} cannot be "
            "decrypted with OPTLINE_SECRET_KEY or OPTLINE_PREVIOUS_SECRET_KEYS and were left as they are: list "
            "the key they were stored under in OPTLINE_PREVIOUS_SECRET_KEYS and run this again. If that key is "
            "lost, so are those secrets: disable those endpoints and register them again (a new secret)"
        )
