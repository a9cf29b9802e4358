"""Dispatching the confirmations of STOPs reads indexes, never a table that grows with history: every read the
dispatcher runs (claim, send-time check, hand-over, recording the provider's answers) is checked against a
seeded history of sent messages, replies and ledger events, spread over people or skewed onto one.

Among them the send-time check's history of a batch's recipients (services/send_check.py ``History``: what
they were sent lately, for caps, state limits and the monthly opt-out text) searches their own messages
(ix_messages_contact_time), and the recorder's guard read (services/recording.py ``write``) goes by id. On
SQLite, whose planner has no statistics (optline runs no ANALYZE there), both took ix_messages_claim
(status, …): the first read every message ever handed over, once per batch — what ``optline serve`` spent
most of its CPU on per STOP over HTTP with 50,000 past messages. On PostgreSQL the history is ANALYZEd, as
autovacuum would have it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from optline.adapters.providers.base import InboundSms
from optline.adapters.providers.twilio.send import TwilioSender
from optline.bootstrap import Container
from optline.services.dispatch import DispatchConfig, Dispatcher
from optline.services.inbound import Reply, record_inbound_many
from tests.integration.test_inbound_plans import HISTORY, SENDER, SPREADS, seed_history
from tests.support import fake_providers as fp
from tests.support import outbound, plans

STOPS = 5  # the replying subscribers seed_history makes


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders(latency=0) as server:  # not a latency test
        yield server


def _dispatched(container: Container, fake: fp.FakeProviders) -> list[tuple[str, Any]]:
    """The reads dispatching the confirmations of ``STOPS`` STOPs runs, in every thread of the dispatcher."""
    with container.db.transaction() as conn:
        batch = [
            Reply(InboundSms("twilio", f"SM{i}", outbound.phone(i), SENDER, "STOP")) for i in range(STOPS)
        ]
        assert all(r.consent_event_id is not None for r in record_inbound_many(conn, container.clock, batch))
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        # Reads only: SQLite's plan of a write lists the foreign-key look-ups of tables that refer to the
        # table written, which it skips at run time (no deferred constraint is pending).
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, parameters[0] if many else parameters))

    sender = TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url)
    dispatcher = Dispatcher(
        container.db, container.clock, sender, DispatchConfig(public_url="https://acme.test"), worker_id="w1"
    )
    event.listen(container.db.engine, "before_cursor_execute", capture)
    try:
        sent = 0
        while (counts := dispatcher.run_once()).claimed:
            sent += counts.sent
        sent += dispatcher.close().sent
    finally:
        event.remove(container.db.engine, "before_cursor_execute", capture)
    assert sent == STOPS, sent  # every confirmation went out: the reads below are those of a real dispatch
    return seen


def _the(statements: list[tuple[str, Any]], pattern: str) -> list[tuple[str, Any]]:
    found = [(s, p) for s, p in statements if re.search(pattern, " ".join(s.split()))]
    assert found, (pattern, [s for s, _ in statements])
    return found


@pytest.mark.parametrize("spread", SPREADS)
def test_dispatching_confirmations_reads_indexes_not_history(
    container: Container, fake: fp.FakeProviders, spread: str
) -> None:
    seed_history(container, SPREADS[spread])
    statements = _dispatched(container, fake)
    plans.assert_no_scan(container, statements, HISTORY)
    # The recipients' history: their own messages, not the status index over every message handed over.
    recent = plans.assert_no_scan(container, _the(statements, r"messages\.handed_over_at >="), HISTORY)
    assert "ix_messages_claim" not in recent, recent
    if container.db.is_sqlite:  # (PostgreSQL may answer from another index of the person's messages)
        assert "ix_messages_contact_time" in recent, recent
    if container.db.is_sqlite:  # the recorder's guard read (PostgreSQL guards inside its UPDATE): by id
        guard = _the(statements, r"^SELECT messages\.id FROM messages WHERE .*messages\.lease_owner =")
        assert "ix_messages_claim" not in plans.assert_no_scan(container, guard, HISTORY)
