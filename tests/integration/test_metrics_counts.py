"""The scrape-time counts (adapters/db/rollups.py) stay exactly equal to a GROUP BY over the base tables:
after a real send through the worker and the simulator, after retries, failures, opt-out refusals and
receipts, after direct writes and deletes, on both engines; and under concurrent writers (and a concurrent
compaction) on PostgreSQL. /metrics shows the same numbers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, delete, func, insert, literal, select, update

from optline.adapters.db import contacts, rollups
from optline.adapters.db.tables import (
    campaign_status_counts,
    consent_event_counts,
    consent_events,
    frequency_exposures,
    message_counts,
    message_status_counts,
    messages,
)
from optline.adapters.metrics import FOLD_SHARDS_PER_KEY, DatabaseCollector
from optline.adapters.providers.base import StatusUpdate
from optline.adapters.providers.twilio.send import TwilioSender
from optline.bootstrap import Container
from optline.domain.phones import parse_phone
from optline.entrypoints.worker import run
from optline.services import campaigns, receipts
from optline.services.dispatch import Counts, DispatchConfig, Dispatcher
from optline.services.programs import create_program
from tests.support import fake_providers as fp
from tests.support import outbound
from tests.support import outbox_rows as rows

T = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders(latency=0) as server:  # not a latency test
        yield server


def kept(conn: Connection) -> tuple[dict[tuple[str, str, int], int], dict[tuple[str, str], int]]:
    """What the triggers kept, summed over shards (zero rows left out: a GROUP BY has none)."""
    c, e = message_status_counts.c, consent_event_counts.c
    msgs = {
        (s, p, int(lane)): int(n)
        for s, p, lane, n in conn.execute(
            select(c.status, c.provider, c.priority, func.sum(c.messages)).group_by(
                c.status, c.provider, c.priority
            )
        )
        if n
    }
    events = {
        (a, ch): int(n)
        for a, ch, n in conn.execute(
            select(e.action, e.channel, func.sum(e.events)).group_by(e.action, e.channel)
        )
        if n
    }
    return msgs, events


def counted(conn: Connection) -> tuple[dict[tuple[str, str, int], int], dict[tuple[str, str], int]]:
    """The same, counted from the base tables."""
    provider = func.coalesce(messages.c.provider, literal(""))
    msgs = {
        (s, p, int(lane)): int(n)
        for s, p, lane, n in conn.execute(
            select(messages.c.status, provider, messages.c.priority, func.count()).group_by(
                messages.c.status, provider, messages.c.priority
            )
        )
    }
    events = {
        (a, ch): int(n)
        for a, ch, n in conn.execute(
            select(consent_events.c.action, consent_events.c.channel, func.count()).group_by(
                consent_events.c.action, consent_events.c.channel
            )
        )
    }
    return msgs, events


def per_campaign(conn: Connection) -> tuple[dict[tuple[int, str], int], dict[tuple[int, str], int]]:
    """The dashboard's campaign counts as kept (summed over shards, zeros left out), and counted."""
    c = campaign_status_counts.c
    mine = {
        (int(cid), s): int(n)
        for cid, s, n in conn.execute(
            select(c.campaign_id, c.status, func.sum(c.messages)).group_by(c.campaign_id, c.status)
        )
        if n
    }
    truth = {
        (int(cid), s): int(n)
        for cid, s, n in conn.execute(
            select(messages.c.campaign_id, messages.c.status, func.count())
            .where(messages.c.campaign_id.is_not(None))
            .group_by(messages.c.campaign_id, messages.c.status)
        )
    }
    return mine, truth


def assert_exact(container: Container) -> dict[tuple[str, str, int], int]:
    with container.db.read() as conn:
        mine, truth = kept(conn), counted(conn)
        campaigns_kept, campaigns_counted = per_campaign(conn)
    assert mine == truth
    assert campaigns_kept == campaigns_counted
    # And /metrics says the same (by status and provider; queued per lane; opt-outs per channel).
    families = {m.name: m for m in DatabaseCollector(container.db, container.clock.now).collect()}
    shown = {
        (s.labels["status"], s.labels["provider"]): s.value
        for s in families["optline_messages"].samples
        if s.value
    }
    by_status: dict[tuple[str, str], int] = {}
    for (status, provider, _lane), n in truth[0].items():
        key = (status, provider or "none")
        by_status[key] = by_status.get(key, 0) + n
    assert shown == by_status
    depth = {s.labels["lane"]: s.value for s in families["optline_queue_depth"].samples}
    assert depth == {
        "reply": truth[0].get(("queued", "", 0), 0),
        "bulk": sum(n for (s, _p, lane), n in truth[0].items() if s == "queued" and lane == 1),
    }
    opt_outs = {s.labels["channel"]: s.value for s in families["optline_opt_outs"].samples}
    assert opt_outs == {ch: n for (a, ch), n in truth[1].items() if a == "opt_out"}
    return truth[0]


def drain(dispatcher: Dispatcher) -> Counts:
    total = Counts()
    while (counts := dispatcher.run_once()).claimed:
        total.add(counts)
    return total


def start_campaign(container: Container, name: str) -> dict[str, Any]:
    with container.db.transaction() as conn:
        campaign = campaigns.create(conn, container.clock, program="deals", name=name, template="Hi, 20% off")
        campaign, _ = campaigns.start(
            conn, container.clock, campaign, public_url=container.settings.public_url
        )
    return campaign


def test_counts_after_a_send_through_the_worker_and_the_simulator(container: Container) -> None:
    outbound.seed(container, 5)
    assert_exact(container)  # the opt-ins of the seed
    start_campaign(container, "sim")
    truth = assert_exact(container)
    assert truth == {("queued", "", 1): 5}
    total = run(container, threading.Event(), once=True)  # the simulator posts a receipt for each
    assert total.sent == 5
    truth = assert_exact(container)
    assert truth == {("delivered", "simulator", 1): 5}
    if not container.db.is_sqlite:  # the worker's housekeeping folded the connections' rows (into shard 0)
        with container.db.read() as conn:
            folded = conn.execute(select(func.count()).where(message_status_counts.c.shard == 0)).scalar_one()
        assert folded > 0


def test_counts_after_retries_failures_refusals_and_receipts(
    container: Container, fake: fp.FakeProviders
) -> None:
    program, ids = outbound.seed(container, 6)
    fake.state.opted_out.add(outbound.phone(0))  # 21610: suppressed, and an opt-out in the ledger
    fake.fail(status=400, body={"code": 21211, "message": "Invalid 'To' Phone Number"}, to=outbound.phone(1))
    fake.fail(status=503, body={"code": 20500, "message": "busy"}, to=outbound.phone(2))  # retried
    start_campaign(container, "c1")
    sender = TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url)
    dispatcher = Dispatcher(
        container.db, container.clock, sender, DispatchConfig(public_url="https://acme.test"), worker_id="w1"
    )
    first = drain(dispatcher)
    assert (first.sent, first.suppressed, first.retried) == (3, 1, 1)
    truth = assert_exact(container)
    assert truth[("queued", "twilio", 1)] == 1  # the retry waits, queued, with its provider recorded
    with container.db.transaction() as conn:  # an opt-out while the retry waits: the retry is suppressed
        outbound.opt_out(conn, container.clock, program, ids[2])
    container.clock.advance(seconds=TwilioSender.reconcile_after + 5)
    drain(dispatcher)
    dispatcher.close()
    assert_exact(container)

    sids = [m["sid"] for m in fake.received]
    with container.db.transaction() as conn:
        receipts.record_status(conn, container.clock, StatusUpdate("twilio", sids[0], "delivered"))
        receipts.record_status(conn, container.clock, StatusUpdate("twilio", sids[1], "undelivered", "30003"))
        receipts.record_status(conn, container.clock, StatusUpdate("twilio", sids[1], "delivered"))  # late
        receipts.record_status(
            conn, container.clock, StatusUpdate("twilio", "SMunknown", "delivered")
        )  # kept
    truth = assert_exact(container)
    assert (
        truth[("failed", "twilio", 1)] == 1
        and truth[("suppressed", "twilio", 1)] + truth.get(("suppressed", "", 1), 0) == 2
    )


def test_counts_after_direct_writes_bulk_statements_and_deletes(container: Container) -> None:
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="p", brand="B"
        )
        camp = rows.campaign(conn, program, "c", T)
        people = [contacts.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), T)[0] for i in range(30)]
        ids = [
            rows.message(conn, program=program, contact=p, at=T, campaign=camp, status=s)
            for p, s in zip(
                people, ["queued", "delivered", "failed", "sent", "undelivered", "cancelled"] * 5, strict=True
            )
        ]
    assert_exact(container)
    with container.db.transaction() as conn:
        # One statement over many rows and keys; a provider set and changed; a lane changed.
        conn.execute(update(messages).where(messages.c.id.in_(ids[:10])).values(provider="twilio"))
        conn.execute(
            update(messages).where(messages.c.id.in_(ids[5:15])).values(provider="telnyx", status="sent")
        )
        conn.execute(update(messages).where(messages.c.id == ids[20]).values(priority=0))
        conn.execute(update(messages).where(messages.c.id == ids[21]).values(provider=None))
        conn.execute(update(messages).values(updated_at=T))  # touches no counted column
        # A bulk INSERT … SELECT, the way a campaign is materialised.
        conn.execute(
            insert(messages).from_select(
                [
                    "program_id",
                    "contact_id",
                    "kind",
                    "to_phone",
                    "body",
                    "status",
                    "idempotency_key",
                    "attempts",
                    "created_at",
                    "updated_at",
                    "campaign_id",
                ],
                select(
                    messages.c.program_id,
                    messages.c.contact_id,
                    messages.c.kind,
                    messages.c.to_phone,
                    messages.c.body,
                    literal("queued"),
                    messages.c.idempotency_key + "-again",
                    literal(0),
                    messages.c.created_at,
                    messages.c.updated_at,
                    messages.c.campaign_id,
                ).where(messages.c.id.in_(ids[:12])),
            )
        )
    assert_exact(container)
    with container.db.transaction() as conn:  # deletes (optline has no purge yet; the counts follow one)
        conn.execute(delete(messages).where(messages.c.id.in_(ids[::3])))
    truth = assert_exact(container)
    assert sum(truth.values()) == 30 + 12 - 10
    with container.db.transaction() as conn:  # the backfill agrees with what the triggers kept
        before = kept(conn)
        rollups.rebuild(conn)
        assert kept(conn) == before
    with container.db.transaction() as conn:  # emptied at once (PostgreSQL: TRUNCATE fires no row trigger)
        conn.exec_driver_sql(
            "DELETE FROM messages" if container.db.is_sqlite else "TRUNCATE messages CASCADE"
        )
    assert assert_exact(container) == {}
    with container.db.read() as conn:  # and so are the analytics counters (PostgreSQL: migration 0006)
        assert conn.execute(select(func.coalesce(func.sum(message_counts.c.sent), 0))).scalar_one() == 0
        if not container.db.is_sqlite:  # a DELETE leaves exposures (counted once, when first sent); TRUNCATE
            # empties them as a rebuild over the empty outbox would
            exposures = select(func.count()).select_from(frequency_exposures)
            assert conn.execute(exposures).scalar_one() == 0


def test_concurrent_writers_keep_exact_counts_and_compaction_folds_shards(container: Container) -> None:
    if container.db.is_sqlite:
        pytest.skip("SQLite serialises all writers by design (one process, BEGIN IMMEDIATE)")
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="p", brand="B"
        )
        camp = rows.campaign(conn, program, "c", T)
        people = [contacts.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), T)[0] for i in range(400)]
        ids = [
            rows.message(conn, program=program, contact=p, at=T, campaign=camp, status="queued")
            for p in people
        ]
    errors: list[BaseException] = []
    start = threading.Barrier(5)
    done = threading.Event()

    def writer(mine: list[int]) -> None:
        try:
            start.wait()
            for i in range(0, len(mine), 10):  # a dispatcher's steps, each its own transaction, same keys
                batch = mine[i : i + 10]
                for step in ("claimed", "sending"):
                    with container.db.transaction() as conn:
                        conn.execute(update(messages).where(messages.c.id.in_(batch)).values(status=step))
                with container.db.transaction() as conn:  # two statements in one transaction
                    conn.execute(
                        update(messages)
                        .where(messages.c.id.in_(batch))
                        .values(status="sent", provider="twilio")
                    )
                    conn.execute(
                        update(messages).where(messages.c.id.in_(batch[::2])).values(status="delivered")
                    )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def compactor() -> None:
        try:
            start.wait()
            while not done.is_set():
                with container.db.transaction() as conn:
                    rollups.compact(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(ids[k::4],)) for k in range(4)]
    folding = threading.Thread(target=compactor)
    for t in [*threads, folding]:
        t.start()
    for t in threads:
        t.join(timeout=120)
    done.set()
    folding.join(timeout=60)
    assert not errors
    truth = assert_exact(container)
    assert truth == {("sent", "twilio", 1): 200, ("delivered", "twilio", 1): 200}
    with container.db.transaction() as conn:
        rollups.compact(conn)
        shards = conn.execute(select(func.count(func.distinct(message_status_counts.c.shard)))).scalar_one()
        campaign_shards = conn.execute(
            select(func.count(func.distinct(campaign_status_counts.c.shard)))
        ).scalar_one()
        assert rollups.shard_rows(conn) == 0
    assert shards == 1 and campaign_shards == 1  # everything folded into shard 0
    assert_exact(container)


def test_a_scrape_folds_the_counts_when_no_worker_does(container: Container) -> None:
    """PostgreSQL without a running worker: every connection's rows would stay; /metrics folds them once they
    outnumber the keys FOLD_SHARDS_PER_KEY to one, and the figures do not move."""
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="p", brand="B"
        )
        camp = rows.campaign(conn, program, "c", T)
        person = contacts.get_or_create(conn, parse_phone("+14155550001"), T)[0]
        for status in ("queued", "delivered", "failed"):
            rows.message(conn, program=program, contact=person, at=T, campaign=camp, status=status)
    assert_exact(container)  # a scrape with few rows: nothing to fold
    with container.db.read() as conn:
        keys = list(kept(conn)[0])
    if container.db.is_sqlite:
        return  # one row per key already (shard 0): nothing ever piles up
    # Many connections' rows that cancel out (+1 in one shard, -1 in another): what hours of reconnecting
    # API processes leave behind, without changing any figure.
    extra = [
        {"status": s, "provider": p, "priority": lane, "shard": shard, "messages": n}
        for s, p, lane in keys
        for k in range(1, FOLD_SHARDS_PER_KEY + 2)
        for shard, n in ((k, 1), (100_000 + k, -1))
    ]
    with container.db.transaction() as conn:
        conn.execute(insert(message_status_counts), extra)
        assert rollups.shard_rows(conn) >= len(extra)
    assert_exact(container)  # the scrape answers the same figures, then folds
    with container.db.read() as conn:
        assert rollups.shard_rows(conn) == 0
    assert_exact(container)
