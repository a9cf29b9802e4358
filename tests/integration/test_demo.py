"""The demo goes through the real outbound path on both engines: campaigns service, dispatcher, simulator."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from optline.adapters.clock import FrozenClock
from optline.adapters.db.tables import campaigns, messages, simulator_messages
from optline.bootstrap import Container, build
from optline.config import Settings
from optline.services import demo
from tests.support import outbound


@pytest.mark.parametrize("hour", [3, 19])  # night and day across the US on the wall clock
def test_demo_campaigns_are_dispatched_at_any_hour(settings: Settings, hour: int) -> None:
    c = build(settings, clock=FrozenClock(datetime(2026, 11, 26, hour, 0, tzinfo=UTC)))
    try:
        summary = demo.load(c, contacts=80)
        with c.db.read() as conn:
            states = {r.name: r.status for r in conn.execute(select(campaigns.c.name, campaigns.c.status))}
            by_status = dict(
                conn.execute(select(messages.c.status, func.count()).group_by(messages.c.status)).all()
            )
            marketing = conn.execute(
                select(messages).where(messages.c.kind == "marketing").order_by(messages.c.id)
            ).all()
            outbox = {
                r.sid: r
                for r in conn.execute(
                    select(simulator_messages).where(simulator_messages.c.direction == "out")
                )
            }
    finally:
        c.close()
    assert states == {"Autumn blend launch": "done", "Weekend 2-for-1 lattes": "done"}
    # Nothing waits for the morning, nothing is left for another worker: all handed over and reported.
    assert set(by_status) <= {"delivered", "undelivered"}, by_status
    assert summary.sent == len(marketing)
    first, second = (
        sum(1 for m in marketing if m.campaign_id == cid)
        for cid in sorted({m.campaign_id for m in marketing})
    )
    assert first == 80 and second < 80  # who opted out after the first is not in the second's audience
    for m in marketing:
        # Composed by the dispatcher after its check, handed to the simulator, receipt from the status path.
        assert m.provider == "simulator" and m.handed_over_at is not None and m.attempts == 1
        assert m.body.startswith("Bluebird Coffee: ") and f"/u/{m.optout_token}" in m.body
        copy = outbox[m.provider_message_id]
        assert copy.body == m.body and copy.status == m.status
        assert (m.status == "delivered") == (m.delivered_at is not None)


def test_demo_refuses_a_database_with_messages_waiting(container: Container) -> None:
    with container.db.transaction() as conn:
        program = outbound.make_program(conn, container.clock)
        (cid,) = outbound.insert_contacts(conn, container.clock.now(), 0, 1)
        from optline.services import outbox

        outbox.enqueue(
            conn,
            container.clock,
            program_id=program["id"],
            contact_id=cid,
            to_phone=outbound.phone(0),
            kind=outbox.Kind.TRANSACTIONAL,
            body="Your order shipped",
            idempotency_key="order-1",
        )
    with pytest.raises(demo.DemoRefused, match="1 messages are waiting to be sent"):
        demo.load(container, contacts=20)
    with container.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(campaigns)).scalar_one() == 0
