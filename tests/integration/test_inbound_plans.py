"""Recording a reply reads indexes, never a table that grows with history (messages, replies, the ledger):
every read a STOP runs, alone and in a batch. Among them the claim's duplicate
look-up searches the unique (provider, provider message id) index, and its attribution (the campaign the
reply answers) searches the person's own messages, not every message sent (services/inbound.py
``_claim_many``, ``_last_campaign``).

Both once cost a scan per STOP or per batch: a row-value IN read the whole unique index on SQLite, and the
attribution's status test took ix_messages_claim on SQLite, whose planner has no statistics (optline runs no
ANALYZE there), so each STOP read every sent message. On PostgreSQL the history is ANALYZEd, as autovacuum
would have it; on SQLite it is not, as in a deployment. The statements are captured as a single reply and a
batch of replies run them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from optline.adapters.providers.base import InboundSms
from optline.bootstrap import Container
from optline.services.inbound import Reply, record_inbound, record_inbound_many
from tests.support import outbound, plans
from tests.support import outbox_rows as rows

SENDER = "+14155550100"
HISTORY = {"messages", "inbound_messages", "consent_events"}


# Sent messages, replies and ledger events of 30 other people: 100 each, or skewed onto one of them (a few
# contacts holding most of the history must not turn PostgreSQL's plans into a Seq Scan either).
SPREADS = {"spread": [100] * 30, "skewed": [3000] + [3] * 29}


def seed_history(container: Container, spread: list[int] = SPREADS["spread"]) -> dict[str, Any]:
    """A program whose 5 subscribers (phones 0-4) reply, beside a campaign's sent messages, past replies and
    ledger events of other people (``spread``: how many of each per person); ANALYZEd on PostgreSQL."""
    with container.db.transaction() as conn:
        clock = container.clock
        program = outbound.make_program(conn, clock, sender_numbers=[SENDER])
        ids = outbound.insert_contacts(conn, clock.now(), 0, 5)
        outbound.subscribe(conn, clock, program, ids)
        campaign = rows.campaign(conn, program, "spring", clock.now())
        for n, person in enumerate(outbound.insert_contacts(conn, clock.now(), 1000, len(spread))):
            rows.bulk_history(
                conn,
                program_id=program["id"],
                contact_id=person,
                at=clock.now(),
                messages_=spread[n],
                events=spread[n],
                first_seq=1,
                inbound_=spread[n],
                digests=0,
                status="sent",
                campaign_id=campaign["id"],
                tag=f"h{n}-",
            )
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")
    return program


def _captured(container: Container) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        # Reads, and the claim (its attribution is a read). Not the other writes: SQLite's plan of an INSERT
        # lists the foreign-key look-ups of tables that refer to it, which it skips unless a deferred
        # constraint is pending (none is).
        head = statement.lstrip().upper()
        if head.startswith(("SELECT", "WITH", "INSERT INTO INBOUND_MESSAGES")):
            seen.append((statement, parameters[0] if many else parameters))

    event.listen(container.db.engine, "before_cursor_execute", capture)
    try:
        with container.db.transaction() as conn:
            clock = container.clock
            one = InboundSms("twilio", "SMone", outbound.phone(0), SENDER, "STOP")
            assert record_inbound(conn, clock, one).consent_event_id is not None
            batch = [
                Reply(InboundSms("twilio", f"SM{i}", outbound.phone(i), SENDER, "STOP")) for i in (1, 2, 3)
            ]
            assert all(r.consent_event_id is not None for r in record_inbound_many(conn, clock, batch))
    finally:
        event.remove(container.db.engine, "before_cursor_execute", capture)
    return seen


def test_a_stop_alone_and_in_a_batch_reads_indexes_not_history(container: Container) -> None:
    seed_history(container)
    statements = _captured(container)
    assert sum("INSERT INTO inbound_messages" in s for s, _ in statements) == 2, statements
    used = plans.assert_no_scan(container, statements, HISTORY)
    assert "ix_messages_claim" not in used, used  # the status index reads every message sent
    if container.db.is_sqlite:  # (PostgreSQL may answer from another index of the person's messages)
        assert {"ix_messages_contact_time", "sqlite_autoindex_inbound_messages_1"} <= used, used
