"""Programs: one messaging program of a brand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, insert, select

from optline.adapters.db.tables import programs
from optline.domain.consent import OptOutScope

T = TypeVar("T")

# How long a process may answer from what it last read of the programs table (inbound routing reads it on
# every reply). A reply handled up to this long after a program changed in *another* process is treated as
# if it had arrived just before the change — the order of two concurrent events; this process's own
# changes are seen at once (``forget``), and a reply whose sender number no cached program owns reads the
# table again before it is called unrouted (services/programs.py).
CACHE_SECONDS = 2.0
_cache: WeakKeyDictionary[Engine, dict[Hashable, tuple[float, Any]]] = WeakKeyDictionary()
_cache_lock = threading.Lock()


def cached(conn: Connection, key: Hashable, build: Callable[[Connection], T], *, fresh: bool = False) -> T:
    """``build(conn)`` — a value derived from the programs table — kept per database for CACHE_SECONDS."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(conn.engine, {}).get(key)
    if hit is not None and not fresh and hit[0] > now:
        value: T = hit[1]
        return value
    value = build(conn)
    with _cache_lock:
        _cache.setdefault(conn.engine, {})[key] = (now + CACHE_SECONDS, value)
    return value


def forget(conn: Connection) -> None:
    """This process changed a program: what was cached for its database is read again."""
    with _cache_lock:
        _cache.pop(conn.engine, None)


def create(conn: Connection, **values: Any) -> dict[str, Any]:
    values.setdefault("optout_scope", OptOutScope.BRAND.value)
    values.setdefault("sender_numbers", [])
    values.setdefault("join_keywords", [])
    values.setdefault("settings", {})
    values.setdefault("double_opt_in", False)
    if conn.execute(select(programs.c.id).where(programs.c.name == values["name"])).first():
        raise ValueError(f"a program named {values['name']!r} already exists")
    row = conn.execute(insert(programs).values(**values).returning(*programs.c)).one()
    forget(conn)
    return dict(row._mapping)


def get_by_name(conn: Connection, name: str) -> dict[str, Any] | None:
    if "\x00" in name:  # no program has one (PostgreSQL refuses NUL in a query: a 500 for a typed URL)
        return None
    if not name.isascii():
        try:  # a command-line argument that was not UTF-8 (Python keeps its bytes as lone surrogates)
            name.encode()
        except UnicodeEncodeError:
            return None  # no program has one: the drivers could not even send it
    row = conn.execute(select(programs).where(programs.c.name == name)).first()
    return dict(row._mapping) if row else None


def get(conn: Connection, program_id: int, *, for_update: bool = False) -> dict[str, Any] | None:
    """``for_update``: the row stays locked until the transaction ends (PostgreSQL; SQLite's write
    transaction already excludes every other writer), for a change computed from the values read."""
    query = select(programs).where(programs.c.id == program_id)
    row = conn.execute(query.with_for_update() if for_update else query).first()
    return dict(row._mapping) if row else None


def list_all(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(select(programs).order_by(programs.c.name))]


def of_brand(conn: Connection, brand: str) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(select(programs).where(programs.c.brand == brand))]
