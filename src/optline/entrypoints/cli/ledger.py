"""``optline ledger verify|digest|checkpoint|export|public-key``."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import typer
from sqlalchemy import Connection, select

from optline.adapters import checkpoint_log
from optline.adapters import ledger_signing as keys
from optline.adapters.db import ledger
from optline.adapters.db.tables import contacts
from optline.bootstrap import Container
from optline.domain.checkpoint import CheckpointError
from optline.domain.dates import parse_datetime
from optline.domain.ledger import Break
from optline.entrypoints.cli.common import console, container, err_console, fail, plural
from optline.services import checkpoints, ledger_export

app = typer.Typer(help="The consent ledger.", no_args_is_help=True)


@app.command()
def verify(
    checkpoints_file: Path | None = typer.Option(
        None,
        "--checkpoints",
        help="a checkpoint log: prove nothing it covers was changed, removed or reordered",
    ),
    public_key: str | None = typer.Option(
        None, help="the hex Ed25519 key the checkpoints must be signed with (default: the configured key's)"
    ),
) -> None:
    """Recompute the hash chains and digests and cross-check the subscriptions (and, with --checkpoints,
    the signed checkpoints); on success record a digest of what was verified. Exit 1 naming every contact
    whose chain is broken, and what is wrong."""
    c = container()
    found: list[checkpoints.Checked] = []
    if checkpoints_file is not None:
        try:
            key = public_key or keys.public_key_hex(c.settings)
            found, bad = checkpoints.trusted(checkpoint_log.read(checkpoints_file), key)
        except (CheckpointError, keys.SigningKeyError) as exc:
            fail(str(exc))
        if not found and not bad:
            fail(f"the checkpoint log {checkpoints_file} holds no checkpoint")
    with c.db.read() as conn:
        result = ledger.verify(conn)
        if checkpoints_file is not None:
            result.breaks.extend(bad + checkpoints.breaks(ledger.recomputed_digests(conn), found))
        phones = _phones(conn, {b.contact_id for b in result.breaks})
    if result.ok:
        with c.db.transaction() as conn:  # seal what was just verified: a later deletion is then caught
            ledger.record_digest(conn, c.clock.now())
        against = f", against {plural(len(found), 'signed checkpoint')}" if found else ""
        console.print(
            f"[green]OK[/green]: {plural(result.events, 'event')} in {plural(result.chains, 'chain')}, "
            f"{plural(result.digests, 'digest')} verified{against}"
        )
        return
    by_contact: dict[int, list[Break]] = {}
    for b in result.breaks:
        by_contact.setdefault(b.contact_id, []).append(b)
    for contact_id, breaks in sorted(by_contact.items()):
        who = (
            "the digest chain and checkpoints"
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


@app.command()
def checkpoint() -> None:
    """Sign the ledger's newest digest with the key outside the database and append it to the checkpoint
    log (the worker also does this every OPTLINE_LEDGER_CHECKPOINT_MINUTES)."""
    c = container()
    try:
        signed = checkpoints.take(c)
    except (keys.SigningKeyError, checkpoint_log.CheckpointLogError) as exc:
        fail(str(exc))
    if signed is None:
        console.print("the ledger is empty: nothing to checkpoint")
        return
    console.print(
        f"checkpoint of digest {signed.digest_id} ({plural(signed.events, 'event')} in "
        f"{plural(signed.chains, 'chain')}) appended to {_log_name(c)}",
        highlight=False,
    )


def _log_name(c: Container) -> str:
    return checkpoint_log.shown(keys.checkpoint_log(c.settings) or "")


@app.command("public-key")
def public_key_cmd() -> None:
    """Print the hex Ed25519 key that checks the checkpoints (give it to an auditor)."""
    c = container()
    try:
        console.print(keys.public_key_hex(c.settings), highlight=False)
    except keys.SigningKeyError as exc:
        fail(str(exc))


@app.command()
def export(
    since: str | None = typer.Option(
        None, help="only events recorded from this date or time (UTC), e.g. 2026-01-31"
    ),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl (the only format)"),
    out: Path | None = typer.Option(None, help="write here instead of standard output"),
) -> None:
    """Every ledger event and digest as JSON lines, for tools/verify_export.py or any auditor's own check."""
    if fmt != "jsonl":
        fail(f"unknown format {fmt!r}: the ledger exports as jsonl")
    start: datetime | None = None
    if since is not None:
        try:
            start = parse_datetime(since)
        except ValueError as exc:
            fail(f"--since {since!r}: {exc}")
    c = container()
    with c.db.read() as conn:
        lines = ledger_export.lines(conn, since=start, now=c.clock.now())
        if out is None:
            for line in lines:
                sys.stdout.write(line + "\n")
            return
        written = 0
        with out.open("w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
                written += 1
    console.print(f"wrote {plural(written - 1, 'record')} after the header to {out}")
