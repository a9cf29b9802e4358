"""Finding people: by phone number in any spelling, by name, or by an attribute; filtered by program and
subscription status; a page at a time by keyset (``id > after``), so page 1,000 costs what page 1 costs.

What the search box means (one rule, used by the dashboard and the contacts export):
- something that reads as a phone number (digits, spaces, ``+ ( ) - .``) is parsed with domain/phones and
  looked up exactly (the unique index); digits that are not a whole number match anywhere in the number;
- ``key=value`` (or ``key:value``) matches an attribute exactly, case-insensitively (``tier=gold``);
- anything else is a name: a case-insensitive substring of ``first_name``, ``last_name``, ``name`` or
  "first last".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, exists, func, literal, or_, select
from sqlalchemy.sql import ColumnElement, Select

from optline.adapters.db.tables import contacts, programs, subscriptions
from optline.domain.consent import Status
from optline.domain.phones import InvalidPhoneNumber, parse_phone

PAGE_SIZE = 50
STATUSES = tuple(s.value for s in Status if s is not Status.NEVER)
_PHONE_LIKE = re.compile(r"^[\d\s+().\-]+$")
_ATTRIBUTE = re.compile(r"^([A-Za-z_][\w.-]*)\s*[=:]\s*(.+)$")
NAME_FIELDS = ("first_name", "last_name", "name")


class SearchError(ValueError):
    """A filter that cannot be applied (an unknown status); the message says which values exist."""


@dataclass
class Query:
    text: str = ""
    program_id: int | None = None
    status: str = ""


def _field(name: str) -> ColumnElement[Any]:
    return func.lower(func.coalesce(contacts.c.attributes[name].as_string(), ""))


def _like(needle: str) -> str:
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def looks_like_phone(text: str) -> bool:
    return bool(_PHONE_LIKE.match(" ".join(text.split())))


def condition(conn: Connection, text: str, region: str) -> ColumnElement[bool] | None:
    """The WHERE clause the search box asks for (None: everyone)."""
    q = " ".join(text.split())
    if not q:
        return None
    if _PHONE_LIKE.match(q):
        try:
            return contacts.c.phone == parse_phone(q, region).e164
        except InvalidPhoneNumber:
            digits = re.sub(r"\D", "", q)
            return contacts.c.phone.like(_like(digits), escape="\\")
    if m := _ATTRIBUTE.match(q):
        return _field(m.group(1)) == m.group(2).strip().lower()
    needle = _like(q.lower())
    full = _field("first_name") + literal(" ") + _field("last_name")
    return or_(*(_field(f).like(needle, escape="\\") for f in NAME_FIELDS), full.like(needle, escape="\\"))


def _statement(conn: Connection, query: Query, region: str) -> Select[Any]:
    if query.status and query.status not in STATUSES:
        raise SearchError(f"unknown status {query.status!r}; use one of {', '.join(STATUSES)}")
    stmt = select(contacts)
    where = condition(conn, query.text, region)
    if where is not None:
        stmt = stmt.where(where)
    if query.program_id is not None or query.status:
        sub = select(subscriptions.c.contact_id).where(subscriptions.c.contact_id == contacts.c.id)
        if query.program_id is not None:
            sub = sub.where(subscriptions.c.program_id == query.program_id)
        if query.status:
            sub = sub.where(subscriptions.c.status == query.status)
        stmt = stmt.where(exists(sub))
    return stmt


def search(
    conn: Connection, query: Query, region: str, *, after: int = 0, limit: int = PAGE_SIZE
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of contacts in id order after ``after``, each with its subscriptions; and the ``after`` of
    the next page (None: this is the last)."""
    rows = [
        dict(r._mapping)
        for r in conn.execute(
            _statement(conn, query, region)
            .where(contacts.c.id > after)
            .order_by(contacts.c.id)
            .limit(limit + 1)
        )
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    subs: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
    if rows:
        for s in conn.execute(
            select(
                subscriptions.c.contact_id,
                subscriptions.c.status,
                subscriptions.c.held,
                subscriptions.c.since,
                programs.c.name,
            )
            .join(programs, programs.c.id == subscriptions.c.program_id)
            .where(subscriptions.c.contact_id.in_(list(subs)))
            .order_by(programs.c.name)
        ):
            subs[s.contact_id].append(
                {"program": s.name, "status": s.status, "held": s.held, "since": s.since}
            )
    for r in rows:
        r["subscriptions"] = subs[r["id"]]
        r["name"] = display_name(r.get("attributes") or {})
    return rows, (rows[-1]["id"] if more else None)


def stream(conn: Connection, query: Query, region: str, batch: int = 2000) -> Iterator[dict[str, Any]]:
    """Every matching contact with its subscriptions, in id order, ``batch`` rows per query (an export of a
    million rows holds one batch in memory, and no transaction open between batches is needed)."""
    after = 0
    while True:
        rows, nxt = search(conn, query, region, after=after, limit=batch)
        yield from rows
        if nxt is None:
            return
        after = nxt


def display_name(attributes: dict[str, Any]) -> str:
    if attributes.get("name"):
        return str(attributes["name"])
    return " ".join(str(attributes[k]) for k in ("first_name", "last_name") if attributes.get(k))
