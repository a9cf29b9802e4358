"""Programs: one messaging program of a brand."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select

from optline.adapters.db.tables import programs
from optline.domain.consent import OptOutScope


def create(conn: Connection, **values: Any) -> dict[str, Any]:
    values.setdefault("optout_scope", OptOutScope.BRAND.value)
    values.setdefault("sender_numbers", [])
    values.setdefault("join_keywords", [])
    values.setdefault("settings", {})
    values.setdefault("double_opt_in", False)
    if conn.execute(select(programs.c.id).where(programs.c.name == values["name"])).first():
        raise ValueError(f"a program named {values['name']!r} already exists")
    row = conn.execute(insert(programs).values(**values).returning(*programs.c)).one()
    return dict(row._mapping)


def get_by_name(conn: Connection, name: str) -> dict[str, Any] | None:
    if "\x00" in name:  # no program has one (PostgreSQL refuses NUL in a query: a 500 for a typed URL)
        return None
    row = conn.execute(select(programs).where(programs.c.name == name)).first()
    return dict(row._mapping) if row else None


def get(conn: Connection, program_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(programs).where(programs.c.id == program_id)).first()
    return dict(row._mapping) if row else None


def list_all(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(select(programs).order_by(programs.c.name))]


def of_brand(conn: Connection, brand: str) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(select(programs).where(programs.c.brand == brand))]
