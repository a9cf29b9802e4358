"""Dispatch on both engines: replies have their own lane in the claim (issue 12 item 12), and every status
write is guarded so that a pause or cancel committed during the send-time check wins (item 13)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from optline.adapters.db.tables import messages
from optline.bootstrap import Container
from optline.services import campaigns, outbox, send_check
from optline.services.dispatch import Counts
from tests.integration.test_dispatch import make_dispatcher, start_campaign
from tests.support import fake_providers as fp
from tests.support import outbound


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders(latency=0) as server:  # not a latency test
        yield server


# -- item 12: the reply lane ---------------------------------------------------------------------------


def test_a_confirmation_enqueued_behind_a_campaign_is_in_the_next_claimed_batch(
    container: Container, fake: fp.FakeProviders
) -> None:
    program, ids = outbound.seed(container, 2000)
    start_campaign(container)
    with container.db.transaction() as conn:
        confirmation = outbox.enqueue(
            conn,
            container.clock,
            program_id=program["id"],
            contact_id=ids[-1],
            to_phone=outbound.phone(1999),
            kind=outbox.Kind.CONFIRMATION,
            body="Acme: you are unsubscribed.",
            idempotency_key="confirm-1",
        )
    dispatcher = make_dispatcher(container, fake, batch_size=100)
    with container.db.transaction() as conn:
        claimed = dispatcher.claim(conn, container.clock.now(), 100)
    assert len(claimed) == 100
    assert confirmation["id"] in {m["id"] for m in claimed}
    assert sum(m["kind"] == "marketing" for m in claimed) == 99  # the rest of the batch is the campaign's


def test_the_reply_lane_is_served_by_its_index_on_postgresql(
    container: Container, fake: fp.FakeProviders
) -> None:
    if not container.db.engine.url.get_backend_name().startswith("postgresql"):
        pytest.skip("query plans are PostgreSQL's")
    program, ids = outbound.seed(container, 2000)
    start_campaign(container)
    with container.db.transaction() as conn:
        outbox.enqueue(
            conn,
            container.clock,
            program_id=program["id"],
            contact_id=ids[0],
            to_phone=outbound.phone(0),
            kind=outbox.Kind.HELP,
            body="Acme help",
            idempotency_key="help-1",
        )
        conn.execute(text("ANALYZE messages"))
    dispatcher = make_dispatcher(container, fake)
    with container.db.transaction() as conn:
        compiled = dispatcher.pick(conn, container.clock.now(), 100, reply=True).compile(
            dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
        )
        plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params))
    assert "ix_messages_reply_lane" in plan, plan
    assert "Seq Scan on messages" not in plan, plan


# -- item 13: guarded writes ---------------------------------------------------------------------------


def _stop(container: Container, campaign: dict[str, Any], action: str) -> None:
    with container.db.transaction() as conn:
        if action == "cancel":
            campaigns.cancel(conn, container.clock, campaign)
        else:
            campaigns.pause(conn, campaign)


@pytest.mark.parametrize("action", ["cancel", "pause"])
def test_a_pause_or_cancel_committed_during_the_check_wins(
    container: Container, fake: fp.FakeProviders, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    outbound.seed(container, 3)
    campaign = start_campaign(container)
    dispatcher = make_dispatcher(container, fake)
    with container.db.transaction() as conn:
        claimed = dispatcher.claim(conn, container.clock.now(), 10)
    assert len(claimed) == 3
    if container.db.is_sqlite:
        # The check transaction holds SQLite's write lock from its first statement: nothing can commit
        # during it, so the latest a pause or cancel can commit is just before it.
        _stop(container, campaign, action)
    else:
        # After the check read the campaign ('sending') and the consent state, before it writes 'sending'.
        history = send_check.History

        def stop_then_read_history(*args: Any) -> Any:
            _stop(container, campaign, action)
            return history(*args)

        monkeypatch.setattr(send_check, "History", stop_then_read_history)
    counts = Counts()
    with container.db.transaction() as conn:
        to_send = dispatcher.check(conn, claimed, counts)
    for item in to_send:
        dispatcher.deliver(item)
    assert to_send == [] and fake.received == []
    with container.db.read() as conn:
        statuses = [r.status for r in conn.execute(select(messages.c.status).order_by(messages.c.id))]
    assert statuses == ["cancelled" if action == "cancel" else "queued"] * 3
    # Nothing is counted as approved: cancelled rows were no longer ours, paused ones went back.
    assert counts.sent == 0 and counts.lost + counts.released == 3


def test_a_reclaimed_message_is_not_handed_over_by_the_worker_that_lost_it(
    container: Container, fake: fp.FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbound.seed(container, 2)
    start_campaign(container)
    slow = make_dispatcher(container, fake)
    with container.db.transaction() as conn:
        claimed = slow.claim(conn, container.clock.now(), 10)
    if container.db.is_sqlite:
        with container.db.transaction() as conn:
            conn.execute(messages.update().values(lease_owner="w2"))
    else:
        history = send_check.History

        def reclaim_then_read_history(*args: Any) -> Any:
            with container.db.transaction() as other:
                other.execute(messages.update().values(lease_owner="w2"))
            return history(*args)

        monkeypatch.setattr(send_check, "History", reclaim_then_read_history)
    counts = Counts()
    with container.db.transaction() as conn:
        assert slow.check(conn, claimed, counts) == []
    with container.db.read() as conn:
        assert {(r.status, r.lease_owner) for r in conn.execute(select(messages))} == {("claimed", "w2")}
