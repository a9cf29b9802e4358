"""Disclosure versions and sign-ups in flight (tables ``disclosure_versions`` and ``signups``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from optline.adapters.db.tables import contacts, disclosure_versions, programs, signups


def latest_disclosure(conn: Connection, program_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        select(disclosure_versions)
        .where(disclosure_versions.c.program_id == program_id)
        .order_by(disclosure_versions.c.version.desc())
        .limit(1)
    ).first()
    return dict(row._mapping) if row else None


def disclosure(conn: Connection, version_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(disclosure_versions).where(disclosure_versions.c.id == version_id)).first()
    return dict(row._mapping) if row else None


def disclosures_of(conn: Connection, program_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(disclosure_versions)
        .where(disclosure_versions.c.program_id == program_id)
        .order_by(disclosure_versions.c.version)
    )
    return [dict(r._mapping) for r in rows]


def add_disclosure(
    conn: Connection, program_id: int, text: str, *, custom: bool, now: datetime
) -> dict[str, Any]:
    """Insert the next version. Two concurrent writers collide on (program_id, version); the loser retries
    inside a savepoint (its transaction stays usable) and, when the winner wrote the same text, takes it."""
    for _ in range(5):
        latest = latest_disclosure(conn, program_id)
        if latest is not None and latest["text"] == text and latest["custom"] == custom:
            return latest
        try:
            with conn.begin_nested():
                row = conn.execute(
                    insert(disclosure_versions)
                    .values(
                        program_id=program_id,
                        version=(latest["version"] if latest else 0) + 1,
                        text=text,
                        custom=custom,
                        created_at=now,
                    )
                    .returning(*disclosure_versions.c)
                ).one()
            return dict(row._mapping)
        except IntegrityError:
            continue
    raise RuntimeError(f"could not add a disclosure version for program {program_id}: too much contention")


def create(conn: Connection, **values: Any) -> dict[str, Any]:
    row = conn.execute(insert(signups).values(**values).returning(*signups.c)).one()
    return dict(row._mapping)


def set_fields(conn: Connection, signup_id: int, **values: Any) -> None:
    conn.execute(update(signups).where(signups.c.id == signup_id).values(**values))


def latest_for(
    conn: Connection, contact_id: int, program_id: int, status: str | None = None
) -> dict[str, Any] | None:
    """The newest sign-up of a contact for a program (optionally with this status)."""
    stmt = select(signups).where((signups.c.contact_id == contact_id) & (signups.c.program_id == program_id))
    if status:
        stmt = stmt.where(signups.c.status == status)
    row = conn.execute(stmt.order_by(signups.c.started_at.desc(), signups.c.id.desc()).limit(1)).first()
    return dict(row._mapping) if row else None


def started_from_ip(conn: Connection, client_ip: str, since: datetime) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(signups)
            .where((signups.c.client_ip == client_ip) & (signups.c.started_at >= since))
        ).scalar_one()
    )


def expire_due(conn: Connection, now: datetime, limit: int) -> list[int]:
    """Mark pending sign-ups whose window closed as expired (set-based); return their ids."""
    ids = [
        r.id
        for r in conn.execute(
            select(signups.c.id)
            .where((signups.c.status == "pending") & (signups.c.expires_at <= now))
            .order_by(signups.c.expires_at)
            .limit(limit)
        )
    ]
    if ids:
        conn.execute(
            update(signups)
            .where(signups.c.id.in_(ids) & (signups.c.status == "pending"))
            .values(status="expired", expired_at=now)
        )
    return ids


def listing(
    conn: Connection, *, program_id: int | None = None, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    stmt = (
        select(signups, contacts.c.phone, programs.c.name.label("program"))
        .join(contacts, contacts.c.id == signups.c.contact_id)
        .join(programs, programs.c.id == signups.c.program_id)
    )
    if program_id is not None:
        stmt = stmt.where(signups.c.program_id == program_id)
    if status:
        stmt = stmt.where(signups.c.status == status)
    rows = conn.execute(stmt.order_by(signups.c.started_at.desc(), signups.c.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]
