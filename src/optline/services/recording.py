"""Recording what dispatch decided and what the provider answered: every status write of dispatch, guarded.

``write`` is the one place a dispatch status write happens: each row must still have the status and lease
owner the writer expects, so a cancel, a pause's release or another worker's reclaim that committed
meanwhile is never overwritten (the row is left alone and counted as ``lost``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, text, update
from sqlalchemy.sql.elements import TextClause

from optline.adapters.clock import Clock
from optline.adapters.db.tables import messages
from optline.services import event_hooks


@dataclass
class Outcome:
    id: int
    values: dict[str, Any]
    tally: str | None = None  # the Counts field this outcome adds one to, once its guarded write landed


def write(conn: Connection, clock: Clock, outcomes: list[Outcome], *, expect: tuple[str, str]) -> set[int]:
    """Write the outcomes, each guarded by ``expect`` = (status, lease owner) the row must still have;
    returns the ids whose write landed. Every status write of dispatch goes through here, so a cancel, a
    pause's release or another worker's reclaim that committed meanwhile is never overwritten.

    Outcomes are grouped by the columns they set. On PostgreSQL a group is one ``UPDATE … FROM
    unnest(<one array per column>) … RETURNING``: the statement-level analytics trigger on ``messages``
    (adapters/db/counters.py) then runs once per group instead of once per message — it was most of the
    database's work per message — and the SQL text depends only on the column set, so it is compiled and
    prepared once. (A ``FROM (VALUES …)`` with one parameter per cell was measured slower than
    executemany: compiling 2,000 parameters per batch cost more than it saved.) SQLite has no
    statement-level triggers to save, and its executemany cannot say which rows matched: one UPDATE …
    RETURNING per row (in-process, microseconds each).
    """
    written: set[int] = set()
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for o in outcomes:
        groups[tuple(sorted(o.values))].append({"b_id": o.id, **o.values})
    status, owner = expect
    for columns, rows in groups.items():
        if conn.dialect.name == "postgresql":
            # A value shared by the whole group (status, hand-over time, provider…) is sent once.
            same = tuple(c for c in columns if all(r[c] == rows[0][c] for r in rows))
            params: dict[str, Any] = {n: [r[n] for r in rows] for n in ("b_id", *columns) if n not in same}
            params.update({c: rows[0][c] for c in same})
            params.update(expect_status=status, expect_owner=owner)
            written.update(conn.execute(update_from_arrays(conn, columns, same), params).scalars())
            continue
        stmt = (
            update(messages)
            .where(messages.c.id == bindparam("b_id"), messages.c.status == status,
                   messages.c.lease_owner == owner)
            .values({c: bindparam(c) for c in columns})
            .returning(messages.c.id)
        )  # fmt: skip
        for row in rows:
            written.update(conn.execute(stmt, row).scalars())
    # A message that failed for good is an event for webhook endpoints, queued in this same write.
    failed = [o.id for o in outcomes if o.values.get("status") == "failed" and o.id in written]
    if failed:
        event_hooks.emit_message_failures(conn, clock, failed)
    return written


def update_from_arrays(conn: Connection, columns: tuple[str, ...], same: tuple[str, ...]) -> TextClause:
    def sql_type(column: str) -> str:
        # VARCHAR(n)[] would silently truncate; the unbounded type lets the column's own limit refuse.
        return re.sub(r"\(\d+\)", "", messages.c[column].type.compile(dialect=conn.dialect))

    varying = [c for c in columns if c not in same]
    arrays = ", ".join(["CAST(:b_id AS BIGINT[])", *(f"CAST(:{c} AS {sql_type(c)}[])" for c in varying)])
    values = [f"{c} = CAST(:{c} AS {sql_type(c)})" if c in same else f"{c} = v.{c}" for c in columns]
    return text(
        f"UPDATE messages AS m SET {', '.join(values)} "
        f"FROM unnest({arrays}) AS v({', '.join(['b_id', *varying])}) "
        "WHERE m.id = v.b_id AND m.status = :expect_status AND m.lease_owner = :expect_owner RETURNING m.id"
    )
