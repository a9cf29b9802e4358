"""Opt-out analytics: attribution of opt-outs to campaigns, rates, the fatigue curve, flagged campaigns.

Why the cost does not grow with message volume:
- message counts (sent / delivered per program, campaign, kind and day; the fatigue curve's
  denominator) are kept by database triggers on ``messages`` (``adapters/db/counters.py``): every code
  path that writes a message keeps them right without knowing about analytics;
- opt-outs are rolled up incrementally from the ledger, which is append-only, behind an id watermark:
  each refresh attributes only the events it has not seen (``optout_attributions``) and adds them to
  ``optout_counts``;
- the report reads only those small tables (rows ~ campaigns × days), plus campaigns and programs.

Attribution rule (the only place it lives): an opt-out is attributed to the last campaign message the
contact was sent from the opt-out's program — or, for a brand-wide opt-out, from any program of that
brand — in the window before the opt-out (``optout_attribution_days``, default 7). Otherwise the opt-out
is "unattributed".
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    cast,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.sql.elements import ColumnElement

from optline.adapters.clock import Clock
from optline.adapters.db import counters
from optline.adapters.db.tables import (
    analytics_state,
    campaigns,
    consent_events,
    frequency_exposures,
    message_counts,
    messages,
    optout_attributions,
    optout_counts,
    programs,
)
from optline.domain import stats

DEFAULT_WINDOW_DAYS = 7
WATERMARK = "optout_rollup_event_id"
# Events recorded less than this long ago may belong to transactions that have not committed yet (ids are
# handed out before commit); the watermark stays behind them and the anti-join skips what is done.
COMMIT_GRACE = timedelta(minutes=5)
ROLLUP_BATCH = 5000

# How each ledger channel is reported.
CHANNEL_NAMES = {
    "sms_keyword": "keyword",
    "sms_text": "free_text",
    "web": "web_link",
    "provider": "provider",
}
OTHER_CHANNEL = "other"  # api, admin, import: an operator recorded it
REPORT_CHANNELS = ("keyword", "free_text", "web_link", "provider", OTHER_CHANNEL)

# The fatigue curve's buckets: (label, lowest, highest) messages in the 30 days before.
FREQUENCY_BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("0", 0, 0), ("1", 1, 1), ("2", 2, 2), ("3", 3, 3), ("4", 4, 4), ("5", 5, 5), ("6-7", 6, 7),
    ("8-10", 8, 10), ("11-15", 11, 15), ("16-20", 16, 20), ("21-30", 21, 30),
    ("31+", 31, counters.FREQUENCY_CAP),
)  # fmt: skip


def frequency_bucket(n: int) -> str:
    for label, low, high in FREQUENCY_BUCKETS:
        if low <= n <= high:
            return label
    return FREQUENCY_BUCKETS[-1][0]


# --------------------------------------------------------------------------------------------- rollup


def _minus_days(conn: Connection, column: Any, days: int) -> ColumnElement[Any]:
    if conn.dialect.name == "postgresql":
        return column - literal(timedelta(days=days))
    return func.datetime(column, f"-{days} days")


def _day_of(conn: Connection, column: Any) -> ColumnElement[Any]:
    if conn.dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), type_=message_counts.c.day.type)
    return func.date(column)


def _sent_time(conn: Connection) -> ColumnElement[Any]:
    t = func.coalesce(messages.c.sent_at, messages.c.updated_at)
    # SQLite compares the stored text; datetime() gives the same layout for the other side.
    return func.datetime(t) if conn.dialect.name == "sqlite" else t


def _was_sent() -> ColumnElement[bool]:
    return or_(messages.c.sent_at.is_not(None), messages.c.status.in_(counters.SENT_STATUSES))


def _candidates(conn: Connection, after_id: int, window_days: int, limit: int) -> list[dict[str, Any]]:
    """New opt-out events (id > after_id, not yet attributed) with their attribution, set-based."""
    e = consent_events
    occurred = func.datetime(e.c.occurred_at) if conn.dialect.name == "sqlite" else e.c.occurred_at
    sent_time = _sent_time(conn)
    brand_programs = select(programs.c.id).where(programs.c.brand == e.c.brand).correlate(e)
    in_scope = or_(
        messages.c.program_id == e.c.program_id,
        and_(e.c.program_id.is_(None), messages.c.program_id.in_(brand_programs)),
    )
    last_message = (
        select(messages.c.id)
        .where(
            (messages.c.contact_id == e.c.contact_id)
            & messages.c.campaign_id.is_not(None)
            & _was_sent()
            & in_scope
            & (sent_time <= occurred)
            & (sent_time >= _minus_days(conn, occurred, window_days))
        )
        .order_by(sent_time.desc(), messages.c.id.desc())
        .limit(1)
        .correlate(e)
        .scalar_subquery()
    )
    recent = (
        select(func.count())
        .select_from(messages)
        .where(
            (messages.c.contact_id == e.c.contact_id)
            & messages.c.kind.in_(counters.FATIGUE_KINDS)
            & _was_sent()
            & (sent_time <= occurred)
            & (sent_time >= _minus_days(conn, occurred, counters.FREQUENCY_WINDOW_DAYS))
            & (messages.c.created_at >= _minus_days(conn, occurred, 3 * counters.FREQUENCY_WINDOW_DAYS))
        )
        .correlate(e)
        .scalar_subquery()
    )
    done = select(optout_attributions.c.event_id).where(optout_attributions.c.event_id == e.c.id)
    new = (
        select(
            e.c.id.label("event_id"),
            e.c.contact_id,
            e.c.program_id.label("event_program_id"),
            e.c.brand,
            e.c.channel,
            e.c.occurred_at,
            _day_of(conn, e.c.occurred_at).label("day"),
            last_message.label("message_id"),
            recent.label("messages_30d"),
        )
        .where((e.c.id > after_id) & (e.c.action == "opt_out") & ~done.exists())
        .order_by(e.c.id)
        .limit(limit)
        .subquery()
    )
    rows = conn.execute(
        select(new, messages.c.campaign_id, messages.c.program_id.label("message_program_id")).outerjoin(
            messages, messages.c.id == new.c.message_id
        )
    ).all()
    out = []
    for r in rows:
        day = r.day if isinstance(r.day, date) else date.fromisoformat(str(r.day))
        out.append(
            {
                "event_id": r.event_id, "contact_id": r.contact_id, "brand": r.brand,
                "program_id": r.message_program_id if r.message_id else r.event_program_id,
                "campaign_id": r.campaign_id, "message_id": r.message_id,
                "channel": CHANNEL_NAMES.get(r.channel, OTHER_CHANNEL), "occurred_at": r.occurred_at,
                "day": day, "messages_30d": int(r.messages_30d or 0),
            }
        )  # fmt: skip
    return out


def _upsert(conn: Connection, table: Any, rows: list[dict[str, Any]], add: Iterable[str]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={c: table.c[c] + stmt.excluded[c] for c in add}
    )
    conn.execute(stmt, rows)


def _watermark(conn: Connection) -> int:
    value = conn.execute(select(analytics_state.c.value).where(analytics_state.c.name == WATERMARK)).scalar()
    return int(value or 0)


def _set_watermark(conn: Connection, value: int, now: datetime) -> None:
    updated = conn.execute(
        analytics_state.update()
        .where(analytics_state.c.name == WATERMARK)
        .values(value=value, updated_at=now)
    )
    if updated.rowcount == 0:
        conn.execute(analytics_state.insert().values(name=WATERMARK, value=value, updated_at=now))


def refresh(conn: Connection, clock: Clock, *, window_days: int = DEFAULT_WINDOW_DAYS) -> int:
    """Attribute the opt-outs recorded since the last refresh and add them to the counts.

    Incremental: reads only ledger events above the watermark. Safe to run from several processes (on
    PostgreSQL they queue on an advisory lock; SQLite writers are serialised). Returns events attributed.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('optline.optout_rollup'))"))
    mark = _watermark(conn)
    done = 0
    after = mark
    while True:
        batch = _candidates(conn, after, window_days, ROLLUP_BATCH)
        if not batch:
            break
        conn.execute(optout_attributions.insert(), batch)
        totals: Counter[tuple[Any, ...]] = Counter(
            (
                r["program_id"] or 0,
                r["brand"],
                r["campaign_id"] or 0,
                r["channel"],
                r["day"],
                min(r["messages_30d"], counters.FREQUENCY_CAP),
            )
            for r in batch
        )
        keys = ("program_id", "brand", "campaign_id", "channel", "day", "messages_30d")
        _upsert(
            conn,
            optout_counts,
            [{**dict(zip(keys, k, strict=True)), "optouts": n} for k, n in totals.items()],
            ["optouts"],
        )
        done += len(batch)
        after = batch[-1]["event_id"]
    now = clock.now()
    settled = conn.execute(
        select(func.max(consent_events.c.id)).where(
            (consent_events.c.id > mark) & (consent_events.c.recorded_at < now - COMMIT_GRACE)
        )
    ).scalar()
    if settled and settled > mark:
        _set_watermark(conn, int(settled), now)
    counters.compact(conn)
    return done


def rebuild(conn: Connection, clock: Clock, *, window_days: int = DEFAULT_WINDOW_DAYS) -> int:
    """Recompute every derived analytics table (after changing the attribution window, or to check)."""
    conn.execute(optout_attributions.delete())
    conn.execute(optout_counts.delete())
    conn.execute(analytics_state.delete().where(analytics_state.c.name == WATERMARK))
    counters.rebuild(conn)
    return refresh(conn, clock, window_days=window_days)


# --------------------------------------------------------------------------------------------- report


@dataclass
class RateRow:
    key: str
    sent: int = 0
    delivered: int = 0
    optouts: int = 0

    @property
    def rate_sent(self) -> float | None:
        return stats.rate(self.optouts, self.sent)

    @property
    def rate_delivered(self) -> float | None:
        return stats.rate(self.optouts, self.delivered)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate_sent": self.rate_sent, "rate_delivered": self.rate_delivered}


@dataclass
class CampaignRow(RateRow):
    campaign_id: int = 0
    program: str = ""
    message_type: str = ""
    tag: str | None = None
    basis: str = "delivered"  # the denominator of rate/ci: delivered, or sent when no receipts came back
    ci_low: float | None = None
    ci_high: float | None = None
    baseline: float | None = None
    flagged: bool = False
    why: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return self.rate_delivered if self.basis == "delivered" else self.rate_sent

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "rate": self.rate}


@dataclass
class Report:
    generated_at: datetime
    program: str | None
    since: date | None
    window_days: int
    totals: RateRow
    attributed: int
    unattributed: int
    campaigns: list[CampaignRow]
    by_type: list[RateRow]
    by_tag: list[RateRow]
    by_program: list[RateRow]
    by_day: list[RateRow]
    by_week: list[RateRow]
    by_channel: list[RateRow]
    by_frequency: list[RateRow]

    SECTIONS = ("by_type", "by_tag", "by_program", "by_day", "by_week", "by_channel", "by_frequency")

    def as_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "program": self.program,
            "since": self.since.isoformat() if self.since else None,
            "window_days": self.window_days,
            "critical_rate": stats.CRITICAL_OPTOUT_RATE,
            "totals": self.totals.as_dict(),
            "attributed": self.attributed,
            "unattributed": self.unattributed,
            "campaigns": [c.as_dict() for c in self.campaigns],
            **{name: [r.as_dict() for r in getattr(self, name)] for name in self.SECTIONS},
        }


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def report(
    conn: Connection,
    clock: Clock,
    *,
    program: Mapping[str, Any] | None = None,
    since: date | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> Report:
    """The opt-out report over the aggregate tables (call ``refresh`` first to include the newest events)."""
    pid = program["id"] if program else None
    mc, oc, fe = message_counts, optout_counts, frequency_exposures

    # Sent / delivered per (program, campaign, kind, day): the one read of message counts.
    where = [mc.c.day >= since] if since else []
    if pid is not None:
        where.append(mc.c.program_id == pid)
    counts = conn.execute(
        select(
            mc.c.program_id,
            mc.c.campaign_id,
            mc.c.kind,
            mc.c.day,
            func.sum(mc.c.sent).label("sent"),
            func.sum(mc.c.delivered).label("delivered"),
        )
        .where(*where)
        .group_by(mc.c.program_id, mc.c.campaign_id, mc.c.kind, mc.c.day)
    ).all()
    owhere = [oc.c.day >= since] if since else []
    if pid is not None:
        owhere.append(oc.c.program_id == pid)
    optouts = conn.execute(
        select(
            oc.c.program_id,
            oc.c.brand,
            oc.c.campaign_id,
            oc.c.channel,
            oc.c.day,
            oc.c.messages_30d,
            func.sum(oc.c.optouts).label("n"),
        )
        .where(*owhere)
        .group_by(oc.c.program_id, oc.c.brand, oc.c.campaign_id, oc.c.channel, oc.c.day, oc.c.messages_30d)
    ).all()
    exposures = conn.execute(
        select(fe.c.messages_30d, func.sum(fe.c.sent).label("sent"))
        .where(
            *([fe.c.program_id == pid] if pid is not None else []), *([fe.c.day >= since] if since else [])
        )
        .group_by(fe.c.messages_30d)
    ).all()
    campaign_ids = {r.campaign_id for r in counts if r.campaign_id} | {
        r.campaign_id for r in optouts if r.campaign_id
    }
    camp = {
        r.id: r
        for r in conn.execute(
            select(
                campaigns.c.id,
                campaigns.c.name,
                campaigns.c.program_id,
                campaigns.c.message_type,
                campaigns.c.tag,
            ).where(campaigns.c.id.in_(sorted(campaign_ids)))
        )
    }
    program_names = {r.id: r.name for r in conn.execute(select(programs.c.id, programs.c.name))}

    totals = RateRow("total")
    by_campaign: dict[int, CampaignRow] = {}
    by_program: dict[str, RateRow] = {}
    by_day: dict[date, RateRow] = {}
    by_type: dict[str, RateRow] = {}
    by_tag: dict[str, RateRow] = {}

    def row(table: dict[Any, Any], key: Any, label: str | None = None) -> RateRow:
        if key not in table:
            table[key] = RateRow(label if label is not None else str(key))
        found: RateRow = table[key]
        return found

    def campaign_row(cid: int) -> CampaignRow:
        if cid not in by_campaign:
            c = camp.get(cid)
            by_campaign[cid] = CampaignRow(
                key=c.name if c else f"campaign {cid}",
                campaign_id=cid,
                program=program_names.get(c.program_id, "") if c else "",
                message_type=c.message_type if c else "",
                tag=c.tag if c else None,
            )
        return by_campaign[cid]

    for r in counts:
        sent, delivered = int(r.sent or 0), int(r.delivered or 0)
        if r.campaign_id:
            cr = campaign_row(r.campaign_id)
            cr.sent += sent
            cr.delivered += delivered
            c = camp.get(r.campaign_id)
            if c is not None:
                for table, key in ((by_type, c.message_type), (by_tag, c.tag or "(no tag)")):
                    t = row(table, key)
                    t.sent += sent
                    t.delivered += delivered
        if r.kind not in counters.FATIGUE_KINDS:
            continue  # replies (confirmations, help) are not what the sender chose to send
        for t in (
            totals,
            row(by_program, program_names.get(r.program_id, str(r.program_id))),
            row(by_day, _as_date(r.day)),
        ):
            t.sent += sent
            t.delivered += delivered

    by_channel = {name: RateRow(name) for name in REPORT_CHANNELS}
    by_frequency = {label: RateRow(label) for label, _, _ in FREQUENCY_BUCKETS}
    attributed = unattributed = 0
    for o in optouts:
        n = int(o.n)
        totals.optouts += n
        if o.campaign_id:
            attributed += n
            campaign_row(o.campaign_id).optouts += n
            c = camp.get(o.campaign_id)
            if c is not None:
                row(by_type, c.message_type).optouts += n
                row(by_tag, c.tag or "(no tag)").optouts += n
        else:
            unattributed += n
        pname = program_names.get(o.program_id) if o.program_id else f"{o.brand} (brand-wide, unattributed)"
        row(by_program, pname or str(o.program_id)).optouts += n
        row(by_day, _as_date(o.day)).optouts += n
        by_channel[o.channel if o.channel in by_channel else OTHER_CHANNEL].optouts += n
        by_frequency[frequency_bucket(int(o.messages_30d))].optouts += n
    for x in exposures:
        by_frequency[frequency_bucket(int(x.messages_30d))].sent += int(x.sent or 0)
    for t in by_channel.values():
        t.sent, t.delivered = totals.sent, totals.delivered  # share of all sending, per channel

    by_week: dict[date, RateRow] = {}
    for day, t in by_day.items():
        week = day - timedelta(days=day.weekday())
        w = row(by_week, week, week.isoformat())
        w.sent += t.sent
        w.delivered += t.delivered
        w.optouts += t.optouts

    campaign_rows = _flag(list(by_campaign.values()))
    return Report(
        generated_at=clock.now(),
        program=program["name"] if program else None,
        since=since,
        window_days=window_days,
        totals=totals,
        attributed=attributed,
        unattributed=unattributed,
        campaigns=campaign_rows,
        by_type=sorted(by_type.values(), key=lambda r: r.key),
        by_tag=sorted(by_tag.values(), key=lambda r: r.key),
        by_program=sorted(by_program.values(), key=lambda r: r.key),
        by_day=[_relabel(by_day[d], d) for d in sorted(by_day)],
        by_week=[by_week[w] for w in sorted(by_week)],
        by_channel=list(by_channel.values()),
        by_frequency=[r for r in by_frequency.values() if r.sent or r.optouts],
    )


def _relabel(r: RateRow, day: date) -> RateRow:
    r.key = day.isoformat()
    return r


def _flag(rows: list[CampaignRow]) -> list[CampaignRow]:
    """Compare each campaign with the rest of its program (Wilson CI) and with the critical level."""
    program_totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # optouts, delivered, sent
    for r in rows:
        t = program_totals[r.program]
        t[0] += r.optouts
        t[1] += r.delivered
        t[2] += r.sent
    for r in rows:
        r.basis = "delivered" if r.delivered > 0 else "sent"
        trials = r.delivered if r.basis == "delivered" else r.sent
        optouts, p_delivered, p_sent = program_totals[r.program]
        # The baseline is the rest of the program: including the campaign itself would pull the baseline
        # towards the campaign and hide exactly the outliers this is looking for.
        rest_trials = (p_delivered - r.delivered) if r.basis == "delivered" else (p_sent - r.sent)
        r.baseline = stats.rate(optouts - r.optouts, rest_trials)
        if trials <= 0:
            continue
        events = min(r.optouts, trials)
        interval = stats.wilson(events, trials)
        assert interval is not None
        r.ci_low, r.ci_high = interval.low, interval.high
        rate = events / trials
        ci = f"95% CI {interval.low:.2%}–{interval.high:.2%}"
        if stats.significantly_above(events, trials, r.baseline):
            assert r.baseline is not None
            r.why.append(
                f"opt-out rate {rate:.2%} per {r.basis} message ({ci}) is significantly above the "
                f"program baseline {r.baseline:.2%}"
            )
        if rate > stats.CRITICAL_OPTOUT_RATE:
            r.why.append(
                f"opt-out rate {rate:.2%} per {r.basis} message ({ci}) is above the "
                f"{stats.CRITICAL_OPTOUT_RATE:.0%} critical level"
            )
        r.flagged = bool(r.why)
    return sorted(rows, key=lambda r: (not r.flagged, -(r.rate or 0.0), r.key))
