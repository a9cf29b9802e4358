"""Opt-out analytics on both engines: trigger-kept counters, attribution, and the report against a direct
count over the raw tables."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from optline.adapters.db import contacts, counters
from optline.adapters.db.tables import (
    consent_events,
    frequency_exposures,
    message_counts,
    messages,
    optout_attributions,
    programs,
)
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.domain.phones import parse_phone
from optline.services import analytics, consent
from optline.services.programs import create_program
from tests.support import outbox_rows as rows

T0 = datetime(2026, 10, 1, tzinfo=UTC)
CHANNELS = [Channel.SMS_KEYWORD, Channel.SMS_TEXT, Channel.WEB, Channel.PROVIDER]


def _contact(conn: Any, container: Container, i: int) -> dict[str, Any]:
    c, _ = contacts.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), container.clock.now())
    return c


def _counter_snapshot(conn: Any) -> tuple[list[Any], list[Any]]:
    mc = conn.execute(
        select(
            message_counts.c.program_id,
            message_counts.c.campaign_id,
            message_counts.c.kind,
            message_counts.c.day,
            func.sum(message_counts.c.sent),
            func.sum(message_counts.c.delivered),
        )
        .group_by(
            message_counts.c.program_id,
            message_counts.c.campaign_id,
            message_counts.c.kind,
            message_counts.c.day,
        )
        .having((func.sum(message_counts.c.sent) != 0) | (func.sum(message_counts.c.delivered) != 0))
        .order_by(
            message_counts.c.program_id,
            message_counts.c.campaign_id,
            message_counts.c.kind,
            message_counts.c.day,
        )
    ).all()
    fe = conn.execute(
        select(
            frequency_exposures.c.program_id,
            frequency_exposures.c.messages_30d,
            func.sum(frequency_exposures.c.sent),
        )
        .group_by(frequency_exposures.c.program_id, frequency_exposures.c.messages_30d)
        .order_by(frequency_exposures.c.program_id, frequency_exposures.c.messages_30d)
    ).all()
    return [tuple(r) for r in mc], [tuple(r) for r in fe]


@pytest.fixture
def world(container: Container) -> dict[str, Any]:
    """Two brands, three programs, six campaigns, 30 contacts, ~600 messages and ~40 opt-outs."""
    rnd = random.Random(6)
    clock = container.clock
    w: dict[str, Any] = {}
    with container.db.transaction() as conn:
        w["deals"] = create_program(
            conn,
            clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            optout_scope="program",
        )
        w["news"] = create_program(
            conn, clock, help_contact="https://acme.example/help", name="news", brand="Acme"
        )
        w["other"] = create_program(
            conn, clock, help_contact="https://acme.example/help", name="other", brand="Globex"
        )
        w["campaigns"] = [
            rows.campaign(conn, w[p], f"{p}-{i}", T0, tag=tag, message_type=mt)
            for p, i, tag, mt in [
                ("deals", 1, "promo", "marketing"),
                ("deals", 2, "promo", "marketing"),
                ("deals", 3, None, "transactional"),
                ("news", 1, "weekly", "marketing"),
                ("news", 2, "weekly", "marketing"),
                ("other", 1, None, "marketing"),
            ]
        ]
        w["contacts"] = [_contact(conn, container, i) for i in range(30)]
        statuses = ["delivered"] * 6 + ["sent", "undelivered", "failed", "suppressed", "queued", "cancelled"]
        for contact in w["contacts"]:
            times = sorted(T0 + timedelta(seconds=rnd.randrange(50 * 86400)) for _ in range(20))
            for at in times:
                camp = rnd.choice(w["campaigns"])
                prog = next(p for p in (w["deals"], w["news"], w["other"]) if p["id"] == camp["program_id"])
                rows.message(
                    conn, program=prog, contact=contact, at=at, campaign=camp, status=rnd.choice(statuses)
                )
            # A reply (not a campaign message): counted per kind, never attributed.
            rows.message(conn, program=w["deals"], contact=contact, at=times[-1], kind="help")
    with container.db.transaction() as conn:
        for contact in w["contacts"]:
            for _ in range(rnd.choice([0, 1, 1, 2])):
                at = T0 + timedelta(seconds=rnd.randrange(52 * 86400))
                program = rnd.choice([w["deals"], w["news"], w["other"]])
                consent.record(
                    conn,
                    clock,
                    contact_id=contact["id"],
                    program=program,
                    action=Action.OPT_OUT,
                    channel=rnd.choice(CHANNELS),
                    evidence={"message_text": "stop"},
                    occurred_at=at,
                )
    return w


def test_triggers_keep_counts_equal_to_a_rebuild(container: Container, world: dict[str, Any]) -> None:
    # Messages written in time order: the fatigue buckets the trigger assigned equal the window function's.
    with container.db.transaction() as conn:
        before = _counter_snapshot(conn)
        counters.rebuild(conn)
        assert _counter_snapshot(conn) == before
    with container.db.transaction() as conn:
        # Odd paths the dispatcher might take: a late status change, a move, a delete.
        some = conn.execute(select(messages.c.id).order_by(messages.c.id).limit(5)).scalars().all()
        conn.execute(update(messages).where(messages.c.id == some[0]).values(status="delivered"))
        conn.execute(update(messages).where(messages.c.id == some[1]).values(campaign_id=None))
        conn.execute(update(messages).where(messages.c.id == some[2]).values(sent_at=T0 + timedelta(days=60)))
        conn.execute(delete(messages).where(messages.c.id == some[3]))
    with container.db.transaction() as conn:
        by_trigger = _counter_snapshot(conn)
        counters.rebuild(conn)
        # Sent/delivered stay exact through any update. (A message's fatigue bucket is fixed when it is
        # first sent; rewriting history afterwards does not re-bucket the others.)
        assert _counter_snapshot(conn)[0] == by_trigger[0]
        # And against a direct count over the raw table.
        sent = conn.execute(
            select(func.count()).where(
                (messages.c.sent_at.is_not(None)) | messages.c.status.in_(counters.SENT_STATUSES)
            )
        ).scalar_one()
        delivered = conn.execute(select(func.count()).where(messages.c.status == "delivered")).scalar_one()
    assert sum(r[4] for r in by_trigger[0]) == sent > 0
    assert sum(r[5] for r in by_trigger[0]) == delivered > 0


def _naive_attribution(conn: Any, window: timedelta) -> dict[int, int | None]:
    """event id -> campaign id, straight from the rule's words, in Python over every raw row."""
    brand_of = {r.id: r.brand for r in conn.execute(select(programs))}
    msgs = [
        r
        for r in conn.execute(select(messages))
        if r.campaign_id is not None
        and (r.sent_at is not None or r.status in ("sent", "delivered", "undelivered"))
    ]
    out: dict[int, int | None] = {}
    for e in conn.execute(select(consent_events).where(consent_events.c.action == "opt_out")):
        occurred = e.occurred_at.replace(tzinfo=UTC) if e.occurred_at.tzinfo is None else e.occurred_at

        def when(m: Any) -> datetime:
            t = m.sent_at or m.updated_at
            return t.replace(tzinfo=UTC) if t.tzinfo is None else t

        candidates = [
            m
            for m in msgs
            if m.contact_id == e.contact_id
            and occurred - window <= when(m) <= occurred
            and (m.program_id == e.program_id if e.program_id else brand_of[m.program_id] == e.brand)
        ]
        best = max(candidates, key=lambda m: (when(m), m.id), default=None)
        out[e.id] = best.campaign_id if best else None
    return out


def test_attribution_follows_the_rule(container: Container, world: dict[str, Any]) -> None:
    with container.db.transaction() as conn:
        done = analytics.refresh(conn, container.clock, window_days=7)
        assert done > 20
        assert analytics.refresh(conn, container.clock, window_days=7) == 0  # incremental: nothing new
        stored = {r.event_id: r.campaign_id for r in conn.execute(select(optout_attributions))}
        expected = _naive_attribution(conn, timedelta(days=7))
    assert stored == expected
    assert any(v is None for v in stored.values()) and any(v is not None for v in stored.values())


def test_report_matches_a_direct_count(container: Container, world: dict[str, Any]) -> None:
    with container.db.transaction() as conn:
        analytics.refresh(conn, container.clock)
        report = analytics.report(conn, container.clock)
        attribution = _naive_attribution(conn, timedelta(days=7))
        raw = conn.execute(select(messages)).all()
        events = {
            e.id: e for e in conn.execute(select(consent_events).where(consent_events.c.action == "opt_out"))
        }
    sent = Counter(
        m.campaign_id for m in raw if m.campaign_id and (m.sent_at or m.status in counters.SENT_STATUSES)
    )
    delivered = Counter(m.campaign_id for m in raw if m.campaign_id and m.status == "delivered")
    optouts = Counter(c for c in attribution.values() if c)
    for row in report.campaigns:
        assert (row.sent, row.delivered, row.optouts) == (
            sent[row.campaign_id],
            delivered[row.campaign_id],
            optouts[row.campaign_id],
        ), row.key
        assert row.rate_delivered == pytest.approx(optouts[row.campaign_id] / delivered[row.campaign_id])
    assert {r.campaign_id for r in report.campaigns} == set(sent)
    assert report.totals.optouts == len(events)
    assert report.unattributed == sum(1 for c in attribution.values() if c is None)
    assert report.totals.sent == sum(
        1
        for m in raw
        if m.kind in counters.FATIGUE_KINDS and (m.sent_at or m.status in counters.SENT_STATUSES)
    )
    by_channel = Counter(analytics.CHANNEL_NAMES[e.channel] for e in events.values())
    assert {r.key: r.optouts for r in report.by_channel if r.optouts} == dict(by_channel)
    by_day = Counter((e.occurred_at.date()).isoformat() for e in events.values())
    assert {r.key: r.optouts for r in report.by_day if r.optouts} == dict(by_day)
    assert sum(r.optouts for r in report.by_week) == len(events)
    assert sum(r.optouts for r in report.by_frequency) == len(events)
    # Every message sent of a counted kind lands in exactly one fatigue bucket.
    assert sum(r.sent for r in report.by_frequency) == report.totals.sent


def test_report_filters_by_program_and_since(container: Container, world: dict[str, Any]) -> None:
    since = (T0 + timedelta(days=30)).date()
    with container.db.transaction() as conn:
        analytics.refresh(conn, container.clock)
        report = analytics.report(conn, container.clock, program=world["deals"], since=since)
        expected_sent = conn.execute(
            select(func.count()).where(
                (messages.c.program_id == world["deals"]["id"])
                & messages.c.kind.in_(counters.FATIGUE_KINDS)
                & messages.c.sent_at.is_not(None)
                & (messages.c.sent_at >= datetime.combine(since, datetime.min.time(), UTC))
            )
        ).scalar_one()
    assert report.totals.sent == expected_sent
    assert sum(r.sent for r in report.by_frequency) == expected_sent  # the fatigue curve follows --since too
    assert {r.program for r in report.campaigns} == {"deals"}
    assert all(r.key >= since.isoformat() for r in report.by_day)


def test_a_campaign_above_baseline_and_critical_level_is_flagged(container: Container) -> None:
    clock = container.clock
    with container.db.transaction() as conn:
        program = create_program(
            conn, clock, help_contact="https://acme.example/help", name="p", brand="B", optout_scope="program"
        )
        calm = rows.campaign(conn, program, "calm", T0)
        loud = rows.campaign(conn, program, "loud", T0)
        people = [_contact(conn, container, i) for i in range(400)]
        for i, person in enumerate(people):
            rows.message(conn, program=program, contact=person, at=T0, campaign=calm)
            if i < 100:
                rows.message(conn, program=program, contact=person, at=T0 + timedelta(days=10), campaign=loud)
        # calm: 2 of 300 opt out a day after it; loud: 10 of 100 (10%) a day after it.
        for person in people[100:102]:
            consent.record(
                conn,
                clock,
                contact_id=person["id"],
                program=program,
                action=Action.OPT_OUT,
                channel=Channel.SMS_KEYWORD,
                evidence={},
                occurred_at=T0 + timedelta(days=1),
            )
        for person in people[:10]:
            consent.record(
                conn,
                clock,
                contact_id=person["id"],
                program=program,
                action=Action.OPT_OUT,
                channel=Channel.SMS_KEYWORD,
                evidence={},
                occurred_at=T0 + timedelta(days=11),
            )
        analytics.refresh(conn, clock)
        report = analytics.report(conn, clock, program=program)
    loud_row, calm_row = report.campaigns  # flagged first
    assert loud_row.key == "loud" and loud_row.flagged
    assert loud_row.optouts == 10 and loud_row.delivered == 100
    assert any("significantly above the program baseline" in w for w in loud_row.why)
    assert any("2% critical level" in w for w in loud_row.why)
    assert calm_row.key == "calm" and not calm_row.flagged and calm_row.optouts == 2
    assert calm_row.delivered == 400  # the loud campaign's 100 recipients got calm too
    assert loud_row.ci_low is not None and loud_row.ci_low > loud_row.baseline  # type: ignore[operator]


def test_compaction_folds_writer_shards_without_changing_sums(
    container: Container, world: dict[str, Any]
) -> None:
    with container.db.transaction() as conn:
        before = _counter_snapshot(conn)
        folded = counters.compact(conn)
        assert _counter_snapshot(conn) == before
        left = conn.execute(select(func.count()).where(message_counts.c.shard != 0)).scalar_one()
    if container.db.is_sqlite:
        assert folded == 0  # one writer: every row is already shard 0
    else:
        assert folded > 0 and left == 0  # every test day is long settled
