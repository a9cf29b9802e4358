"""Dispatch with K provider calls in flight, on both engines against the fake Twilio server: a 429 pauses
the sender for every worker, a configuration error pauses the campaign, results are stored as calls
return, and no call begins after its batch's deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from optline.adapters.clock import SystemClock
from optline.adapters.db.tables import campaigns as campaigns_table
from optline.adapters.db.tables import messages, sender_limits
from optline.adapters.providers.base import OutboundSms
from optline.adapters.providers.twilio.send import TwilioSender
from optline.bootstrap import Container
from optline.services import campaigns
from optline.services.dispatch import Counts, DispatchConfig, Dispatcher
from optline.services.handover import Handover, Pool, Run
from tests.support import fake_providers as fp
from tests.support import outbound

THROTTLED = {"code": 20429, "message": "Too Many Requests", "status": 429}
BAD_CREDENTIALS = {"code": 20003, "message": "Authenticate", "status": 401}


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders() as server:
        yield server


@pytest.fixture
def live(container: Container) -> Container:
    container.clock = SystemClock()  # pauses and slots are real time
    return container


def worker(container: Container, fake: fp.FakeProviders, name: str, **config: Any) -> Dispatcher:
    sender = TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url)
    settings = {"public_url": "https://acme.test", "concurrency": 8, **config}
    return Dispatcher(container.db, container.clock, sender, DispatchConfig(**settings), worker_id=name)


def start_campaign(container: Container) -> dict[str, Any]:
    with container.db.transaction() as conn:
        campaign = campaigns.create(conn, container.clock, program="deals", name="c1", template="Hi, 20% off")
        campaign, _ = campaigns.start(
            conn, container.clock, campaign, public_url=container.settings.public_url
        )
    return campaign


def statuses(container: Container) -> list[Any]:
    with container.db.read() as conn:
        return list(conn.execute(select(messages).order_by(messages.c.id)))


def test_a_429_pauses_the_sender_for_every_worker(live: Container, fake: fp.FakeProviders) -> None:
    outbound.seed(live, 6, time_zone=outbound.zone_where(True), us_state=None)
    start_campaign(live)
    # The other worker must claim while the pause outlasts its 1 s window: 8 s leaves a loaded machine
    # 7 s between the 429 and that claim.
    fake.fail(status=429, retry_after=8, body=THROTTLED, to=outbound.phone(0))
    first = worker(live, fake, "w1", batch_size=1)
    second = worker(live, fake, "w2", batch_size=10, send_window=1.0)
    before = time.time()
    got = first.run_once(top_up=False)
    assert got.retried == 1 and not fake.received  # the one call was refused: 429
    with live.db.read() as conn:
        pause = conn.execute(select(sender_limits)).one()
    # Paused for the provider's 8 s from the 429 (which came after ``before``), however long that took.
    assert pause.paused_until >= before + 7.99 and "throttled" in (pause.pause_reason or "")
    throttled = statuses(live)[0]
    assert throttled.status == "queued" and throttled.attempts == 0 and throttled.handed_over_at is None
    # The other worker claims the rest while the sender is paused: nothing is sent, all back unchecked.
    other = second.run_once(top_up=False)
    assert (other.claimed, other.released, other.sent) == (5, 5, 0) and not fake.received
    assert all(r.status == "queued" and r.handed_over_at is None for r in statuses(live))
    time.sleep(max(0.0, pause.paused_until - time.time()) + 0.1)
    total = Counts()
    deadline = time.monotonic() + 30
    while total.sent < 6 and time.monotonic() < deadline:
        total.add(second.run_once())
        time.sleep(0.05)
    first.close(), second.close()
    assert total.sent == 6 and sorted(m["to"] for m in fake.received) == sorted(
        outbound.phone(i) for i in range(6)
    )
    first_accepted = min(datetime.fromisoformat(m["at"]).timestamp() for m in fake.received)
    assert first_accepted >= pause.paused_until - 0.05  # no worker called the sender during the pause


def test_a_configuration_error_pauses_the_campaign_instead_of_failing_each_message(
    live: Container, fake: fp.FakeProviders
) -> None:
    outbound.seed(live, 12, time_zone=outbound.zone_where(True), us_state=None)
    campaign = start_campaign(live)
    fake.fail(status=401, body=BAD_CREDENTIALS, times=1)
    dispatcher = worker(live, fake, "w1", concurrency=1, batch_size=12)
    counts = dispatcher.run_once(top_up=False)
    assert counts.failed == 0 and counts.sent == 0 and not fake.received
    with live.db.read() as conn:
        row = conn.execute(select(campaigns_table).where(campaigns_table.c.id == campaign["id"])).one()
    assert row.status == "paused" and "configuration error (20003)" in row.pause_reason
    rows = statuses(live)
    assert all(r.status == "queued" and r.attempts == 0 and r.handed_over_at is None for r in rows)
    assert dispatcher.run_once().claimed == 0  # a paused campaign is not claimed
    with live.db.transaction() as conn:
        resumed = campaigns.resume(conn, campaign)
    assert resumed["pause_reason"] is None
    total = Counts()
    while (step := dispatcher.run_once()).claimed or dispatcher.in_flight:
        total.add(step)
    total.add(step)
    dispatcher.close()
    assert total.sent == 12 == len(fake.received)


def test_results_are_stored_as_the_calls_return(live: Container, fake: fp.FakeProviders) -> None:
    """One slow call does not hold back the others' provider ids (a receipt may arrive in seconds)."""
    outbound.seed(live, 8, time_zone=outbound.zone_where(True), us_state=None)
    start_campaign(live)
    fake.fail(to=outbound.phone(0), status=500, body={"code": 20500, "message": "slow"})
    # The slow call is held at the provider until the test has seen the others stored (or gives up), so
    # the outcome does not depend on how fast a loaded machine gets through the other seven.
    release = threading.Event()
    take_failure = fake.state.take_failure

    def slow_for_the_first(provider: str, to: str) -> dict[str, Any] | None:
        if to == outbound.phone(0):
            release.wait(120)
        return take_failure(provider, to)

    fake.state.take_failure = slow_for_the_first  # type: ignore[method-assign]
    dispatcher = worker(live, fake, "w1", batch_size=8)
    seen: list[tuple[int, int]] = []
    thread = threading.Thread(target=lambda: dispatcher.run_once(top_up=False))
    thread.start()
    deadline = time.monotonic() + 120  # a hang guard only: the release normally comes within a second
    while not release.is_set() and time.monotonic() < deadline:
        rows = statuses(live)
        seen.append(
            (
                sum(r.status == "sent" and r.provider_message_id is not None for r in rows),
                sum(r.status == "sending" for r in rows),
            )
        )
        if seen[-1] == (7, 1):
            release.set()
        time.sleep(0.05)
    release.set()
    thread.join()
    dispatcher.close()
    assert (7, 1) in seen  # seven ids stored while the slow call was still in flight


def test_no_call_begins_after_the_deadline_or_the_check_age_bound(fake: fp.FakeProviders) -> None:
    pool = Pool(TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url), 4, lambda: datetime.now(UTC))
    sms = OutboundSms(to=outbound.phone(1), from_="+14155550100", body="Hi", idempotency_key="k1")
    now = time.monotonic()
    pool.submit(
        1, [Handover(1, sms, None, "+14155550100")], Run(deadline=now - 0.01, checked_at=now, max_check_age=5)
    )
    # Its slot is 1 s away but the check may be only 0.5 s old when the call begins.
    late = Handover(2, sms, None, "+14155550100", slot=time.time() + 1.0)
    pool.submit(2, [late], Run(deadline=now + 60, checked_at=now, max_check_age=0.5))
    on_time = Handover(3, sms, None, "+14155550100", slot=time.time() + 0.2)
    # A check age bound far beyond the slot: the call goes however late a loaded machine runs it.
    pool.submit(3, [on_time], Run(deadline=now + 60, checked_at=now, max_check_age=60))
    results = dict(pool.results.get(timeout=60) for _ in range(3))
    pool.close()
    assert results[1].expired and results[2].expired and results[3].provider_id
    assert len(fake.received) == 1


def test_a_reply_goes_before_campaign_calls_already_queued() -> None:
    # One calling task, calls of 50 ms: five campaign calls are queued when the reply arrives.
    with fp.FakeProviders(latency=0.05) as fake:
        # The reply is submitted once the first campaign call has reached the provider (not after a sleep,
        # which a loaded machine may outlast before the calling task has even begun).
        first_call_arrived = threading.Event()
        reply_queued = threading.Event()
        provider_wait = fake.state.wait

        def arrive() -> None:
            first_call_arrived.set()
            # The first call is held at the provider until the reply is queued: otherwise a test thread
            # that a loaded machine delays by more than the call's 50 ms lets campaign call 2 go first.
            reply_queued.wait(60)
            provider_wait()

        fake.state.wait = arrive  # type: ignore[method-assign]
        pool = Pool(TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url), 1, lambda: datetime.now(UTC))
        now = time.monotonic()
        run = Run(deadline=now + 60, checked_at=now, max_check_age=30)

        def call(n: int, *, reply: bool = False) -> Handover:
            sms = OutboundSms(
                to=outbound.phone(n), from_="+14155550100", body=f"m{n}", idempotency_key=f"k{n}"
            )
            return Handover(n, sms, None, "+14155550100", reply=reply)

        pool.submit(1, [call(n) for n in range(1, 7)], run)
        assert first_call_arrived.wait(30)  # the first campaign call is on its way
        pool.submit(2, [call(99, reply=True)], run)
        reply_queued.set()
        results = [pool.results.get(timeout=60) for _ in range(7)]
        pool.close()
    assert all(d.provider_id for _, d in results)
    assert [m["body"] for m in fake.received][:2] == ["m1", "m99"]
