"""Finding people: by phone number in any spelling, by name, or by an attribute; filtered by program and
subscription status; a page at a time by keyset (``id > after``), so page 1,000 costs what page 1 costs.

What the search box means (one rule, used by the dashboard and the contacts export):
- something that reads as a phone number (digits, spaces, ``+ ( ) - .``) is parsed with domain/phones and
  looked up exactly (the unique index); digits that are not a whole number match anywhere in the number;
- ``key=value`` (or ``key:value``) matches an attribute exactly, case-insensitively (``tier=gold``);
- anything else is a name, matched case-insensitively from the start: one word is the beginning of the
  ``first_name`` or the ``last_name`` ("ana", "lim"); two or more are the first name and the beginning of
  the last name ("ana lima"). Both read expression indexes (migration 0004), so finding a name among a
  million contacts reads a few index entries, not every row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, exists, func, literal_column, or_, select
from sqlalchemy.sql import ColumnElement, Select

from optline.adapters.db.tables import contacts, programs, subscriptions
from optline.domain.consent import Status
from optline.domain.phones import InvalidPhoneNumber, parse_phone

PAGE_SIZE = 50
STATUSES = tuple(s.value for s in Status if s is not Status.NEVER)
_PHONE_LIKE = re.compile(r"^[\d\s+().\-]+$")
_ATTRIBUTE = re.compile(r"^([A-Za-z_][\w.-]*)\s*[=:]\s*(.+)$")
NAME_FIELDS = ("first_name", "last_name")


class SearchError(ValueError):
    """A filter that cannot be applied (an unknown status); the message says which values exist."""


@dataclass
class Query:
    text: str = ""
    program_id: int | None = None
    status: str = ""


def _field(name: str) -> ColumnElement[Any]:
    return func.lower(func.coalesce(contacts.c.attributes[name].as_string(), ""))


def name_key(conn: Connection, field: str) -> ColumnElement[Any]:
    """``lower(<field attribute>)`` spelled exactly as migration 0004's index, so the planner uses it."""
    assert field in NAME_FIELDS
    if conn.dialect.name == "postgresql":
        return literal_column(f"lower(contacts.attributes ->> '{field}')")
    return literal_column(f"lower(json_extract(contacts.attributes, '$.{field}'))")


def _starts_with(conn: Connection, key: ColumnElement[Any], prefix: str) -> ColumnElement[bool]:
    if conn.dialect.name == "postgresql":  # LIKE 'p%' reads the text_pattern_ops index
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return key.like(f"{escaped}%", escape="\\")
    # SQLite uses an expression index for comparisons, not LIKE: every string that starts with ``prefix``
    # sorts (binary collation) between it and it followed by the highest code point.
    return and_(key >= prefix, key < prefix + "\U0010ffff")


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
    words = q.lower().split(" ")
    first, last = name_key(conn, "first_name"), name_key(conn, "last_name")
    if len(words) == 1:
        return or_(_starts_with(conn, first, words[0]), _starts_with(conn, last, words[0]))
    return and_(first == words[0], _starts_with(conn, last, " ".join(words[1:])))


FEW = 5000  # matches a sort may take; more, and the id order finds a page sooner


def _is_name(text: str) -> bool:
    q = " ".join(text.split())
    return bool(q) and not _PHONE_LIKE.match(q) and not _ATTRIBUTE.match(q)


def _few(conn: Connection, stmt: Select[Any]) -> bool:
    """Whether the search matches fewer than FEW contacts (counted on the name indexes, stopping at FEW)."""
    probe = stmt.with_only_columns(contacts.c.id).limit(FEW).subquery()
    return int(conn.execute(select(func.count()).select_from(probe)).scalar_one()) < FEW


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
    stmt = _statement(conn, query, region)
    key: ColumnElement[Any] = contacts.c.id
    if _is_name(query.text) and _few(conn, stmt):
        # Either planner may walk the whole table in id order (the ORDER BY's index) looking for a rare name,
        # stopping at the page's last row that never comes; an id expression cannot use that index, so it
        # reads the name indexes and sorts the few rows instead.
        key = literal_column("+contacts.id" if conn.dialect.name == "sqlite" else "(contacts.id + 0)")
    rows = [dict(r._mapping) for r in conn.execute(stmt.where(key > after).order_by(key).limit(limit + 1))]
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


def display_name(attributes: dict[str, Any]) -> str:
    if attributes.get("name"):
        return str(attributes["name"])
    return " ".join(str(attributes[k]) for k in ("first_name", "last_name") if attributes.get(k))
