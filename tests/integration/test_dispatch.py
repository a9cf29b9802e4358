"""Dispatch on both engines against the fake Twilio server: the send-time check, quiet hours, caps, retries,
permanent failures, provider opt-outs, leases and reconciliation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from optline.adapters.clock import SystemClock, as_utc
from optline.adapters.db.tables import consent_events, contacts, messages, programs, subscriptions
from optline.adapters.providers.twilio.send import TwilioSender
from optline.bootstrap import Container
from optline.domain.optout_links import is_well_formed
from optline.services import campaigns, outbox
from optline.services.dispatch import Counts, DispatchConfig, Dispatcher
from tests.support import fake_providers as fp
from tests.support import outbound


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders(latency=0) as server:  # not a latency test
        yield server


def make_dispatcher(
    container: Container, fake: fp.FakeProviders, clock: Any = None, **config: Any
) -> Dispatcher:
    sender = TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url)
    return Dispatcher(
        container.db,
        clock or container.clock,
        sender,
        DispatchConfig(public_url="https://acme.test", **config),
        worker_id="w1",
    )


def drain(dispatcher: Dispatcher) -> Counts:
    total = Counts()
    while True:
        counts = dispatcher.run_once()
        total.add(counts)
        if counts.claimed == 0:
            return total


def start_campaign(
    container: Container, template: str = "Hi {{ first_name }}, 20% off", name: str = "c1"
) -> dict[str, Any]:
    with container.db.transaction() as conn:
        campaign = campaigns.create(conn, container.clock, program="deals", name=name, template=template)
        campaign, _ = campaigns.start(
            conn, container.clock, campaign, public_url=container.settings.public_url
        )
    return campaign


def rows(container: Container) -> list[Any]:
    with container.db.read() as conn:
        return list(conn.execute(select(messages).order_by(messages.c.id)))


def test_send_composes_and_records(container: Container, fake: fp.FakeProviders) -> None:
    _program, _ids = outbound.seed(container, 3)
    campaign = start_campaign(container)
    counts = drain(make_dispatcher(container, fake))
    assert counts.sent == 3
    got = sorted(m["body"] for m in fake.received)
    # The instruction with the person's own link (the dispatcher's public URL and the message's token).
    assert got[0].startswith("Acme: Hi P0, 20% off. Reply STOP to opt out or tap https://acme.test/u/")
    sent = rows(container)
    assert all(
        r.status == "sent" and r.provider == "twilio" and r.provider_message_id and r.handed_over_at
        for r in sent
    )
    assert all(r.body.endswith(f"https://acme.test/u/{r.optout_token}") for r in sent)
    with container.db.read() as conn:
        assert campaigns.status(conn, campaign).campaign["status"] == "done"


def test_opt_out_link_token_is_made_at_hand_over(container: Container, fake: fp.FakeProviders) -> None:
    outbound.seed(container, 3)
    start_campaign(container, template="Hi {{ first_name }}, 20% off. Leave: {{ optout_url }}")
    assert all(r.optout_token is None for r in rows(container))  # the audience carries no tokens
    assert drain(make_dispatcher(container, fake)).sent == 3
    sent = rows(container)
    assert all(is_well_formed(r.optout_token) for r in sent) and len({r.optout_token for r in sent}) == 3
    bodies = {m["body"] for m in fake.received}
    assert bodies == {r.body for r in sent}
    assert all(f"https://acme.test/u/{r.optout_token}" in r.body for r in sent)


def test_opt_out_after_the_audience_is_built_is_suppressed(
    container: Container, fake: fp.FakeProviders
) -> None:
    program, ids = outbound.seed(container, 4)
    start_campaign(container)
    with container.db.transaction() as conn:
        outbound.opt_out(conn, container.clock, program, ids[1])
        from optline.domain.consent import Action, Channel
        from optline.services import consent

        consent.record(
            conn,
            container.clock,
            contact_id=ids[2],
            program=program,
            action=Action.REVIEW_HOLD,
            channel=Channel.ADMIN,
            evidence={"reason": "check"},
        )
    counts = drain(make_dispatcher(container, fake))
    assert (counts.sent, counts.suppressed) == (2, 2)
    by_contact = {r.contact_id: r for r in rows(container)}
    assert by_contact[ids[1]].status == "suppressed" and by_contact[ids[1]].reason == "opted out"
    assert by_contact[ids[2]].reason == "held for review"
    assert {m["to"] for m in fake.received} == {outbound.phone(0), outbound.phone(3)}


@pytest.mark.parametrize("concurrency", [1, 8], ids=["one-call", "eight-calls"])
def test_concurrent_opt_outs_are_never_sent_after_they_commit(
    container: Container, fake: fp.FakeProviders, concurrency: int
) -> None:
    """Opt-outs committed while dispatch runs: every message to such a person was checked before the commit."""
    container.clock = SystemClock()
    clock = container.clock
    program, ids = outbound.seed(container, 400, time_zone=outbound.zone_where(True), us_state=None)
    with container.db.transaction() as conn:
        conn.execute(update(programs).values(settings={"optout_instruction": "every"}))
    fake.state.latency = 0.002
    start_campaign(container)
    committed: dict[int, datetime] = {}
    first_committed = threading.Event()

    def opt_outs() -> None:
        for cid in ids[::7]:
            with container.db.transaction() as conn:
                outbound.opt_out(conn, clock, program, cid)
            committed[cid] = datetime.now(UTC)  # after the commit returned
            first_committed.set()
            time.sleep(0.003)

    thread = threading.Thread(target=opt_outs)
    dispatcher = make_dispatcher(container, fake, clock=clock, batch_size=20, concurrency=concurrency)
    thread.start()
    # Dispatch starts once the first opt-out (the first contact's) has committed, so at least one lands
    # before its message is checked however the threads are scheduled; the rest land while it runs.
    assert first_committed.wait(60)
    drain(dispatcher)
    thread.join()
    drain(dispatcher)
    dispatcher.close()
    final = {r.contact_id: r for r in rows(container)}
    suppressed = [c for c in committed if final[c].status == "suppressed"]
    assert suppressed, "some opt-outs should have landed before their message was checked"
    for cid, at in committed.items():
        r = final[cid]
        if r.status == "sent":  # allowed only if its check came before the opt-out committed
            assert as_utc(r.handed_over_at) < at, f"contact {cid} was texted after opting out"
    assert len(fake.received) == sum(1 for r in final.values() if r.status == "sent")


def test_the_next_batch_is_checked_after_its_claim_and_handed_over_on_close(
    container: Container, fake: fp.FakeProviders
) -> None:
    """The next batch is claimed and checked while the current one's calls are in flight; close() hands
    it over, so a stopping worker leaves nothing 'sending' for a lease expiry, and every count is reported.
    Opt-outs committed after that claim protect everyone not claimed yet."""
    container.clock = SystemClock()
    fake.state.latency = 0.05
    program, _ids = outbound.seed(container, 100, time_zone=outbound.zone_where(True), us_state=None)
    start_campaign(container)
    # Batches are sized by the call latency measured so far (``_batch_limit``); on a loaded machine that
    # can shrink batch 2 below 20, so a generous batch_seconds leaves batch_size the only bound here.
    dispatcher = make_dispatcher(
        container, fake, clock=container.clock, batch_size=20, concurrency=4, batch_seconds=60.0
    )
    total = Counts()
    total.add(dispatcher.run_once())  # batch 1 sent; batch 2 claimed, checked and submitted meanwhile
    with container.db.read() as conn:
        queued = [
            r.contact_id
            for r in conn.execute(select(messages.c.contact_id).where(messages.c.status == "queued"))
        ]
    assert len(queued) == 60
    with container.db.transaction() as conn:
        for cid in queued:
            outbound.opt_out(conn, container.clock, program, cid)
    total.add(dispatcher.run_once())  # batch 2 sent; batch 3 prepared: all opted out
    total.add(dispatcher.close())
    final = rows(container)
    assert not [r for r in final if r.status in ("claimed", "sending")]
    assert (total.sent, total.suppressed) == (40, 20)
    assert sum(r.status == "sent" for r in final) == 40 == len(fake.received)


def test_rate_limited_batches_are_checked_close_to_their_hand_over(
    container: Container, fake: fp.FakeProviders
) -> None:
    """At 4 messages/s and a 2-second window (campaign messages may use its first half), a batch reserves
    4 slots; the rest go back to the queue
    unchecked (not 'sending', no hand-over time), due at their sender's next slot, and no call begins more
    than the window after its check."""
    container.clock = SystemClock()
    outbound.seed(container, 10, time_zone=outbound.zone_where(True), us_state=None)
    with container.db.transaction() as conn:
        conn.execute(update(programs).values(settings={"rate_per_second": 4}))
    start_campaign(container)
    dispatcher = make_dispatcher(container, fake, clock=container.clock, send_window=2.0, concurrency=8)
    before = time.time()  # the first slot is reserved at this time or later
    first = dispatcher.run_once(top_up=False)
    after = time.time()
    assert (first.claimed, first.sent, first.released) == (10, 4, 6)
    back = [r for r in rows(container) if r.status == "queued"]
    assert len(back) == 6 and all(r.handed_over_at is None and r.lease_owner is None for r in back)
    # Due at the slot after the batch's four (1 s after the first), never earlier: the bound that is the
    # point. Later is safe (a loaded machine may reserve late); the upper bound only catches a lost slot.
    due = sorted(as_utc(r.not_before).timestamp() - before for r in back)
    assert all(0.99 <= d <= after - before + 5.0 for d in due), (due, after - before)
    deadline = time.monotonic() + 30
    total = Counts()
    while total.sent < 6 and time.monotonic() < deadline:
        total.add(dispatcher.run_once())
        time.sleep(0.05)
    dispatcher.close()
    assert first.sent + total.sent == 10 == len(fake.received)
    times = sorted(datetime.fromisoformat(m["at"]).timestamp() for m in fake.received)
    # The sender's slots are 0.25 s apart from the first reservation on, and no call begins before its slot,
    # so the i-th call the server sees arrives at least i/4 s after ``before``. A call may begin late on a
    # busy machine (which shortens its gap to the next one), never early: only this lower bound holds.
    for i, at in enumerate(times):
        assert at >= before + i * 0.25 - 0.01, (i, at - before)


def test_quiet_hours_defer_not_drop(container: Container, fake: fp.FakeProviders) -> None:
    container.clock.advance(hours=-5, minutes=-30)  # 13:30 UTC: 8:30 New York, 5:30 Los Angeles
    outbound.seed(container, 4, time_zone=lambda i: "America/Los_Angeles" if i % 2 else "America/New_York")
    start_campaign(container)
    dispatcher = make_dispatcher(container, fake)
    counts = drain(dispatcher)
    assert (counts.sent, counts.deferred) == (2, 2)
    deferred = [r for r in rows(container) if r.status == "deferred"]
    assert {as_utc(r.not_before) for r in deferred} == {datetime(2026, 11, 26, 16, 0, tzinfo=UTC)}
    assert "quiet hours" in deferred[0].reason
    container.clock.advance(hours=2, minutes=30)
    assert drain(dispatcher).sent == 2
    assert len(fake.received) == 4


def test_florida_three_per_day_and_eight_pm(container: Container, fake: fp.FakeProviders) -> None:
    program, ids = outbound.seed(container, 1, us_state="FL")
    dispatcher = make_dispatcher(container, fake)
    for n in range(4):
        with container.db.transaction() as conn:
            outbox.enqueue(
                conn,
                container.clock,
                program_id=program["id"],
                contact_id=ids[0],
                kind=outbox.Kind.MARKETING,
                to_phone=outbound.phone(0),
                body=f"Acme deal {n} STOP",
                idempotency_key=f"fl{n}",
            )
        drain(dispatcher)
        container.clock.advance(minutes=10)
    statuses = [r.status for r in rows(container)]
    assert statuses == ["sent", "sent", "sent", "deferred"]
    assert as_utc(rows(container)[3].not_before) == datetime(2026, 11, 27, 19, 0, tzinfo=UTC)
    container.clock.advance(hours=1)  # 20:40 UTC = 15:40 Miami; still within 24h of the first
    assert drain(dispatcher).sent == 0


@pytest.mark.parametrize("action", ["defer", "skip"])
def test_frequency_cap(container: Container, fake: fp.FakeProviders, action: str) -> None:
    _program, _ids = outbound.seed(container, 2)
    with container.db.transaction() as conn:
        conn.execute(
            update(programs).values(settings={"frequency_cap": {"max": 1, "days": 7, "action": action}})
        )
    dispatcher = make_dispatcher(container, fake)
    start_campaign(container, name="first")
    assert drain(dispatcher).sent == 2
    container.clock.advance(days=2)
    start_campaign(container, name="second")
    counts = drain(dispatcher)
    assert counts.sent == 0
    second = [r for r in rows(container) if r.status != "sent"]
    assert {r.status for r in second} == ({"deferred"} if action == "defer" else {"skipped"})
    assert "frequency cap" in second[0].reason
    if action == "defer":
        assert as_utc(second[0].not_before) == datetime(2026, 12, 3, 19, 0, tzinfo=UTC)


def test_retries_with_backoff_and_retry_after_pass_the_check_again(
    container: Container, fake: fp.FakeProviders
) -> None:
    program, ids = outbound.seed(container, 2)
    start_campaign(container)
    fake.fail(status=503, body={"code": 20500, "message": "busy"}, to=outbound.phone(0))
    # A 5xx with Retry-After: this message waits that long. (A 429 pauses its whole sender instead, on the
    # wall clock, for every worker: tests/integration/test_dispatch_concurrency.py.)
    fake.fail(status=503, body={"code": 20503, "message": "busy"}, retry_after=30, to=outbound.phone(1))
    dispatcher = make_dispatcher(container, fake)
    counts = drain(dispatcher)
    assert counts.retried == 2 and fake.received == []
    r0, r1 = rows(container)
    now = container.clock.now()
    # A 503 may come after Twilio accepted the message: the retry reconciles first, and not before the
    # adapter's reconcile_after (a message can show in the list seconds later); the backoff alone is 2 s.
    assert (
        r0.status == "queued"
        and as_utc(r0.not_before) == now + timedelta(seconds=max(2, TwilioSender.reconcile_after))
        and r0.error_code == "20500"
    )
    assert as_utc(r1.not_before) == now + timedelta(seconds=30)
    with container.db.transaction() as conn:  # opting out while waiting for the retry
        outbound.opt_out(conn, container.clock, program, ids[1])
    container.clock.advance(seconds=max(31, TwilioSender.reconcile_after + 1))
    counts = drain(dispatcher)
    assert (counts.sent, counts.suppressed) == (1, 1)
    assert [m["to"] for m in fake.received] == [outbound.phone(0)]
    assert rows(container)[0].attempts == 2


def test_timeout_after_acceptance_is_reconciled_not_resent(
    container: Container, fake: fp.FakeProviders
) -> None:
    outbound.seed(container, 1)
    start_campaign(container)
    fake.fail(accept=True, drop=True)  # accepted, then the connection dies before the answer
    dispatcher = make_dispatcher(container, fake)
    assert drain(dispatcher).retried == 1
    container.clock.advance(seconds=5)
    assert drain(dispatcher).claimed == 0  # not yet: the list may not show the message so soon
    container.clock.advance(seconds=TwilioSender.reconcile_after)
    assert drain(dispatcher).sent == 1
    assert len(fake.received) == 1
    assert rows(container)[0].provider_message_id == fake.received[0]["sid"]


def test_permanent_failure_and_giving_up(container: Container, fake: fp.FakeProviders) -> None:
    outbound.seed(container, 2)
    start_campaign(container)
    fake.fail(status=400, body={"code": 21211, "message": "Invalid 'To' Phone Number"}, to=outbound.phone(0))
    fake.fail(status=500, body={"message": "down"}, to=outbound.phone(1), times=10)
    dispatcher = make_dispatcher(container, fake, max_attempts=2, backoff_base=1)
    drain(dispatcher)
    container.clock.advance(seconds=TwilioSender.reconcile_after + 2)  # a 500: reconcile_after, then retry
    drain(dispatcher)
    r0, r1 = rows(container)
    assert (r0.status, r0.error_code, r0.reason) == ("failed", "21211", "permanent provider error")
    assert "Invalid 'To'" in r0.error_message and fp.TWILIO_TOKEN not in r0.error_message
    assert (r1.status, r1.reason, r1.attempts) == ("failed", "gave up after retries", 2)


def test_provider_opted_out_error_becomes_a_ledger_event(
    container: Container, fake: fp.FakeProviders
) -> None:
    _program, ids = outbound.seed(container, 2)
    fake.state.opted_out.add(outbound.phone(0))
    start_campaign(container)
    counts = drain(make_dispatcher(container, fake))
    assert (counts.sent, counts.suppressed) == (1, 1)
    with container.db.read() as conn:
        event = conn.execute(
            select(consent_events)
            .where(consent_events.c.contact_id == ids[0])
            .order_by(consent_events.c.seq.desc())
        ).first()
        sub = conn.execute(
            select(subscriptions.c.status).where(subscriptions.c.contact_id == ids[0])
        ).scalar()
    assert event is not None and (event.action, event.channel) == ("opt_out", "provider")
    assert event.evidence["error_code"] == "21610" and sub == "unsubscribed"


def test_replies_bypass_consent_and_quiet_hours(container: Container, fake: fp.FakeProviders) -> None:
    program, ids = outbound.seed(container, 1)
    container.clock.advance(hours=8)  # 3:00 New York
    with container.db.transaction() as conn:
        outbound.opt_out(conn, container.clock, program, ids[0])
        for kind in (outbox.Kind.CONFIRMATION, outbox.Kind.MARKETING, outbox.Kind.TRANSACTIONAL):
            outbox.enqueue(
                conn,
                container.clock,
                program_id=program["id"],
                contact_id=ids[0],
                kind=kind,
                to_phone=outbound.phone(0),
                body=f"Acme {kind}",
                idempotency_key=f"k-{kind}",
            )
    drain(make_dispatcher(container, fake))
    assert [r.status for r in rows(container)] == ["sent", "suppressed", "suppressed"]
    assert [m["body"] for m in fake.received] == ["Acme confirmation"]


def test_expired_leases_are_reclaimed_and_reconciled(container: Container, fake: fp.FakeProviders) -> None:
    outbound.seed(container, 2)
    start_campaign(container)
    crashed = make_dispatcher(container, fake, lease=timedelta(seconds=60))
    crashed.worker_id = "crashed"
    with container.db.transaction() as conn:
        claimed = crashed.claim(conn, container.clock.now(), 10)
    with container.db.transaction() as conn:
        to_send = crashed.check(conn, claimed, Counts())
    crashed.deliver(to_send[0])  # the provider got the first one, then the worker died before recording
    other = make_dispatcher(container, fake)
    assert drain(other).claimed == 0  # leases still valid: nobody else takes them
    container.clock.advance(seconds=200)
    counts = drain(other)
    assert counts.sent == 2
    assert sorted(m["to"] for m in fake.received) == sorted([outbound.phone(0), outbound.phone(1)])


def test_pause_resume_cancel(container: Container, fake: fp.FakeProviders) -> None:
    outbound.seed(container, 3)
    campaign = start_campaign(container)
    dispatcher = make_dispatcher(container, fake, batch_size=1)
    with container.db.transaction() as conn:
        campaigns.pause(conn, campaign)
    assert drain(dispatcher).claimed == 0
    with container.db.transaction() as conn:
        campaigns.resume(conn, campaign)
    dispatcher.run_once(top_up=False)  # one batch of one, nothing claimed behind it
    with container.db.transaction() as conn:
        _, n = campaigns.cancel(conn, container.clock, campaign)
        assert n == 2
        st = campaigns.status(conn, campaign)
    assert st.counts == {"sent": 1, "cancelled": 2} and st.campaign["status"] == "cancelled"
    assert len(fake.received) == 1


def test_template_field_missing_for_one_contact_fails_that_message_only(
    container: Container, fake: fp.FakeProviders
) -> None:
    _program, ids = outbound.seed(container, 2)
    with container.db.transaction() as conn:
        conn.execute(update(contacts).where(contacts.c.id == ids[1]).values(attributes={}))
    start_campaign(container)
    counts = drain(make_dispatcher(container, fake))
    assert (counts.sent, counts.failed) == (1, 1)
    failed = next(r for r in rows(container) if r.status == "failed")
    assert "first_name" in failed.reason
