"""Programs use cases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from optline.adapters.clock import Clock
from optline.adapters.db import programs as repo
from optline.domain import replies


def default_help_text(brand: str, frequency: str) -> str:
    return replies.default_help(brand, frequency)  # one text, translated there when a reply asks for it


def create_program(conn: Connection, clock: Clock, **values: Any) -> dict[str, Any]:
    values = {k: v for k, v in values.items() if v is not None}
    values["join_keywords"] = [k.strip().upper() for k in values.get("join_keywords", []) if k.strip()]
    values.setdefault("frequency_text", "Msg frequency varies")
    if not values.get("help_text"):
        values["help_text"] = default_help_text(values["brand"], values["frequency_text"])
    return repo.create(conn, created_at=clock.now(), **values)


def list_programs(conn: Connection) -> list[dict[str, Any]]:
    return repo.list_all(conn)


def get_program(conn: Connection, name: str) -> dict[str, Any] | None:
    return repo.get_by_name(conn, name)


def require_program(conn: Connection, name: str) -> dict[str, Any]:
    program = repo.get_by_name(conn, name)
    if program is None:
        known = ", ".join(p["name"] for p in repo.list_all(conn)) or "none yet"
        raise LookupError(f"no program named {name!r} (programs: {known})")
    return program
