"""Provider faults: a campaign against a fake provider that answers 20% of sends with a 500, loses 5% of
its answers after accepting the message (the connection dies: a timeout, for us), and rate-limits 5% with
a 429 and Retry-After. Every message must end delivered exactly once — one arrival in the fake's log, whose
id the message records — or failed with a reason after its retry budget. None may be sent twice (a lost
answer is reconciled: Twilio's list, Vonage's search, Plivo's records, Telnyx's Idempotency-Key) and none
may be marked sent without having arrived.

The provider's list shows an accepted message only ``LIST_LAG`` seconds later, so a reconciliation that
looked at once would miss it and send it twice: the senders wait their ``reconcile_after`` first.
At Twilio two recipients are never accepted (503 every time): they fail after their retry budget.
Provider behaviour does not depend on the database engine: this runs on PostgreSQL only, once per provider.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from optline.adapters.clock import SystemClock
from optline.adapters.db.tables import messages
from optline.adapters.providers.base import Sender
from optline.adapters.providers.plivo.send import PlivoSender
from optline.adapters.providers.telnyx.send import TelnyxSender
from optline.adapters.providers.twilio.send import TwilioSender
from optline.adapters.providers.vonage.send import VonageSender
from optline.bootstrap import Container
from optline.services import campaigns
from optline.services.dispatch import Counts, DispatchConfig, Dispatcher
from tests.support import fake_providers as fp
from tests.support import outbound

MESSAGES = (
    150  # per provider: Plivo's reconciliation reads up to 200 records (its list has no recipient filter)
)
FAULTS = {"error_rate": 0.20, "lost_answer_rate": 0.05, "rate_limit_rate": 0.05, "retry_after": 1}
LIST_LAG = 1.5  # seconds before the fake lists an accepted message
RECONCILE_AFTER = 2.0  # the senders' wait before reconciling (their production values are 30 s and more)
MAX_ATTEMPTS = 8
DEADLINE = 120.0  # seconds: the campaign must have settled by then


def build(name: str, url: str) -> Sender:
    if name == "twilio":
        return TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, url, reconcile_after=RECONCILE_AFTER)
    if name == "vonage":
        return VonageSender(fp.VONAGE_KEY, fp.VONAGE_SECRET, url, reconcile_after=RECONCILE_AFTER)
    if name == "plivo":
        return PlivoSender(fp.PLIVO_ID, fp.PLIVO_TOKEN, url, reconcile_after=RECONCILE_AFTER)
    return TelnyxSender(fp.TELNYX_KEY, url)


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    # No latency: the faults are the subject here, and the suite must stay within its minutes.
    with fp.FakeProviders(latency=0, list_lag=LIST_LAG) as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["postgresql"])
@pytest.mark.parametrize("name", ["twilio", "vonage", "plivo", "telnyx"])
def test_every_message_is_delivered_once_or_failed_with_a_reason(
    container: Container, fake: fp.FakeProviders, name: str
) -> None:
    container.clock = SystemClock()  # the fake's list lag and Retry-After are real seconds
    outbound.seed(container, MESSAGES, time_zone=outbound.zone_where(True), us_state=None)
    with container.db.transaction() as conn:
        campaign = campaigns.create(
            conn, container.clock, program="deals", name="faults", template="Hi {{ first_name }}, 20% off"
        )
        campaigns.start(conn, container.clock, campaign, public_url=container.settings.public_url)
    fake.chaos(**FAULTS)
    if name == "twilio":  # two recipients the provider never accepts: they use up their budget and fail
        for i in (0, 1):
            fake.fail(provider=name, to=outbound.phone(i), status=503, body={"message": "down"}, times=100)
    config = DispatchConfig(
        public_url="https://acme.test",
        batch_size=50,
        max_attempts=MAX_ATTEMPTS,
        backoff_base=0.2,
        backoff_max=2.0,
        concurrency=8,
    )
    dispatcher = Dispatcher(container.db, container.clock, build(name, fake.url), config, worker_id="w1")
    total, started = Counts(), time.monotonic()
    while time.monotonic() - started < DEADLINE:
        counts = dispatcher.run_once()
        total.add(counts)
        if counts.claimed == 0:
            if not active(container):
                break
            time.sleep(0.05)
    total.add(dispatcher.close())

    with container.db.read() as conn:
        rows = list(conn.execute(select(messages).order_by(messages.c.id)))
    arrivals = Counter(m["to"] for m in fake.received)
    ids = {m["sid"]: m["to"] for m in fake.received}
    wire = {r.id: r.to_phone.lstrip("+") if name in ("vonage", "plivo") else r.to_phone for r in rows}
    sent = [r for r in rows if r.status == "sent"]
    failed = [r for r in rows if r.status == "failed"]
    report = {"provider": name, "messages": len(rows), "sent": len(sent), "failed": len(failed),
              "faults": dict(fake.state.faults), "arrivals": sum(arrivals.values()), "retried": total.retried}  # fmt: skip
    print(report)
    assert len(rows) == MESSAGES and len(sent) + len(failed) == MESSAGES, report  # nothing left half-way
    duplicates = {to: n for to, n in arrivals.items() if n > 1}
    assert duplicates == {}, report  # no message handed over twice
    for r in sent:  # delivered once, and the id we keep is the arrival's
        assert arrivals[wire[r.id]] == 1 and ids.get(r.provider_message_id) == wire[r.id], (r, report)
    for r in failed:  # failed: never arrived, with a reason, after its budget
        assert arrivals[wire[r.id]] == 0 and r.reason and r.error_code and r.attempts == MAX_ATTEMPTS, (
            r,
            report,
        )
    # The faults did happen, lost answers included (each one reconciled, not resent).
    assert fake.state.faults.get("error_rate", 0) > 0 and fake.state.faults.get("lost_answer_rate", 0) > 0, (
        report
    )
    if name == "twilio":
        assert {r.to_phone for r in failed} == {outbound.phone(0), outbound.phone(1)}, report
        assert {r.reason for r in failed} == {"gave up after retries"}, report


def active(container: Container) -> bool:
    with container.db.read() as conn:
        row: Any = conn.execute(
            select(messages.c.id).where(messages.c.status.in_(("queued", "claimed", "sending"))).limit(1)
        ).first()
    return row is not None
