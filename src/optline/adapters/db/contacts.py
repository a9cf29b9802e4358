"""Contacts: one row per E.164 number."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from optline.adapters.db.tables import contacts
from optline.domain.phones import Phone


def values_for(phone: Phone, now: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "phone": phone.e164,
        "region": phone.region,
        "number_type": phone.number_type,
        "time_zone": phone.time_zone,
        "time_zone_overridden": False,
        "us_state": phone.us_state,
        "locale": extra.pop("locale", None),
        "attributes": extra.pop("attributes", {}) or {},
        "created_at": now,
        "updated_at": now,
        **extra,
    }


def get_or_create(conn: Connection, phone: Phone, now: datetime, **extra: Any) -> tuple[dict[str, Any], bool]:
    existing = get_by_phone(conn, phone.e164)
    if existing:
        return existing, False
    row = conn.execute(
        insert(contacts).values(**values_for(phone, now, **extra)).returning(*contacts.c)
    ).one()
    return dict(row._mapping), True


def get_by_phone(conn: Connection, e164: str) -> dict[str, Any] | None:
    row = conn.execute(select(contacts).where(contacts.c.phone == e164)).first()
    return dict(row._mapping) if row else None


def get(conn: Connection, contact_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(contacts).where(contacts.c.id == contact_id)).first()
    return dict(row._mapping) if row else None
