"""What the dashboard's counts cost on a long history: each query now beside the query it replaced, in the
same run, on the same database.

History: ``--messages`` sent campaign messages (``--campaigns`` campaigns, one every 4 days over the
past, to ``--contacts`` people) and ``--events`` ledger events (one in ten an opt-out) spread over the
same months, inserted in bulk with every trigger installed; then ANALYZE. Queries, each timed in
interleaved rounds (median):

- sent in 30 days: ``message_counts`` days (now) vs a count over ``messages`` by ``sent_at`` (before);
- the trend's sent per day: the same two shapes, over the trend's 36 days;
- opt-outs in 30 days: a range of ``ix_consent_events_action_time`` (action, occurred_at) (now) vs the
  same count when only the old index (action, recorded_at) can serve it (before: the filter is on
  ``occurred_at``, so the old plan read every opt-out ever recorded);
- the campaign list's counts: ``campaign_status_counts`` (now) vs a GROUP BY over every campaign message;
- a checkpoint's totals: ``consent_event_counts`` (now) vs counting the ledger.

The write side: a campaign of ``--write-rows`` messages inserted, moved to sending, then delivered, with the
campaign counts' triggers and without them (the triggers as before this change), alternating.

    python -m bench.dashboard_scale [--messages 1000000] [--events 200000] [--rounds 7]
                                    [--engines sqlite,postgresql]

Measured 2026-11-30 with the defaults (1M messages, 100 campaigns, 20,000 contacts, 200,000 events), 2
shared cores under other helpers' test suites: load average 9.1 at the start, 15.4 at the end. Medians of
7 interleaved rounds, ms (now / before = ratio):

    SQLite       sent in 30 days 1.24 / 586 = 475x; trend's sent per day 1.43 / 607 = 425x;
                 opt-outs in 30 days 6.6 / 57 = 8.6x; campaign list counts 0.97 / 467 = 484x;
                 checkpoint totals 1.0 / 25.8 = 26x; overview() whole 27.8 ms
                 write side (20,000-message campaign: insert, sending, delivered) 3.39 s vs 3.15 s = 1.08x
    PostgreSQL   sent in 30 days 2.96 / 311 = 105x; trend's sent per day 2.05 / 319 = 156x;
                 opt-outs in 30 days 4.1 / 39.6 = 9.8x; campaign list counts 2.5 / 385 = 156x;
                 checkpoint totals 1.6 / 134 = 84x; overview() whole 19.9 ms
                 write side 3.77 s vs 3.20 s = 1.18x

An earlier run (load 12-13) gave the same picture: SQLite 133x / 135x / 6.2x / 531x / 9.6x, PostgreSQL
48x / 30x / 7.7x / 49x / 14x. On a small history (20,000 messages) the index and counts reads cost about
what the old queries did (0.3x-3x, within the noise of this machine): the gain grows with the history.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, case, cast, delete, func, insert, literal, select, text, update
from tests.support import outbox_rows as rows

from bench.common import fresh_database
from optline.adapters.clock import FrozenClock
from optline.adapters.db import ledger, rollups
from optline.adapters.db.tables import UtcDateTime, consent_events, contacts, messages, programs
from optline.bootstrap import Container, build
from optline.config import Settings
from optline.services import dashboard
from optline.services.programs import create_program

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
KINDS = dashboard.RATE_KINDS


# --------------------------------------------------------------------------- the queries before this change


def old_sent_30d(conn: Connection, now: datetime) -> int:
    return int(
        conn.execute(
            select(func.count()).where(
                messages.c.kind.in_(KINDS) & (messages.c.sent_at >= now - timedelta(days=30))
            )
        ).scalar_one()
    )


def old_sent_per_day(conn: Connection, first: datetime) -> int:
    day = dashboard._day(conn, messages.c.sent_at)
    return len(
        conn.execute(
            select(day, func.count())
            .where(messages.c.kind.in_(KINDS) & (messages.c.sent_at >= first))
            .group_by(day)
        ).all()
    )


def old_optouts_since(conn: Connection, since: datetime) -> int:
    # The old schema had (action, recorded_at) only: hide occurred_at from the new index (``+`` on SQLite,
    # an expression on PostgreSQL) so the planner has exactly the old choices (the bench creates that index).
    occurred = "+occurred_at" if conn.dialect.name == "sqlite" else "(occurred_at + interval '0 s')"
    return int(
        conn.execute(
            text(
                f"SELECT count(DISTINCT contact_id) FROM consent_events "
                f"WHERE action = 'opt_out' AND {occurred} >= :since"
            ),
            {"since": since if conn.dialect.name == "postgresql" else since.strftime("%Y-%m-%d %H:%M:%S")},
        ).scalar_one()
    )


def old_campaign_counts(conn: Connection) -> int:
    sent = ("sent", "delivered", "undelivered")
    return len(
        conn.execute(
            select(
                messages.c.campaign_id,
                func.count(),
                func.sum(case((messages.c.status.in_(sent), 1), else_=0)),
                func.sum(case((messages.c.status == "delivered", 1), else_=0)),
            )
            .where(messages.c.campaign_id.is_not(None))
            .group_by(messages.c.campaign_id)
        ).all()
    )


def old_totals(conn: Connection) -> tuple[int, int]:
    row = conn.execute(select(func.count(func.distinct(consent_events.c.contact_id)), func.count())).one()
    return int(row[0]), int(row[1])


def new_campaign_counts(conn: Connection) -> int:
    from optline.adapters.db.tables import campaign_status_counts as csc

    return len(
        conn.execute(select(csc.c.campaign_id, func.sum(csc.c.messages)).group_by(csc.c.campaign_id)).all()
    )


# ------------------------------------------------------------------------------------------------- history


def history(c: Container, args: argparse.Namespace) -> None:
    with c.db.transaction() as conn:
        program = create_program(conn, c.clock, help_contact="https://acme.example/h", name="p", brand="B")
        s = rows.series(conn, args.contacts)
        conn.execute(
            insert(contacts).from_select(
                ["phone", "number_type", "time_zone_overridden", "created_at", "updated_at"],
                select(
                    literal("+1415") + cast(7_000_000 + s.c.x, String),
                    literal("mobile"),
                    literal(False),
                    literal(NOW - timedelta(days=500), UtcDateTime),
                    literal(NOW - timedelta(days=500), UtcDateTime),
                ),
            )
        )
        first_contact = int(conn.execute(select(func.min(contacts.c.id))).scalar_one())
    per = args.messages // args.campaigns
    for i in range(args.campaigns):  # one statement per campaign, as a campaign is materialised
        at = NOW - timedelta(days=4 * i, hours=3)
        with c.db.transaction() as conn:
            camp = rows.campaign(conn, program, f"c{i}", at)
            s = rows.series(conn, per)
            when = literal(at, UtcDateTime)
            conn.execute(
                insert(messages).from_select(
                    [
                        "program_id",
                        "contact_id",
                        "campaign_id",
                        "kind",
                        "priority",
                        "to_phone",
                        "body",
                        "segments",
                        "status",
                        "idempotency_key",
                        "provider",
                        "attempts",
                        "created_at",
                        "updated_at",
                        "sent_at",
                        "delivered_at",
                    ],
                    select(
                        literal(program["id"]),
                        literal(first_contact) + (s.c.x % args.contacts),
                        literal(camp["id"]),
                        literal("marketing"),
                        literal(1),
                        literal("+14155550000"),
                        literal("hi"),
                        literal(1),
                        case((s.c.x % 50 == 0, "undelivered"), else_="delivered"),
                        literal(f"c{i}-") + cast(s.c.x, String),
                        literal("twilio"),
                        literal(1),
                        when,
                        when,
                        when,
                        when,
                    ),
                )
            )
    chunk = args.events // args.campaigns
    for i in range(args.campaigns):  # the ledger: one chain per call (fake hashes: for plans and timings)
        with c.db.transaction() as conn:
            rows.bulk_history(
                conn, program_id=program["id"], contact_id=first_contact + i,
                at=NOW - timedelta(days=4 * i, hours=2), messages_=0, events=chunk, inbound_=0, digests=0,
                tag=f"e{i}", first_seq=1,
            )  # fmt: skip
    with c.db.transaction() as conn:
        conn.exec_driver_sql("CREATE INDEX bench_old_action_recorded ON consent_events (action, recorded_at)")
        conn.exec_driver_sql("ANALYZE")


# ------------------------------------------------------------------------------ the write side of the change


def _campaign_counting(conn: Connection, on: bool) -> None:
    """Install the scrape-count triggers with (this change) or without (before) campaign_status_counts."""
    if conn.dialect.name == "sqlite":
        for ddl in rollups.SQLITE_DROP[:3]:
            conn.exec_driver_sql(ddl)
        for ddl in rollups.SQLITE_TRIGGERS[:3] if on else []:
            conn.exec_driver_sql(ddl)
        return
    function = rollups._PG_MSG_FUNCTION
    if not on:  # the function as it was: every campaign statement removed
        for rows_ in (
            rollups._pg_camp_rows("new_rows", ""),
            rollups._pg_camp_rows("new_rows", "") + " UNION ALL " + rollups._pg_camp_rows("old_rows", "-"),
            rollups._pg_camp_rows("old_rows", "-"),
        ):
            function = function.replace(rollups._pg_camp_apply(rows_), "")
        function = function.replace("DELETE FROM campaign_status_counts;", "")
        assert "campaign_status_counts" not in function
    conn.exec_driver_sql(function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))


def write_cost(c: Container, n: int, rounds: int, people: int) -> tuple[float, float]:
    """Seconds (median) to materialise a campaign of ``n`` messages and move each to sending, then
    delivered (three statements, as a campaign's life in bulk), with and without the campaign counts,
    alternating; the rows are deleted between rounds (not timed)."""
    with c.db.transaction() as conn:
        program = dict(conn.execute(select(programs).limit(1)).one()._mapping)
        camp = rows.campaign(conn, program, "write-cost", NOW)
        first_contact = int(conn.execute(select(func.min(contacts.c.id))).scalar_one())
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for on in (True, False):
            with c.db.transaction() as conn:
                _campaign_counting(conn, on)
            started = time.perf_counter()
            with c.db.transaction() as conn:
                s = rows.series(conn, n)
                when = literal(NOW, UtcDateTime)
                conn.execute(
                    insert(messages).from_select(
                        [
                            *("program_id", "contact_id", "campaign_id", "kind", "to_phone", "body"),
                            *("status", "idempotency_key", "attempts", "created_at", "updated_at"),
                        ],
                        select(
                            literal(program["id"]),
                            literal(first_contact) + (s.c.x % people),
                            literal(camp["id"]),
                            literal("marketing"),
                            literal("+14155550000"),
                            literal("hi"),
                            literal("queued"),
                            literal(f"w{on}-") + cast(s.c.x, String),
                            literal(0),
                            when,
                            when,
                        ),
                    )
                )
            mine = messages.c.campaign_id == camp["id"]
            with c.db.transaction() as conn:
                conn.execute(update(messages).where(mine).values(status="sending"))
            with c.db.transaction() as conn:
                conn.execute(update(messages).where(mine).values(status="delivered", sent_at=NOW))
            times[on].append(time.perf_counter() - started)
            with c.db.transaction() as conn:
                conn.execute(delete(messages).where(mine))
    with c.db.transaction() as conn:
        _campaign_counting(conn, True)
    return statistics.median(times[True]), statistics.median(times[False])


def interleaved(pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]], rounds: int) -> dict[str, Any]:
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pairs}
    for new, old in pairs.values():  # warm: compile and cache both
        new(), old()
    for _ in range(rounds):
        for name, (new, old) in pairs.items():
            for fn, into in ((new, times[name][0]), (old, times[name][1])):
                started = time.perf_counter()
                fn()
                into.append((time.perf_counter() - started) * 1000)
    return {k: (statistics.median(n), statistics.median(o)) for k, (n, o) in times.items()}


def run(engine: str, args: argparse.Namespace) -> str:
    with fresh_database(engine) as url:
        c = build(Settings(env="test", database_url=url), clock=FrozenClock(NOW))
        try:
            started = time.perf_counter()
            history(c, args)
            loaded = time.perf_counter() - started
            first = NOW.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
                days=30 - 1 + dashboard.ROLLING_DAYS - 1
            )
            today = NOW.date()

            def read(fn: Callable[[Connection], Any]) -> Callable[[], Any]:
                def go() -> Any:
                    with c.db.read() as conn:
                        return fn(conn)

                return go

            # The figures agree before anything is timed.
            with c.db.read() as conn:
                new30 = sum(dashboard.sent_per_day(conn, today - timedelta(days=29)).values())
                assert dashboard.optouts_since(conn, NOW - timedelta(days=30)) == old_optouts_since(
                    conn, NOW - timedelta(days=30)
                )
                assert ledger.totals(conn) == old_totals(conn)
                old30 = old_sent_30d(conn, NOW)
            pairs = {
                "sent in 30 days": (
                    read(lambda conn: dashboard.sent_per_day(conn, today - timedelta(days=29))),
                    read(lambda conn: old_sent_30d(conn, NOW)),
                ),
                "sent per day, trend (36 days)": (
                    read(lambda conn: dashboard.sent_per_day(conn, first.date())),
                    read(lambda conn: old_sent_per_day(conn, first)),
                ),
                "opt-outs in 30 days": (
                    read(lambda conn: dashboard.optouts_since(conn, NOW - timedelta(days=30))),
                    read(lambda conn: old_optouts_since(conn, NOW - timedelta(days=30))),
                ),
                "campaign list counts": (read(new_campaign_counts), read(old_campaign_counts)),
                "checkpoint totals": (read(ledger.totals), read(old_totals)),
            }
            figures = interleaved(pairs, args.rounds)
            with c.db.read() as conn:
                whole = statistics.median(
                    _ms(lambda: dashboard.overview(conn, NOW)) for _ in range(args.rounds)
                )
            with_counts, without = write_cost(c, args.write_rows, args.write_rounds, args.contacts)
        finally:
            c.close()
    lines = [
        f"{engine}: {args.messages:,} messages in {args.campaigns} campaigns + {args.events:,} events, "
        f"loaded in {loaded:.0f} s; sent in 30 days: {new30:,} (kept counts, by UTC day) vs {old30:,} "
        "(by the instant 30 days ago)"
    ]
    for name, (new, old) in figures.items():
        lines.append(f"  {name:<32} now {new:9.2f} ms   before {old:9.2f} ms   {old / new:7.1f}x")
    lines.append(f"  {'overview() as a whole, now':<32}     {whole:9.2f} ms")
    lines.append(
        f"  write side: a campaign of {args.write_rows:,} messages inserted, then sending, then delivered: "
        f"{with_counts:.2f} s with the campaign counts vs {without:.2f} s without = "
        f"{with_counts / without:.2f}x the time"
    )
    return "\n".join(lines)


def _ms(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description="the dashboard's counts on a long history")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write-rows", type=int, default=20_000)
    parser.add_argument("--write-rounds", type=int, default=3)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args, _ = parser.parse_known_args()
    lines = []
    for engine in args.engines.split(","):
        lines.append(run(engine, args))
        print(lines[-1], flush=True)
    print(f"\ndashboard_scale summary (load average {os.getloadavg()[0]:.2f}):", *lines, sep="\n")


if __name__ == "__main__":
    main()
