"""Concurrent dispatchers on PostgreSQL: the counter triggers add no lock waits between them (each backend
writes its own shard), and the sums stay exact."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update

from optline.adapters.db import contacts, counters
from optline.adapters.db.tables import message_counts, messages
from optline.bootstrap import Container
from optline.domain.phones import parse_phone
from optline.services.programs import create_program
from tests.support import outbox_rows as rows

T = datetime(2026, 11, 20, tzinfo=UTC)


def test_concurrent_status_updates_keep_exact_counts(container: Container) -> None:
    if container.db.is_sqlite:
        pytest.skip("SQLite serialises all writers by design (one process, BEGIN IMMEDIATE)")
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="p", brand="B"
        )
        camp = rows.campaign(conn, program, "c", T)
        people = [contacts.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), T)[0] for i in range(400)]
        ids = [
            rows.message(conn, program=program, contact=p, at=T, campaign=camp, status="queued")
            for p in people
        ]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def dispatcher(mine: list[int]) -> None:
        try:
            start.wait()
            for i in range(0, len(mine), 10):  # batches in separate transactions, all on the same counter key
                batch = mine[i : i + 10]
                with container.db.transaction() as conn:
                    conn.execute(
                        update(messages).where(messages.c.id.in_(batch)).values(status="sent", sent_at=T)
                    )
                with container.db.transaction() as conn:
                    conn.execute(
                        update(messages).where(messages.c.id.in_(batch[::2])).values(status="delivered")
                    )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=dispatcher, args=(ids[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    with container.db.transaction() as conn:
        sent, delivered = conn.execute(
            select(func.sum(message_counts.c.sent), func.sum(message_counts.c.delivered))
        ).one()
        shards = conn.execute(select(func.count(func.distinct(message_counts.c.shard)))).scalar_one()
        counters.rebuild(conn)
        rebuilt = conn.execute(
            select(func.sum(message_counts.c.sent), func.sum(message_counts.c.delivered))
        ).one()
    assert (sent, delivered) == (400, 200) == tuple(rebuilt)
    assert shards >= 2  # the writers used their own rows
