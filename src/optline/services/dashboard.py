"""The dashboard's read model: set-based queries over the tables, shaped for the pages.

Reads only. Works on SQLite and PostgreSQL alike (days are bucketed in UTC by the database).

Nothing here reads the whole history on a page load: opt-outs are a range of ``ix_consent_events_action_time``
(the recent ones only), messages sent come from the analytics counts kept by triggers (``message_counts``,
adapters/db/counters.py, by UTC day), and the campaign list's counts from ``campaign_status_counts``
(adapters/db/rollups.py). tests/integration/test_dashboard_plans.py checks each plan on both engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Date, and_, case, cast, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from optline.adapters.clock import Clock, as_utc
from optline.adapters.db.tables import (
    campaign_status_counts,
    campaigns,
    consent_events,
    contacts,
    inbound_messages,
    message_counts,
    messages,
    programs,
    simulator_messages,
    subscriptions,
)
from optline.domain.consent import Action
from optline.services import analytics, review

SENT_STATUSES = ("sent", "delivered", "undelivered")
SUPPRESSED_STATUSES = ("suppressed", "skipped")
# Messages that count as "sent to people" for a rate: not the replies to something they just sent us.
RATE_KINDS = ("marketing", "transactional")
SENT_DAYS = 30  # the overview's "sent" figure: the last 30 UTC days, today included


def _day(conn: Connection, column: Any) -> ColumnElement[Any]:
    if conn.dialect.name == "sqlite":
        return func.date(column)  # stored as naive UTC text
    return cast(func.timezone("UTC", column), Date)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _start_of_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


ROLLING_DAYS = 7


@dataclass(frozen=True)
class DayPoint:
    day: date
    optouts: int
    sent: int
    # Over the trailing ROLLING_DAYS days: replies come the day after a send, so a same-day rate is noise.
    rolling_optouts: int = 0
    rolling_sent: int = 0

    @property
    def rate(self) -> float | None:
        return self.rolling_optouts / self.rolling_sent if self.rolling_sent else None


def is_empty(conn: Connection) -> bool:
    return conn.execute(select(programs.c.id).limit(1)).first() is None


def optouts_since(conn: Connection, since: datetime) -> int:
    return int(
        conn.execute(
            select(func.count(func.distinct(consent_events.c.contact_id))).where(
                (consent_events.c.action == Action.OPT_OUT.value) & (consent_events.c.occurred_at >= since)
            )
        ).scalar_one()
    )


def overview(conn: Connection, now: datetime, days: int = 30) -> dict[str, Any]:
    subscribers = conn.execute(
        select(func.count(func.distinct(subscriptions.c.contact_id))).where(
            subscriptions.c.status == "subscribed"
        )
    ).scalar_one()
    today = _start_of_day(now)
    return {
        "subscribers": int(subscribers),
        "contacts": int(conn.execute(select(func.count()).select_from(contacts)).scalar_one()),
        "optouts_today": optouts_since(conn, today),
        "optouts_7d": optouts_since(conn, now - timedelta(days=7)),
        "optouts_30d": optouts_since(conn, now - timedelta(days=30)),
        "sent_30d": sum(sent_per_day(conn, today.date() - timedelta(days=SENT_DAYS - 1)).values()),
        "pending_review": pending_review_count(conn),
        "channels": optout_channels(conn, now - timedelta(days=30)),
        "trend": daily_trend(conn, now, days),
    }


def sent_per_day(conn: Connection, first: date) -> dict[date, int]:
    """Marketing and transactional messages sent per UTC day from ``first`` on, as the analytics counts keep
    them (adapters/db/counters.py: accepted by a provider, on the day of ``sent_at``); a range of
    ``ix_message_counts_day``, never the outbox itself."""
    mc = message_counts
    rows = conn.execute(
        select(mc.c.day, func.sum(mc.c.sent))
        .where(mc.c.kind.in_(RATE_KINDS) & (mc.c.day >= first))
        .group_by(mc.c.day)
    )
    return {_as_date(d): int(n) for d, n in rows if n}


def optout_channels(conn: Connection, since: datetime) -> list[tuple[str, int]]:
    """How people left since ``since``: opt-out events per channel, most used first."""
    rows = conn.execute(
        select(consent_events.c.channel, func.count())
        .where((consent_events.c.action == Action.OPT_OUT.value) & (consent_events.c.occurred_at >= since))
        .group_by(consent_events.c.channel)
        .order_by(func.count().desc(), consent_events.c.channel)
    )
    return [(str(c), int(n)) for c, n in rows]


def daily_trend(conn: Connection, now: datetime, days: int = 30) -> list[DayPoint]:
    """Opt-outs and messages sent per UTC day for the last ``days`` days (gaps as zero), with the trailing
    ROLLING_DAYS-day opt-out rate (opt-outs / messages sent in the window)."""
    first = _start_of_day(now) - timedelta(days=days - 1 + ROLLING_DAYS - 1)
    out_day = _day(conn, consent_events.c.occurred_at)
    optouts = {
        _as_date(d): int(n)
        for d, n in conn.execute(
            select(out_day, func.count(func.distinct(consent_events.c.contact_id)))
            .where(
                (consent_events.c.action == Action.OPT_OUT.value) & (consent_events.c.occurred_at >= first)
            )
            .group_by(out_day)
        )
    }
    sent = sent_per_day(conn, first.date())
    all_days = [first.date() + timedelta(days=i) for i in range(days + ROLLING_DAYS - 1)]
    points = []
    for i in range(ROLLING_DAYS - 1, len(all_days)):
        window = all_days[i - ROLLING_DAYS + 1 : i + 1]
        day = all_days[i]
        points.append(
            DayPoint(
                day,
                optouts.get(day, 0),
                sent.get(day, 0),
                rolling_optouts=sum(optouts.get(d, 0) for d in window),
                rolling_sent=sum(sent.get(d, 0) for d in window),
            )
        )
    return points


def programs_summary(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    subs = (
        select(
            subscriptions.c.program_id,
            func.sum(case((subscriptions.c.status == "subscribed", 1), else_=0)).label("subscribed"),
            func.sum(case((subscriptions.c.status == "unsubscribed", 1), else_=0)).label("unsubscribed"),
            func.sum(case((subscriptions.c.held.is_(True), 1), else_=0)).label("held"),
        )
        .group_by(subscriptions.c.program_id)
        .subquery()
    )
    camp = (
        select(campaigns.c.program_id, func.count().label("campaigns"))
        .group_by(campaigns.c.program_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            programs,
            func.coalesce(subs.c.subscribed, 0).label("subscribed"),
            func.coalesce(subs.c.unsubscribed, 0).label("unsubscribed"),
            func.coalesce(subs.c.held, 0).label("held"),
            func.coalesce(camp.c.campaigns, 0).label("campaigns"),
        )
        .outerjoin(subs, subs.c.program_id == programs.c.id)
        .outerjoin(camp, camp.c.program_id == programs.c.id)
        .order_by(programs.c.name)
    )
    return [dict(r._mapping) for r in rows]


COUNT_COLUMNS = ("total", "sent", "delivered", "awaiting", "suppressed", "failed", "pending")


def refresh(conn: Connection, clock: Clock, *, window_days: int = analytics.DEFAULT_WINDOW_DAYS) -> None:
    """Roll the newest opt-outs into the analytics aggregates (incremental; a write, in its own transaction)
    so the campaign figures read next include them."""
    analytics.refresh(conn, clock, window_days=window_days)


def campaigns_summary(
    conn: Connection, clock: Clock, *, window_days: int = analytics.DEFAULT_WINDOW_DAYS
) -> list[dict[str, Any]]:
    """Campaigns, newest first, with their outbox counts and the analytics report's opt-out figures
    (as of the last ``refresh``)."""
    # Kept by triggers per (campaign, status, shard): campaigns × statuses rows, whatever was sent.
    csc = campaign_status_counts

    def of(*statuses: str) -> ColumnElement[Any]:
        return func.sum(case((csc.c.status.in_(statuses), csc.c.messages), else_=0))

    counts = (
        select(
            csc.c.campaign_id,
            func.sum(csc.c.messages).label("total"),
            of(*SENT_STATUSES).label("sent"),
            of("delivered").label("delivered"),
            of("sent").label("awaiting"),
            of(*SUPPRESSED_STATUSES).label("suppressed"),
            of("failed", "undelivered").label("failed"),
            of("queued", "claimed", "sending", "deferred").label("pending"),
        )
        .group_by(csc.c.campaign_id)
        .subquery()
    )
    zero = literal(0)
    rows = conn.execute(
        select(
            campaigns,
            programs.c.name.label("program"),
            programs.c.brand,
            *(func.coalesce(counts.c[k], zero).label(k) for k in COUNT_COLUMNS),
        )
        .join(programs, programs.c.id == campaigns.c.program_id)
        .outerjoin(counts, counts.c.campaign_id == campaigns.c.id)
        .order_by(func.coalesce(campaigns.c.started_at, campaigns.c.created_at).desc(), campaigns.c.id.desc())
    ).all()
    # Opt-outs, rates and flags come from the analytics report: the one place the attribution rule and the
    # "significantly above the program" test live.
    rates = {r.campaign_id: r for r in analytics.report(conn, clock, window_days=window_days).campaigns}
    result = []
    for r in rows:
        item = dict(r._mapping)
        item.update({k: int(item[k]) for k in COUNT_COLUMNS})
        row = rates.get(item["id"])
        item["optouts"] = row.optouts if row else 0
        item["optout_rate"] = row.rate if row else None
        item["rate_basis"] = row.basis if row else "delivered"
        item["baseline"] = row.baseline if row else None
        item["ci_low"], item["ci_high"] = (row.ci_low, row.ci_high) if row else (None, None)
        item["spike"] = bool(row and row.flagged)
        item["why"] = list(row.why) if row else []
        result.append(item)
    return result


def contact_timeline(conn: Connection, contact_id: int, limit: int = 300) -> list[dict[str, Any]]:
    """Everything that happened with one person, newest first: consent events, messages out and in."""
    names = {p.id: p.name for p in conn.execute(select(programs.c.id, programs.c.name))}
    items: list[dict[str, Any]] = []
    for e in conn.execute(
        select(consent_events)
        .where(consent_events.c.contact_id == contact_id)
        .order_by(consent_events.c.seq.desc())
        .limit(limit)
    ):
        items.append({"kind": "consent", "at": e.occurred_at, "row": dict(e._mapping),
                      "program": names.get(e.program_id) if e.program_id else None})  # fmt: skip
    for m in conn.execute(
        select(messages, campaigns.c.name.label("campaign"))
        .outerjoin(campaigns, campaigns.c.id == messages.c.campaign_id)
        .where(messages.c.contact_id == contact_id)
        .order_by(messages.c.created_at.desc())
        .limit(limit)
    ):
        items.append({"kind": "out", "at": m.sent_at or m.created_at, "row": dict(m._mapping),
                      "program": names.get(m.program_id)})  # fmt: skip
    for i in conn.execute(
        select(inbound_messages)
        .where(inbound_messages.c.contact_id == contact_id)
        .order_by(inbound_messages.c.received_at.desc())
        .limit(limit)
    ):
        items.append(
            {"kind": "in", "at": i.received_at, "row": dict(i._mapping), "program": names.get(i.program_id)}
        )
    items.sort(key=lambda it: (as_utc(it["at"]), it["kind"] == "consent"), reverse=True)
    return items[:limit]


def pending_review_count(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count()).where(
                inbound_messages.c.review.is_(True) & inbound_messages.c.review_decided_at.is_(None)
            )
        ).scalar_one()
    )


def review_queue(conn: Connection, limit: int = 200) -> list[dict[str, Any]]:
    """Replies waiting for a decision, each with ``answered``: the last message we sent that person before
    the reply (what they were answering), beside the classifier's reading in ``reason``."""
    answered = (
        select(messages.c.body)
        .where(
            (messages.c.contact_id == inbound_messages.c.contact_id)
            & (messages.c.created_at <= inbound_messages.c.received_at)
        )
        .order_by(messages.c.created_at.desc(), messages.c.id.desc())
        .limit(1)
        .correlate(inbound_messages)
        .scalar_subquery()
        .label("answered")
    )
    rows = conn.execute(
        select(
            inbound_messages, contacts.c.phone, programs.c.name.label("program"), programs.c.brand, answered
        )
        .outerjoin(contacts, contacts.c.id == inbound_messages.c.contact_id)
        .outerjoin(programs, programs.c.id == inbound_messages.c.program_id)
        .where(inbound_messages.c.review.is_(True) & inbound_messages.c.review_decided_at.is_(None))
        .order_by(inbound_messages.c.received_at, inbound_messages.c.id)
        .limit(limit)
    )
    items = [dict(r._mapping) for r in rows]
    return [{**item, "stopped_everything": review.stopped_everything(item)} for item in items]


def simulator_log(conn: Connection, limit: int = 200, direction: str | None = None) -> list[dict[str, Any]]:
    q = select(simulator_messages).order_by(simulator_messages.c.id.desc()).limit(limit)
    if direction in ("in", "out"):
        q = q.where(simulator_messages.c.direction == direction)
    rows = conn.execute(q)
    return [dict(r._mapping) for r in rows]


def recent_contacts(conn: Connection, limit: int = 8) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(contacts.c.id, contacts.c.phone)
        .where(
            contacts.c.id.in_(
                select(subscriptions.c.contact_id).where(and_(subscriptions.c.status == "subscribed"))
            )
        )
        .order_by(contacts.c.id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


def changed_since(conn: Connection, when: datetime) -> bool:
    """Whether a consent event was recorded or a contact created after ``when`` (a stored list review is then
    out of date). Reads the newest row of each by primary key: constant time whatever the table sizes."""
    newest_event = conn.execute(
        select(consent_events.c.recorded_at).order_by(consent_events.c.id.desc()).limit(1)
    ).scalar()
    newest_contact = conn.execute(
        select(contacts.c.created_at).order_by(contacts.c.id.desc()).limit(1)
    ).scalar()
    since = as_utc(when)
    return any(t is not None and as_utc(t) > since for t in (newest_event, newest_contact))
