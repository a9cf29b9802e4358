"""Leases: a job that one process at a time should run (the retention purge), on both engines.

A lease is a row ``(name, holder, expires_at)``. Taking it is one conditional write: it succeeds when
nobody holds the lease, its holder's time has run out, or the caller already holds it. On PostgreSQL a
second process's UPDATE waits on the first's row lock and then re-reads the row, which is no longer
expired: exactly one of them takes it; the first INSERT is ``ON CONFLICT DO NOTHING`` for the same reason.
SQLite's writers are serialised anyway.

Why a row and not a PostgreSQL advisory lock: the same code on both engines, and a holder that dies
keeps nobody out for longer than its lease (an advisory lock held by a hung connection would).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from optline.adapters.db.tables import leases


def take(conn: Connection, name: str, holder: str, now: datetime, hold: timedelta) -> bool:
    """Hold lease ``name`` for ``holder`` until ``now + hold`` if it is free, expired or already ours.
    Returns whether ``holder`` holds it now. Commit before doing the job, so others see it is taken."""
    until = now + hold
    renewed = conn.execute(
        update(leases)
        .where(leases.c.name == name, or_(leases.c.expires_at <= now, leases.c.holder == holder))
        .values(holder=holder, expires_at=until)
    ).rowcount
    if renewed:
        return True
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT … ON CONFLICT DO NOTHING.
    created = conn.execute(
        insert(leases)
        .values(name=name, holder=holder, expires_at=until)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(leases.c.name)
    ).first()
    return created is not None


def holder_of(conn: Connection, name: str, now: datetime) -> str | None:
    """Who holds lease ``name`` at ``now`` (None: nobody, or its time ran out)."""
    row = conn.execute(leases.select().where(leases.c.name == name, leases.c.expires_at > now)).first()
    return row.holder if row else None
