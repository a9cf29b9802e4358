"""A message dispatch gives up on becomes a message.failed event, queued in dispatch's own write (both
engines); a message that was sent is not an event until its receipt says what became of it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from optline.adapters.db.tables import messages, webhook_deliveries
from optline.bootstrap import Container
from optline.services import event_hooks
from tests.integration.test_dispatch import drain, make_dispatcher, start_campaign
from tests.support import fake_providers as fp
from tests.support import outbound


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders(latency=0) as server:  # not a latency test
        yield server


def test_a_permanent_failure_queues_message_failed(container: Container, fake: fp.FakeProviders) -> None:
    box = container.secret_box()  # outside the transaction: it may write the generated key
    with container.db.transaction() as conn:
        event_hooks.create_endpoint(
            conn,
            container.clock,
            box,
            url="https://crm.example.com/hooks",
            events=["message.failed", "message.delivered"],
            development=False,
        )
    outbound.seed(container, 2)
    start_campaign(container)
    fake.fail(status=400, body={"code": 21211, "message": "Invalid 'To' Phone Number"}, to=outbound.phone(0))
    drain(make_dispatcher(container, fake))
    with container.db.read() as conn:
        failed = conn.execute(select(messages.c.id).where(messages.c.status == "failed")).scalar_one()
        deliveries = [dict(r._mapping) for r in conn.execute(select(webhook_deliveries))]
    (delivery,) = deliveries  # the other message was sent: no event until its receipt
    body = json.loads(delivery["body"])
    assert body["type"] == "message.failed" and body["data"]["message_id"] == failed
    assert body["data"]["error_code"] == "21211" and body["data"]["phone"] == outbound.phone(0)
