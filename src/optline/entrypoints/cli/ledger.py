"""``optline ledger verify|digest``."""

from __future__ import annotations

import typer
from sqlalchemy import Connection, select

from optline.adapters.db import ledger
from optline.adapters.db.tables import contacts
from optline.domain.ledger import Break
from optline.entrypoints.cli.common import console, container, err_console, plural

app = typer.Typer(help="The consent ledger.", no_args_is_help=True)


@app.command()
def verify() -> None:
    """Recompute the hash chains and digests and cross-check the subscriptions; on success record a
    digest of what was verified. Exit 1 naming every contact whose chain is broken, and what is wrong."""
    c = container()
    with c.db.read() as conn:
        result = ledger.verify(conn)
        phones = _phones(conn, {b.contact_id for b in result.breaks})
    if result.ok:
        with c.db.transaction() as conn:  # seal what was just verified: a later deletion is then caught
            ledger.record_digest(conn, c.clock.now())
        console.print(
            f"[green]OK[/green]: {plural(result.events, 'event')} in {plural(result.chains, 'chain')}, "
            f"{plural(result.digests, 'digest')} verified"
        )
        return
    by_contact: dict[int, list[Break]] = {}
    for b in result.breaks:
        by_contact.setdefault(b.contact_id, []).append(b)
    for contact_id, breaks in sorted(by_contact.items()):
        who = (
            "the digest chain"
            if contact_id == 0
            else f"contact {contact_id} ({phones.get(contact_id, 'deleted')})"
        )
        err_console.print(f"[red]BROKEN[/red]: {who}")
        for b in breaks:
            where = ", ".join(
                ([f"event {b.event_id}"] if b.event_id else []) + ([f"seq {b.seq}"] if b.seq else [])
            )
            err_console.print(f"  {where + ': ' if where else ''}{b.reason}", highlight=False)
    chains = len([k for k in by_contact if k])
    err_console.print(f"{plural(len(result.breaks), 'break')} in {plural(chains, 'contact chain')}")
    raise typer.Exit(1)


def _phones(conn: Connection, contact_ids: set[int]) -> dict[int, str]:
    if not contact_ids:
        return {}
    rows = conn.execute(select(contacts.c.id, contacts.c.phone).where(contacts.c.id.in_(contact_ids)))
    return {r.id: r.phone for r in rows}


@app.command()
def digest() -> None:
    """Record a digest of the chain heads now (the worker also does this periodically)."""
    c = container()
    with c.db.transaction() as conn:
        value = ledger.record_digest(conn, c.clock.now())
    console.print(f"digest {value}" if value else "nothing changed since the last digest")
