"""Every query /metrics runs at scrape time reads an index or a small counts table, never a scan of a table
that grows with history (messages, the ledger, inbound replies, digests).

The statements are captured as the collector runs them (whatever it runs, not a list kept here), on a
database with a long history in bulk (delivered messages, ledger events, decided replies, digests) and a
few live rows, after ANALYZE, so that each planner chooses with real statistics: SQLite's EXPLAIN QUERY
PLAN must show no SCAN of a history table, PostgreSQL's EXPLAIN no Seq Scan of one (with enable_seqscan
left on: a plan that only avoids a Seq Scan when it is forbidden proves nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, update

from optline.adapters.db import contacts
from optline.adapters.db.tables import messages
from optline.adapters.metrics import DatabaseCollector
from optline.bootstrap import Container
from optline.domain.phones import parse_phone
from optline.services.programs import create_program
from tests.support import outbox_rows as rows
from tests.support import plans

HISTORY_TABLES = {"messages", "consent_events", "inbound_messages", "ledger_digests"}
T = datetime(2026, 1, 5, tzinfo=UTC)


def history(container: Container, n: int) -> None:
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="p", brand="B"
        )
        person = contacts.get_or_create(conn, parse_phone("+14155550001"), T)[0]
        rows.bulk_history(
            conn,
            program_id=program["id"],
            contact_id=person["id"],
            at=T,
            messages_=n,
            events=n,
            inbound_=n,
            digests=n // 4,
        )
        # A few live rows: queued in each lane, one reply waiting for review.
        live = contacts.get_or_create(conn, parse_phone("+14155550002"), T)[0]
        for lane in (0, 1):
            mid = rows.message(
                conn, program=program, contact=live, at=T + timedelta(days=300), status="queued", kind="help"
            )
            conn.execute(update(messages).where(messages.c.id == mid).values(priority=lane))
        rows.inbound(conn, contact=live, program=program, body="maybe", at=T, review=True)
        conn.exec_driver_sql("ANALYZE")


def captured(container: Container) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(container.db.engine, "before_cursor_execute", capture)
    try:
        families = {m.name: m for m in DatabaseCollector(container.db, container.clock.now).collect()}
    finally:
        event.remove(container.db.engine, "before_cursor_execute", capture)
    assert families["optline_database_up"].samples[0].value == 1
    depth = {s.labels["lane"]: s.value for s in families["optline_queue_depth"].samples}
    assert depth == {"reply": 1, "bulk": 1}  # so the oldest-queued probes ran too
    return seen


def test_every_scrape_query_reads_an_index_not_the_history(container: Container) -> None:
    history(container, 20_000)
    statements = captured(container)
    assert len(statements) >= 5
    used = plans.assert_no_scan(container, statements, HISTORY_TABLES)
    # The indexes the collector's docstring names (the counts tables are a few rows: any plan will do).
    assert {"ix_messages_queued_age", "ix_inbound_review", "ix_ledger_digests_created"} <= used, used
