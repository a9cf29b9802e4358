"""``one_of``: large IN lists as one parameter (an array on PostgreSQL, JSON on SQLite) find exactly the rows."""

from __future__ import annotations

from sqlalchemy import select

from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.database import SQLITE_JSON_IN_FROM, one_of
from optline.adapters.db.tables import contacts
from optline.bootstrap import Container
from optline.domain.phones import parse_phone


def test_large_and_small_lists_of_ids_and_phones(container: Container) -> None:
    n = SQLITE_JSON_IN_FROM * 2
    with container.db.transaction() as conn:
        ids = {}
        for i in range(n):
            row, _ = contact_repo.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), container.clock.now())
            ids[row["phone"]] = row["id"]
    wanted_phones = [*sorted(ids)[::2], "+19999999999", 'it\'s "quoted"']
    wanted_ids = [ids[p] for p in sorted(ids)[1::2]] + [10**12]
    with container.db.read() as conn:
        for values, column, expected in (
            (wanted_phones, contacts.c.phone, set(sorted(ids)[::2])),
            (wanted_ids, contacts.c.id, {ids[p] for p in sorted(ids)[1::2]}),
            (wanted_ids[:5], contacts.c.id, {ids[p] for p in sorted(ids)[1::2][:5]}),
        ):
            found = set(conn.execute(select(column).where(one_of(conn, column, values))).scalars())
            assert found == expected
