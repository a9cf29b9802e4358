"""What one /metrics scrape costs the database, on an empty outbox and on a large one (issue 17).

For each engine: the collector's queries (``DatabaseCollector``) timed on a database with only a few live
rows (two queued messages, a reply waiting for review), then after
``--messages`` delivered messages and ``--events`` ledger events are inserted in bulk, beside the baseline in the same run: the queries the collector ran before
the counts tables (a GROUP BY over the whole outbox, a count of every queued row per lane, a GROUP BY over
every opt-out, max() over digests without an index). Interleaved rounds, median.

The write side of the same change: the bulk INSERT of half the messages with the counts triggers
uninstalled, then of the other half with them (a campaign's materialisation pays this), as a ratio.

    python -m bench.metrics_scrape [--messages 1000000] [--events 100000] [--rounds 7]
                                   [--engines sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, select, update
from tests.support import outbox_rows as rows

from bench.common import fresh_database
from optline.adapters.db import contacts, rollups
from optline.adapters.db.tables import consent_events, inbound_messages, ledger_digests, messages
from optline.adapters.metrics import DatabaseCollector
from optline.bootstrap import Container, build
from optline.config import Settings
from optline.domain.phones import parse_phone
from optline.services.programs import create_program

T = datetime(2026, 1, 5, tzinfo=UTC)


def old_scrape(conn: Connection) -> int:
    """The collector's queries before the counts tables (commit 069abfd), results discarded."""
    n = len(
        conn.execute(
            select(messages.c.status, messages.c.provider, func.count()).group_by(
                messages.c.status, messages.c.provider
            )
        ).all()
    )
    n += len(
        conn.execute(
            select(messages.c.priority, func.count(), func.min(messages.c.created_at))
            .where(messages.c.status == "queued")
            .group_by(messages.c.priority)
        ).all()
    )
    n += len(
        conn.execute(
            select(consent_events.c.channel, func.count())
            .where(consent_events.c.action == "opt_out")
            .group_by(consent_events.c.channel)
        ).all()
    )
    conn.execute(
        select(func.count()).where(
            and_(inbound_messages.c.review.is_(True), inbound_messages.c.review_decided_at.is_(None))
        )
    ).scalar_one()
    conn.execute(select(func.max(ledger_digests.c.created_at))).scalar()
    return n


def median_ms(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def insert_history(c: Container, program_id: int, contact_id: int, n: int, events: int, tag: str) -> float:
    started = time.perf_counter()
    with c.db.transaction() as conn:
        rows.bulk_history(
            conn, program_id=program_id, contact_id=contact_id, at=T, messages_=n, events=events,
            inbound_=events, digests=events // 10, tag=tag,
        )  # fmt: skip
    return time.perf_counter() - started


def run(engine: str, args: argparse.Namespace) -> str:
    with fresh_database(engine) as url:
        c = build(Settings(env="test", database_url=url))
        try:
            collector = DatabaseCollector(c.db, lambda: T + timedelta(days=400))

            def new() -> None:
                list(collector.collect())

            def old() -> None:
                with c.db.read() as conn:
                    old_scrape(conn)

            with c.db.transaction() as conn:
                program = create_program(
                    conn, c.clock, help_contact="https://acme.example/h", name="p", brand="B"
                )
                person = contacts.get_or_create(conn, parse_phone("+14155550001"), T)[0]
                # The live rows, the same in both measurements: queued in each lane, a reply to review.
                live = contacts.get_or_create(conn, parse_phone("+14155550002"), T)[0]
                for lane in (0, 1):
                    mid = rows.message(
                        conn,
                        program=program,
                        contact=live,
                        at=T + timedelta(days=300),
                        status="queued",
                        kind="help",
                    )
                    conn.execute(update(messages).where(messages.c.id == mid).values(priority=lane))
                rows.inbound(conn, contact=live, program=program, body="maybe", at=T, review=True)
                rollups.uninstall(conn)
            new(), old()  # the first scrape compiles and caches the statements
            empty_new, empty_old = median_ms(new, args.rounds), median_ms(old, args.rounds)
            half = args.messages // 2
            without = insert_history(c, program["id"], person["id"], half, args.events // 2, "a")
            with c.db.transaction() as conn:
                rollups.install(conn)
                rollups.rebuild(conn)
            with c.db.transaction() as conn:
                other = contacts.get_or_create(conn, parse_phone("+14155550003"), T)[0]
            with_triggers = insert_history(
                c, program["id"], other["id"], args.messages - half, args.events - args.events // 2, "b"
            )
            with c.db.transaction() as conn:
                conn.exec_driver_sql("ANALYZE")
            new(), old()  # warm the caches for both
            news, olds = [], []
            for _ in range(args.rounds):  # interleaved: both see the same load
                news.append(median_ms(new, 1))
                olds.append(median_ms(old, 1))
            big_new, big_old = statistics.median(news), statistics.median(olds)
        finally:
            c.close()
    rate = lambda s, n: n / s if s else float("inf")  # noqa: E731
    return (
        f"{engine:10s} scrape, no history: collector {empty_new:.2f} ms vs old queries {empty_old:.2f} ms\n"
        f"{engine:10s} scrape, {args.messages:,} messages + {args.events:,} events: collector {big_new:.2f} ms "
        f"vs old queries {big_old:.1f} ms = {big_old / big_new:.0f}x cheaper; collector with / without history = "
        f"{big_new / empty_new:.2f}\n"
        f"{engine:10s} bulk insert of history: {rate(with_triggers, args.messages - half):,.0f} rows/s with the "
        f"counts triggers vs {rate(without, half):,.0f} rows/s without = "
        f"{(with_triggers / (args.messages - half)) / (without / half):.2f}x the time per row"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="the cost of one /metrics scrape")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args, _ = parser.parse_known_args()
    lines = []
    for engine in args.engines.split(","):
        lines.append(run(engine, args))
        print(lines[-1], flush=True)
    print(f"\nmetrics_scrape summary (load average {os.getloadavg()[0]:.2f}):", *lines, sep="\n")


if __name__ == "__main__":
    main()
