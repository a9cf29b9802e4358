"""Enqueueing is idempotent on its key: one INSERT … ON CONFLICT DO NOTHING, and a repeated key returns the
first row unchanged (services/outbox.py)."""

from __future__ import annotations

from sqlalchemy import func, select

from optline.adapters.db.tables import messages
from optline.bootstrap import Container
from optline.services import outbox
from tests.support import outbound


def test_the_same_key_twice_is_one_message(container: Container) -> None:
    with container.db.transaction() as conn:
        program = outbound.make_program(conn, container.clock)
        [cid] = outbound.insert_contacts(conn, container.clock.now(), 0, 1)
        key = outbox.key("reply", "optout", "twilio", "SM1")
        first = outbox.enqueue(
            conn,
            container.clock,
            program_id=program["id"],
            contact_id=cid,
            to_phone=outbound.phone(0),
            kind=outbox.Kind.CONFIRMATION,
            body="first",
            idempotency_key=key,
        )
    with container.db.transaction() as conn:
        again = outbox.enqueue(
            conn,
            container.clock,
            program_id=program["id"],
            contact_id=cid,
            to_phone=outbound.phone(0),
            kind=outbox.Kind.CONFIRMATION,
            body="second",
            idempotency_key=key,
        )
        count = conn.execute(select(func.count()).select_from(messages)).scalar()
    assert again == first and again["body"] == "first" and count == 1
    assert first["status"] == "queued" and first["priority"] == outbox.REPLY_LANE
