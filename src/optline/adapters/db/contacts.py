"""Contacts: one row per E.164 number."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, any_, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY

from optline.adapters.db import bulk
from optline.adapters.db.database import SQLITE_JSON_IN_FROM, one_of
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
    """The contact for ``phone`` and whether this call created it; race-free on both engines.

    Two first messages from a new number can arrive at once: a plain INSERT after a SELECT that found nothing
    would fail on the unique phone for one of them. INSERT … ON CONFLICT DO NOTHING waits for the other
    writer and then inserts nothing; the second SELECT (a new statement, so it sees the committed row under
    READ COMMITTED, and SQLite writers are serialised) finds the winner's row.
    """
    existing = get_by_phone(conn, phone.e164)  # the common case, without spending a sequence value
    if existing:
        return existing, False
    row = conn.execute(
        insert_ignoring_duplicates(conn).values(**values_for(phone, now, **extra)).returning(*contacts.c)
    ).first()
    if row is not None:
        return dict(row._mapping), True
    created_elsewhere = get_by_phone(conn, phone.e164)
    if created_elsewhere is None:  # pragma: no cover - the conflict means the row exists
        raise RuntimeError(f"contact {phone.e164} conflicted on insert but cannot be read")
    return created_elsewhere, False


def create_many(
    conn: Connection, phones: list[Phone], now: datetime
) -> tuple[dict[str, dict[str, Any]], set[int]]:
    """``get_or_create`` for the new numbers of a burst of replies, in one INSERT … ON CONFLICT DO NOTHING:
    phone -> contact for every one of ``phones``, and the ids this call created.

    A number another writer created meanwhile (another writer thread, another ``serve --workers`` process)
    conflicts, waits for that writer as ``get_or_create``'s insert does, and is read back after (a new
    statement, so under READ COMMITTED it sees the committed row; SQLite's writers are serialised). The rows
    go in phone order: two batches that share new numbers then wait for each other's rows in one order, never
    in a cycle (a deadlock would cost its loser a second's detection and a retry of each reply alone)."""
    wanted = sorted({p.e164: p for p in phones}.values(), key=lambda p: p.e164)
    if not wanted:
        return {}, set()
    rows = [values_for(phone, now) for phone in wanted]
    if conn.dialect.name == "postgresql":  # one statement text whatever the batch's size (bulk.unnested)
        inserted = conn.execute(_CREATE_UNNESTED, bulk.unnest_params(_CREATE_COLUMNS, rows))
    else:  # SQLAlchemy's "insertmanyvalues": one multi-row INSERT … RETURNING for the batch
        inserted = conn.execute(_CREATE_SQLITE, rows)
    found = {r.phone: dict(r._mapping) for r in inserted}
    created = {int(c["id"]) for c in found.values()}
    missing = [p.e164 for p in wanted if p.e164 not in found]
    if missing:  # created by another writer since the batch looked its senders up
        found.update(get_by_phones(conn, missing))
    if len(found) != len(wanted):  # pragma: no cover - the conflict means the row exists
        lost = sorted({p.e164 for p in wanted} - set(found))
        raise RuntimeError(f"contacts {', '.join(lost)} conflicted on insert but cannot be read")
    return found, created


_CREATE_COLUMNS = [
    "phone", "region", "number_type", "time_zone", "time_zone_overridden", "us_state", "locale", "attributes",
    "created_at", "updated_at",
]  # fmt: skip
_CREATE_ROWS = bulk.unnested(contacts, _CREATE_COLUMNS)
_CREATE_UNNESTED = (
    postgresql.insert(contacts)
    .from_select(_CREATE_COLUMNS, select(*(_CREATE_ROWS.c[c] for c in _CREATE_COLUMNS)))
    .on_conflict_do_nothing(index_elements=["phone"])
    .returning(*contacts.c)
)
_CREATE_SQLITE = (
    sqlite.insert(contacts).on_conflict_do_nothing(index_elements=["phone"]).returning(*contacts.c)
)


def insert_ignoring_duplicates(conn: Connection) -> Any:
    """INSERT INTO contacts … ON CONFLICT (phone) DO NOTHING, in the connection's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(contacts).on_conflict_do_nothing(index_elements=["phone"])


# Built once: every inbound reply looks its sender up (building the statement cost more than running it).
_BY_PHONE = select(contacts).where(contacts.c.phone == bindparam("phone"))


def get_by_phone(conn: Connection, e164: str) -> dict[str, Any] | None:
    row = conn.execute(_BY_PHONE, {"phone": e164}).first()
    return dict(row._mapping) if row else None


def get_by_phones(conn: Connection, e164s: list[str]) -> dict[str, dict[str, Any]]:
    """phone -> contact, for those of ``e164s`` that exist (one statement: a burst of replies)."""
    if not e164s:
        return {}
    if len(e164s) == 1:
        found = get_by_phone(conn, e164s[0])
        return {e164s[0]: found} if found else {}
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_BY_PHONES_PG, {"phones": e164s})
    elif len(e164s) <= SQLITE_JSON_IN_FROM:
        rows = conn.execute(_BY_PHONES_SQLITE, {"phones": e164s})
    else:
        rows = conn.execute(select(contacts).where(one_of(conn, contacts.c.phone, e164s)))
    return {r.phone: dict(r._mapping) for r in rows}


# ``one_of``'s forms, built once (a burst's every batch looks its senders up; building the statement cost
# about what running it did): PostgreSQL's one array parameter, SQLite's IN list of a batch's size.
_BY_PHONES_PG = select(contacts).where(
    contacts.c.phone == any_(bindparam("phones", type_=ARRAY(contacts.c.phone.type)))
)
_BY_PHONES_SQLITE = select(contacts).where(contacts.c.phone.in_(bindparam("phones", expanding=True)))


def get(conn: Connection, contact_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(contacts).where(contacts.c.id == contact_id)).first()
    return dict(row._mapping) if row else None
