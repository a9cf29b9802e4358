"""Secrets an installation generates for itself, kept in its database (``installation_secrets``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from optline.adapters.db.tables import installation_secrets


def get(conn: Connection, name: str) -> str | None:
    value = conn.execute(
        select(installation_secrets.c.value).where(installation_secrets.c.name == name)
    ).scalar()
    return None if value is None else str(value)


def get_or_create(conn: Connection, name: str, generate: Callable[[], str], now: datetime) -> str:
    """The stored value of ``name``; on first use ``generate()``'s, stored. Race-free: when two processes
    start at once, both insert-if-absent and both then read the one row that won."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        insert(installation_secrets)
        .values(name=name, value=generate(), created_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    value = get(conn, name)
    assert value is not None  # inserted above, or by whoever got there first
    return value
