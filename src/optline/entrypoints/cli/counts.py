"""``optline counts``: the counts the database keeps for /metrics, the dashboard and the report.

Triggers keep them (adapters/db/rollups.py, adapters/db/counters.py); these commands fold the per-connection
rows that PostgreSQL writers add (what a worker's housekeeping does every minute) and recompute everything
from the base tables (the backfill, and the check that the triggers agree with a direct count).
"""

from __future__ import annotations

import typer

from optline.adapters.db import counters, rollups
from optline.entrypoints.cli.common import console, container, plural

app = typer.Typer(
    help="The counts kept for /metrics, the dashboard and the report: fold them, or recompute them.",
    no_args_is_help=True,
)


@app.command("fold", short_help="Fold every connection's rows of the kept counts into one row per key.")
def fold() -> None:
    """Fold every connection's rows of the kept counts into one row per key (PostgreSQL). A running
    worker does this every minute and /metrics does it when the rows pile up; this is for a deployment
    that runs neither. Never waits on a writer: rows being written now are left for the next fold.
    SQLite keeps one row per key already: nothing to do there."""
    c = container()
    with c.db.transaction() as conn:
        folded = rollups.compact(conn) + counters.compact(conn)
    console.print(f"folded {plural(folded, 'row')}")


@app.command("rebuild", short_help="Recompute every kept count from the outbox and the ledger.")
def rebuild() -> None:
    """Recompute every kept count from the outbox and the ledger, and say how many were wrong: messages by
    status and provider, ledger events by action and channel, messages per campaign and status, messages
    sent and delivered per day, the fatigue curve's exposures. Writes to messages and consent events wait until it ends (PostgreSQL: a
    table lock; SQLite: the write lock); reads go on. Prints how many counts it corrected: 0 means the
    triggers had kept every one exactly."""
    c = container()
    with c.db.transaction() as conn:
        rollups.lock_sources(conn)
        before = rollups.kept(conn) | counters.kept(conn)
        rollups.rebuild(conn)
        counters.rebuild(conn)
        after = rollups.kept(conn) | counters.kept(conn)
    for table in sorted(after):
        was, now = before[table], after[table]
        wrong = sum(1 for key in was.keys() | now.keys() if was.get(key, 0) != now.get(key, 0))
        console.print(f"{table}: {plural(len(now), 'count')}, {plural(wrong, 'correction')}")
