"""The dashboard's counts (services/dashboard.py) read an index range or a kept count, never the history, and
still equal a direct count over the base tables.

Plans as in test_metrics_plans.py: the statements are captured as the read model runs them, on a database
with a long history in bulk (months of sent campaign messages and ledger events) and a few recent rows,
after ANALYZE; SQLite's EXPLAIN QUERY PLAN must show no SCAN of ``messages`` or ``consent_events``,
PostgreSQL's EXPLAIN (enable_seqscan left on) no Seq Scan of either."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import event, func, select

from optline.adapters.clock import FrozenClock, as_utc
from optline.adapters.db import contacts
from optline.adapters.db.tables import campaigns, consent_events, inbound_messages, messages
from optline.bootstrap import Container
from optline.domain.phones import parse_phone
from optline.services import campaign_view
from optline.services import dashboard as read
from optline.services.programs import create_program
from tests.support import outbound, plans
from tests.support import outbox_rows as rows

HISTORY_TABLES = {"messages", "consent_events"}


def long_history(
    container: Container, now: datetime, batches: int = 20, per_batch: int = 1000, replies: int = 0
) -> None:
    """``batches`` old campaigns of ``per_batch`` sent messages, each with its own contact's chain of events
    (one in ten an opt-out) and ``replies`` replies attributed to it, spread over the year before the trend's
    window; then a few recent rows."""
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="p", brand="B"
        )
        for i in range(batches):
            at = now - timedelta(days=60 + 15 * i)
            person = contacts.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), at)[0]
            camp = rows.campaign(conn, program, f"old {i}", at)
            rows.bulk_history(
                conn,
                program_id=program["id"],
                contact_id=person["id"],
                at=at,
                messages_=per_batch,
                events=per_batch,
                inbound_=replies,
                digests=0,
                tag=f"h{i}",
                campaign_id=camp["id"],
            )
        recent = contacts.get_or_create(conn, parse_phone("+14155559999"), now)[0]
        camp = rows.campaign(conn, program, "new", now - timedelta(days=2))
        for d, status in enumerate(["delivered", "sent", "failed", "queued"]):
            rows.message(
                conn,
                program=program,
                contact=recent,
                at=now - timedelta(days=d),
                campaign=camp,
                status=status,
            )
        outbound.opt_out(conn, container.clock, program, recent["id"])
        conn.exec_driver_sql("ANALYZE")


def captured(container: Container, read_model: Callable[[Any], object]) -> list[tuple[str, Any]]:
    return captured_in(container, read_model)


def captured_in(
    container: Container, work: Callable[[Any], object], *, write: bool = False
) -> list[tuple[str, Any]]:
    """The SELECTs ``work`` ran, with their parameters (in a read, or a write transaction)."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, parameters))

    event.listen(container.db.engine, "before_cursor_execute", capture)
    try:
        with container.db.transaction() if write else container.db.read() as conn:
            work(conn)
    finally:
        event.remove(container.db.engine, "before_cursor_execute", capture)
    return seen


def assert_no_history_scan(
    container: Container, statements: list[tuple[str, Any]], history: set[str] = HISTORY_TABLES
) -> set[str]:
    return plans.assert_no_scan(container, statements, history)


def test_overview_and_trend_read_no_history(container: Container) -> None:
    now = container.clock.now()
    long_history(container, now)
    statements = captured(container, lambda conn: read.overview(conn, now))
    assert any("message_counts" in s for s, _ in statements)  # sent: the kept counts
    used = assert_no_history_scan(container, statements)
    assert "ix_consent_events_action_time" in used, used  # opt-outs since: a range of the recent ones


def test_optouts_since_reads_an_index_range(container: Container) -> None:
    now = container.clock.now()
    long_history(container, now)
    statements = captured(container, lambda conn: read.optouts_since(conn, now - timedelta(days=7)))
    assert len(statements) == 1
    assert "ix_consent_events_action_time" in assert_no_history_scan(container, statements)


def test_campaigns_summary_reads_kept_counts(container: Container) -> None:
    now = container.clock.now()
    long_history(container, now)
    statements = captured(container, lambda conn: read.campaigns_summary(conn, container.clock))
    assert any("campaign_status_counts" in s for s, _ in statements)
    assert_no_history_scan(container, statements)


# --- the figures equal a direct count


def direct_sent_per_day(container: Container) -> Counter[date]:
    """Marketing and transactional messages a provider accepted, per UTC day of sending: counted from the
    outbox row by row (the definition in adapters/db/counters.py)."""
    with container.db.read() as conn:
        found = conn.execute(
            select(messages.c.kind, messages.c.status, messages.c.sent_at, messages.c.delivered_at,
                   messages.c.created_at)
        ).all()  # fmt: skip
    per_day: Counter[date] = Counter()
    for kind, status, sent_at, delivered_at, created_at in found:
        if kind in read.RATE_KINDS and (sent_at is not None or status in read.SENT_STATUSES):
            per_day[as_utc(sent_at or delivered_at or created_at).date()] += 1
    return per_day


def test_figures_equal_a_direct_count(container: Container) -> None:
    now = container.clock.now()
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="p", brand="B"
        )
        camps = [rows.campaign(conn, program, f"c{i}", now - timedelta(days=40 - 10 * i)) for i in range(4)]
        statuses = ["delivered", "sent", "failed", "undelivered", "queued", "suppressed", "cancelled"]
        kinds = ["marketing", "transactional", "confirmation", "help"]
        for i in range(120):
            person = contacts.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), now)[0]
            at = now - timedelta(days=i % 45, hours=i % 7)  # some before the 30 days, some today
            rows.message(
                conn,
                program=program,
                contact=person,
                at=at,
                campaign=camps[i % 5] if i % 5 < 4 else None,
                status=statuses[i % len(statuses)],
                kind=kinds[i % len(kinds)],
            )
            if i % 6 == 0:  # an opt-out a few minutes after the message
                outbound.opt_out(conn, FrozenClock(at + timedelta(minutes=5)), program, person["id"])
    per_day = direct_sent_per_day(container)
    with container.db.read() as conn:
        stats = read.overview(conn, now)
        trend = read.daily_trend(conn, now, days=30)
        summary = read.campaigns_summary(conn, container.clock)
        optout_times = conn.execute(
            select(consent_events.c.contact_id, consent_events.c.occurred_at).where(
                consent_events.c.action == "opt_out"
            )
        ).all()
        by_campaign = {
            (c, s): int(n)
            for c, s, n in conn.execute(
                select(messages.c.campaign_id, messages.c.status, func.count())
                .where(messages.c.campaign_id.is_not(None))
                .group_by(messages.c.campaign_id, messages.c.status)
            )
        }
    today = now.date()
    assert stats["sent_30d"] == sum(n for d, n in per_day.items() if d > today - timedelta(days=30)) > 0
    assert [p.sent for p in trend] == [per_day[p.day] for p in trend]
    assert sum(p.sent for p in trend) == stats["sent_30d"]
    assert [p.rolling_sent for p in trend] == [
        sum(per_day[p.day - timedelta(days=k)] for k in range(read.ROLLING_DAYS)) for p in trend
    ]
    for days in (0, 7, 30):
        since = (
            now.replace(hour=0, minute=0, second=0, microsecond=0)
            if days == 0
            else now - timedelta(days=days)
        )
        key = "optouts_today" if days == 0 else f"optouts_{days}d"
        assert stats[key] == len({c for c, at in optout_times if as_utc(at) >= since}), key
    out_days = Counter(as_utc(at).date() for _c, at in optout_times)
    assert [p.optouts for p in trend] == [out_days[p.day] for p in trend]
    for item in summary:
        mine = {s: n for (c, s), n in by_campaign.items() if c == item["id"]}

        def of(*statuses: str, mine: dict[str, int] = mine) -> int:
            return sum(mine.get(s, 0) for s in statuses)

        assert item["total"] == sum(mine.values())
        assert item["sent"] == of(*read.SENT_STATUSES) and item["delivered"] == of("delivered")
        assert item["awaiting"] == of("sent") and item["failed"] == of("failed", "undelivered")
        assert item["suppressed"] == of(*read.SUPPRESSED_STATUSES)
        assert item["pending"] == of("queued", "claimed", "sending", "deferred")
    assert sum(item["total"] for item in summary) == sum(by_campaign.values()) > 0


def test_a_campaigns_page_reads_its_counts_not_its_messages(container: Container) -> None:
    """A campaign's page and its status (API, CLI): the counts per status come from the kept counts; what
    is still read from the outbox (failures by reason) is a range of the campaign's failed messages."""
    now = container.clock.now()
    long_history(container, now)
    with container.db.read() as conn:
        newest = conn.execute(select(func.max(campaigns.c.id))).scalar_one()
        oldest = conn.execute(select(func.min(campaigns.c.id))).scalar_one()
    for campaign_id in (newest, oldest):  # 4 messages; 1,000 messages
        statements = captured(container, lambda conn, cid=campaign_id: campaign_view.progress(conn, cid))
        assert any("campaign_status_counts" in s for s, _ in statements)
        assert_no_history_scan(container, statements)
        with container.db.read() as conn:
            shown = campaign_view.progress(conn, campaign_id).counts
            direct = dict(
                conn.execute(
                    select(messages.c.status, func.count())
                    .where(messages.c.campaign_id == campaign_id)
                    .group_by(messages.c.status)
                ).all()
            )
        assert shown == direct and sum(shown.values()) in (4, 1000)


def test_a_campaigns_replies_are_an_index_range(container: Container) -> None:
    """A campaign's page shows its replies by intent and its latest replies: a range of the replies
    attributed to it (ix_inbound_campaign_time), not a read of every reply to every campaign."""
    now = container.clock.now()
    long_history(container, now, batches=10, per_batch=1000, replies=1000)
    with container.db.read() as conn:
        oldest = conn.execute(select(func.min(campaigns.c.id))).scalar_one()
    statements = captured(
        container,
        lambda conn: (campaign_view.progress(conn, oldest), campaign_view.recent_replies(conn, oldest)),
    )
    replies = [s for s in statements if "inbound_messages" in s[0]]
    assert len(replies) == 2
    used = assert_no_history_scan(container, replies, {"inbound_messages"})
    assert "ix_inbound_campaign_time" in used
    with container.db.read() as conn:
        shown = campaign_view.progress(conn, oldest).replies
        latest = campaign_view.recent_replies(conn, oldest)
        direct = conn.execute(
            select(func.count())
            .select_from(inbound_messages)
            .where(inbound_messages.c.attributed_campaign_id == oldest)
        ).scalar_one()
    assert shown == [("other", 1000)] and direct == 1000
    assert len(latest) == 20
