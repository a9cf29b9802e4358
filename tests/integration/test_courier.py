"""Dispatch with the provider calls in a courier process (what ``optline worker`` runs for HTTP providers),
on both engines, against the fake Twilio server: the same guarantees as in one process — checks after the
claim, nothing left 'sending' on close, provider errors and opt-outs recorded — and a courier that dies
loses nothing."""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from optline.adapters.clock import SystemClock
from optline.adapters.db.tables import consent_events, messages, subscriptions
from optline.adapters.providers.twilio.send import TwilioSender
from optline.bootstrap import Container
from optline.config import Settings
from optline.entrypoints.worker import dispatcher_for
from optline.services import campaigns
from optline.services.courier import CourierGone
from optline.services.dispatch import Counts, DispatchConfig, Dispatcher
from tests.support import fake_providers as fp
from tests.support import outbound


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders(latency=0) as server:  # not a latency test
        yield server


@pytest.fixture
def live(container: Container) -> Container:
    container.clock = SystemClock()  # the courier reports provider answers on the system clock
    return container


def courier_dispatcher(container: Container, fake: fp.FakeProviders, **config: Any) -> Dispatcher:
    factory = functools.partial(TwilioSender, fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url)
    sender = TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url)
    config = {"public_url": "https://acme.test", "pipeline": True, "courier": factory, **config}
    return Dispatcher(container.db, container.clock, sender, DispatchConfig(**config), worker_id="w1")


def start_campaign(container: Container) -> None:
    with container.db.transaction() as conn:
        campaign = campaigns.create(conn, container.clock, program="deals", name="c1",
                                    template="Hi {{ first_name }}, 20% off")  # fmt: skip
        campaigns.start(conn, container.clock, campaign)


def statuses(container: Container) -> dict[int, str]:
    with container.db.read() as conn:
        return {
            r.contact_id: r.status for r in conn.execute(select(messages.c.contact_id, messages.c.status))
        }


def queued_when(container: Container, n: int) -> list[int]:
    """The contacts still queued, once exactly ``n`` are (a batch is claimed while the courier sends)."""
    deadline = time.monotonic() + 60
    while True:
        queued = [cid for cid, status in statuses(container).items() if status == "queued"]
        if len(queued) == n or time.monotonic() > deadline:
            return queued
        time.sleep(0.01)


def test_courier_sends_checks_after_the_claim_and_hands_everything_over_on_close(
    live: Container, fake: fp.FakeProviders
) -> None:
    program, _ids = outbound.seed(live, 100, time_zone=outbound.zone_where(True), us_state=None)
    start_campaign(live)
    dispatcher = courier_dispatcher(live, fake, batch_size=20)
    total = Counts()
    total.add(dispatcher.run_once())  # batch 1 sent by the courier; batch 2 claimed and checked meanwhile
    queued = queued_when(live, 60)
    assert len(queued) == 60
    # Opt-outs committed now protect everyone not claimed yet: batch 3 is claimed and checked after this.
    with live.db.transaction() as conn:
        for cid in queued:
            outbound.opt_out(conn, live.clock, program, cid)
    total.add(dispatcher.run_once())  # batch 2 recorded; batch 3 (all opted out) checked
    total.add(dispatcher.close())
    final = statuses(live)
    assert not [s for s in final.values() if s in ("claimed", "sending")]
    assert total.sent == 40 == len(fake.received) == sum(s == "sent" for s in final.values())
    assert total.suppressed == 20 and total.claimed == 60
    assert sum(s == "queued" for s in final.values()) == 40  # batches 4 and 5: never claimed, never checked
    assert all(m["body"].startswith("Acme: Hi P") for m in fake.received)


def test_provider_errors_and_opt_outs_come_back_from_the_courier(
    live: Container, fake: fp.FakeProviders
) -> None:
    _program, ids = outbound.seed(live, 12, time_zone=outbound.zone_where(True), us_state=None)
    fake.state.opted_out.add(outbound.phone(0))
    fake.fail(status=429, body={"code": 20429, "message": "slow down"}, retry_after=30, to=outbound.phone(1))
    fake.fail(status=400, body={"code": 21211, "message": "Invalid 'To' Phone Number"}, to=outbound.phone(2))
    start_campaign(live)
    dispatcher = courier_dispatcher(live, fake, batch_size=5)
    total = Counts()
    while (counts := dispatcher.run_once()).claimed:
        total.add(counts)
    total.add(dispatcher.close())
    assert (total.sent, total.suppressed, total.retried, total.failed) == (9, 1, 1, 1)
    with live.db.read() as conn:
        by_phone = {r.to_phone: r for r in conn.execute(select(messages))}
        event = conn.execute(select(consent_events).where(consent_events.c.contact_id == ids[0])
                             .order_by(consent_events.c.seq.desc())).first()  # fmt: skip
        sub = conn.execute(
            select(subscriptions.c.status).where(subscriptions.c.contact_id == ids[0])
        ).scalar()
    retry = by_phone[outbound.phone(1)]
    assert retry.status == "queued" and retry.error_code == "20429" and retry.reason == "retry: 20429"
    assert retry.not_before is not None and retry.lease_owner is None
    failed = by_phone[outbound.phone(2)]
    assert (failed.status, failed.error_code) == (
        "failed",
        "21211",
    ) and "Invalid 'To'" in failed.error_message
    assert by_phone[outbound.phone(0)].reason == "recipient opted out at the provider"
    assert (
        event is not None
        and (event.action, event.channel) == ("opt_out", "provider")
        and sub == "unsubscribed"
    )


def test_a_courier_that_dies_loses_nothing_and_is_replaced(live: Container, fake: fp.FakeProviders) -> None:
    outbound.seed(live, 30, time_zone=outbound.zone_where(True), us_state=None)
    start_campaign(live)
    fake.fail(
        to=outbound.phone(12), accept=True, delay=30
    )  # accepted; the courier dies waiting for the answer
    dispatcher = courier_dispatcher(live, fake, batch_size=10)
    assert dispatcher.run_once().sent == 10
    deadline = time.monotonic() + 30
    while not any(m["to"] == outbound.phone(12) for m in fake.received) and time.monotonic() < deadline:
        time.sleep(0.01)
    courier = dispatcher._courier
    assert courier is not None and courier._process is not None and courier._process.pid is not None
    os.kill(courier._process.pid, signal.SIGKILL)
    with pytest.raises(CourierGone, match="exited"):
        dispatcher.run_once()
    # What the dead courier held is still 'sending' with its hand-over time: when the lease expires the next
    # claim reconciles it with the provider (test_dispatch covers that path) — never a blind resend.
    # Calls that returned before it died were stored as they returned (their provider ids are known).
    with live.db.read() as conn:
        held = list(conn.execute(select(messages).where(messages.c.status == "sending")))
        stored = list(conn.execute(select(messages).where(messages.c.status == "sent")))
    assert held and all(r.handed_over_at is not None and r.lease_owner == "w1" for r in held)
    assert outbound.phone(12) in {r.to_phone for r in held}
    assert len(stored) >= 10 and all(r.provider_message_id for r in stored)
    total = Counts()
    while (counts := dispatcher.run_once()).claimed:  # a new courier takes what is still queued
        total.add(counts)
    total.add(dispatcher.close())
    assert total.sent + len(held) + len(stored) == 30
    assert len({m["to"] for m in fake.received}) == len(fake.received)  # nobody twice


def test_a_sender_that_cannot_be_built_is_reported_without_its_secrets(
    container: Container, fake: fp.FakeProviders
) -> None:
    factory = functools.partial(TwilioSender, "", fp.TWILIO_TOKEN, fake.url)  # no account SID
    config = DispatchConfig(public_url="https://acme.test", courier=factory)
    sender = TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url)
    dispatcher = Dispatcher(container.db, container.clock, sender, config, worker_id="w1")
    with pytest.raises(CourierGone, match="OPTLINE_TWILIO_ACCOUNT_SID") as raised:
        dispatcher.start()
    assert fp.TWILIO_TOKEN not in str(raised.value)
    dispatcher.close()


def test_worker_uses_a_courier_for_http_providers_only(container: Container, fake: fp.FakeProviders) -> None:
    assert dispatcher_for(container)._courier is None  # the simulator writes to the database in-process
    twilio = Settings(env="test", database_url=container.settings.database_url, provider="twilio",
                      twilio_account_sid=fp.TWILIO_SID, twilio_auth_token=fp.TWILIO_TOKEN, twilio_base_url=fake.url)  # fmt: skip
    container.settings = twilio
    assert dispatcher_for(container)._courier is not None
    container.settings = twilio.model_copy(update={"worker_courier": False})
    assert dispatcher_for(container)._courier is None
