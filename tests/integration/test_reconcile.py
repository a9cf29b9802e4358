"""Reconciliation through dispatch, on both engines, against fakes that behave like the providers: a
message accepted but not yet sent (Twilio: queued, no DateSent) is found, not sent again; a retry after an
unknown outcome and a reclaim after a crash both wait the provider's ``reconcile_after``; Telnyx's resend
with the same Idempotency-Key is one message."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from optline.adapters.db.tables import messages
from optline.adapters.providers.base import Sender
from optline.adapters.providers.telnyx.send import TelnyxSender
from optline.adapters.providers.twilio.send import TwilioSender
from optline.bootstrap import Container
from optline.services.dispatch import Counts, DispatchConfig, Dispatcher
from tests.integration.test_dispatch import drain, start_campaign
from tests.support import fake_providers as fp
from tests.support import outbound

LEASE = timedelta(seconds=60)


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    # Accepted messages stay queued (Twilio sends them "later"): the case a DateSent filter would hide.
    with fp.FakeProviders(latency=0, settle=3600) as server:  # not a latency test
        yield server


def dispatcher(container: Container, sender: Sender, worker: str = "w1") -> Dispatcher:
    config = DispatchConfig(public_url="https://acme.test", lease=LEASE)
    return Dispatcher(container.db, container.clock, sender, config, worker_id=worker)


def twilio(fake: fp.FakeProviders) -> TwilioSender:
    return TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url)


def the_row(container: Container) -> Any:
    with container.db.read() as conn:
        return conn.execute(select(messages)).one()


def test_a_lost_answer_is_reconciled_with_a_queued_message_after_reconcile_after(
    container: Container, fake: fp.FakeProviders
) -> None:
    outbound.seed(container, 1)
    start_campaign(container)
    fake.fail(accept=True, drop=True)  # Twilio accepted it (queued, no date_sent); the answer is lost
    sender = twilio(fake)
    assert drain(dispatcher(container, sender)).retried == 1
    container.clock.advance(seconds=sender.reconcile_after - 1)
    assert drain(dispatcher(container, sender)).claimed == 0  # too early to look
    container.clock.advance(seconds=2)
    assert drain(dispatcher(container, sender)).sent == 1
    [arrival] = fake.received
    row = the_row(container)
    assert row.provider_message_id == arrival["sid"] and row.status == "sent"


def test_a_crashed_hand_over_is_reclaimed_only_after_reconcile_after(
    container: Container, fake: fp.FakeProviders
) -> None:
    outbound.seed(container, 1)
    start_campaign(container)
    sender = twilio(fake)
    crashed = dispatcher(container, sender, "crashed")
    with container.db.transaction() as conn:
        claimed = crashed.claim(conn, container.clock.now(), 10)
    with container.db.transaction() as conn:
        [item] = crashed.check(conn, claimed, Counts())
    crashed.deliver(item)  # the provider accepted it, then the worker died before recording
    other = dispatcher(container, sender)
    container.clock.advance(seconds=LEASE.total_seconds() + 1)
    assert drain(other).claimed == 0  # the lease alone has run out, but the list may not show it yet
    container.clock.advance(seconds=sender.reconcile_after)
    assert drain(other).sent == 1
    assert len(fake.received) == 1 and the_row(container).provider_message_id == fake.received[0]["sid"]


def test_telnyx_resend_with_the_same_key_after_a_lost_answer_is_one_message(
    container: Container, fake: fp.FakeProviders
) -> None:
    outbound.seed(container, 1)
    start_campaign(container)
    fake.fail(provider="telnyx", accept=True, drop=True)
    sender = TelnyxSender(fp.TELNYX_KEY, fake.url)
    assert sender.reconcile_after == 0  # the resend is the reconciliation
    assert drain(dispatcher(container, sender)).retried == 1
    container.clock.advance(seconds=5)
    assert drain(dispatcher(container, sender)).sent == 1
    [arrival] = fake.received
    assert the_row(container).provider_message_id == arrival["sid"]
