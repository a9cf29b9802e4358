"""Editing the ledger the way someone with database superuser rights could, to prove it is detected."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, create_engine, delete, select, text, update

from optline.adapters.db import ledger
from optline.adapters.db.tables import (
    consent_events,
    ledger_digest_heads,
    ledger_digests,
    subscriptions,
)
from optline.bootstrap import Container
from optline.domain import ledger as chain


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
    force(
        container,
        f"DELETE FROM consent_events WHERE contact_id = {int(contact_id)} AND seq = "
        f"(SELECT max(seq) FROM consent_events WHERE contact_id = {int(contact_id)})",
    )


def hide_newest_event(container: Container, contact_id: int) -> None:
    """Remove a contact's newest event and point the projection back at the one before, as a careful
    attacker would: the chain and the projection then agree, and only a ledger digest can tell."""
    cid = int(contact_id)
    previous = f"(SELECT id FROM consent_events WHERE contact_id = {cid} AND seq = (SELECT max(seq) - 1 FROM consent_events WHERE contact_id = {cid}))"
    force(
        container,
        f"UPDATE subscriptions SET status = 'subscribed', last_event_id = {previous}, "
        f"consent_event_id = {previous} WHERE contact_id = {cid}",
        f"DELETE FROM consent_events WHERE contact_id = {cid} AND seq = "
        f"(SELECT max(seq) FROM consent_events WHERE contact_id = {cid})",
    )


@contextmanager
def superuser(container: Container) -> Iterator[Connection]:
    """A connection past every guard (see ``force``), for edits that need computed values."""
    if container.db.is_sqlite:
        engine = create_engine(container.db.engine.url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.exec_driver_sql("DROP TRIGGER IF EXISTS consent_events_no_update")
                conn.exec_driver_sql("DROP TRIGGER IF EXISTS consent_events_no_delete")
                yield conn
                conn.commit()
        finally:
            engine.dispose()
        return
    with container.db.engine.connect() as conn:
        conn.exec_driver_sql("SET session_replication_role = replica")
        yield conn
        conn.commit()


def _rehash_digests(conn: Connection) -> None:
    """Recompute every digest from its (possibly rewritten) heads, as an attacker with our code would."""
    prev = chain.GENESIS
    for d in conn.execute(select(ledger_digests.c.id).order_by(ledger_digests.c.id)).all():
        heads = conn.execute(
            select(
                ledger_digest_heads.c.contact_id, ledger_digest_heads.c.seq, ledger_digest_heads.c.hash
            ).where(ledger_digest_heads.c.digest_id == d.id)
        ).all()
        value = chain.digest_of_heads([tuple(h) for h in heads], prev)
        conn.execute(
            update(ledger_digests).where(ledger_digests.c.id == d.id).values(prev_digest=prev, digest=value)
        )
        prev = value


def rewrite_event(container: Container, contact_id: int, seq: int, **evidence: Any) -> None:
    """Change one event's evidence and recompute its hash, every later hash in its chain, the digest heads
    and every digest: afterwards the database agrees with itself completely."""
    with superuser(container) as conn:
        events = ledger.history(conn, contact_id)
        prev = chain.GENESIS if seq == 1 else events[seq - 2]["hash"]
        for event in events[seq - 1 :]:
            if event["seq"] == seq:
                event["evidence"] = {**(event["evidence"] or {}), **evidence}
            event["prev_hash"] = prev
            event["hash"] = prev = chain.event_hash(event)
            conn.execute(
                update(consent_events)
                .where(consent_events.c.id == event["id"])
                .values(evidence=event["evidence"], prev_hash=event["prev_hash"], hash=event["hash"])
            )
            conn.execute(
                update(ledger_digest_heads)
                .where(
                    ledger_digest_heads.c.contact_id == contact_id, ledger_digest_heads.c.seq == event["seq"]
                )
                .values(hash=event["hash"])
            )
        _rehash_digests(conn)


def erase_contact_chain(container: Container, contact_id: int) -> None:
    """Delete a contact's whole chain, their subscriptions and every digest head that named them, then
    recompute every digest: no trace is left inside the database."""
    with superuser(container) as conn:
        conn.execute(delete(subscriptions).where(subscriptions.c.contact_id == contact_id))
        conn.execute(delete(ledger_digest_heads).where(ledger_digest_heads.c.contact_id == contact_id))
        conn.execute(delete(consent_events).where(consent_events.c.contact_id == contact_id))
        _rehash_digests(conn)
