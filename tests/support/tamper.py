"""Editing the ledger the way someone with database superuser rights could, to prove it is detected."""

from __future__ import annotations

import sqlite3

from sqlalchemy import text

from optline.bootstrap import Container


def force(container: Container, *statements: str) -> None:
    """Run SQL past the append-only guards: on SQLite with foreign keys off and the triggers dropped; on
    PostgreSQL with ``session_replication_role = replica``, which skips triggers and foreign-key checks."""
    if container.db.is_sqlite:
        raw = sqlite3.connect(container.db.engine.url.database or "")
        raw.execute("PRAGMA foreign_keys=OFF")
        raw.execute("DROP TRIGGER IF EXISTS consent_events_no_update")
        raw.execute("DROP TRIGGER IF EXISTS consent_events_no_delete")
        for sql in statements:
            raw.execute(sql)
        raw.commit()
        raw.close()
        return
    with container.db.engine.connect() as conn:
        conn.exec_driver_sql("SET session_replication_role = replica")
        for sql in statements:
            conn.execute(text(sql))
        conn.commit()


def delete_newest_event(container: Container, contact_id: int) -> None:
    """Remove a contact's newest ledger event (say, their opt-out); the projection is left as it was."""
    force(container, f"DELETE FROM consent_events WHERE contact_id = {int(contact_id)} AND seq = "
                     f"(SELECT max(seq) FROM consent_events WHERE contact_id = {int(contact_id)})")  # fmt: skip


def hide_newest_event(container: Container, contact_id: int) -> None:
    """Remove a contact's newest event and point the projection back at the one before, as a careful
    attacker would: the chain and the projection then agree, and only a ledger digest can tell."""
    cid = int(contact_id)
    previous = f"(SELECT id FROM consent_events WHERE contact_id = {cid} AND seq = (SELECT max(seq) - 1 FROM consent_events WHERE contact_id = {cid}))"  # fmt: skip
    force(
        container,
        f"UPDATE subscriptions SET status = 'subscribed', last_event_id = {previous}, "
        f"consent_event_id = {previous} WHERE contact_id = {cid}",
        f"DELETE FROM consent_events WHERE contact_id = {cid} AND seq = "
        f"(SELECT max(seq) FROM consent_events WHERE contact_id = {cid})",
    )
