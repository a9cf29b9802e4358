"""The opt-out report over 10,000,000 messages on PostgreSQL, beside a naive GROUP BY over the raw messages.

Run: ``python -m bench report_10m`` or ``python bench/report_10m.py`` (``OPTLINE_BENCH_POSTGRES_URL``, default
``postgresql+psycopg://root@127.0.0.1:5432/postgres``, names the server; a dedicated database is created
and dropped). ``--messages N`` for a smaller run.

What it does:
1. migrates a fresh database; loads 1,000,000 contacts and N messages (200 campaigns over 90 days, ten
   messages per contact, realistic status mix) with ``INSERT … SELECT generate_series`` in 1M-row chunks.
   The counter trigger is disabled during the bulk load and the counters are then backfilled set-based
   (exactly what migration 0003 does for a database that had messages before the trigger existed);
2. appends 20,000 opt-out events to the hash-chained ledger and times the incremental rollup;
3. times ``analytics.report`` (median of 5) beside ``SELECT campaign_id, count(*) … GROUP BY campaign_id``
   over ``messages`` (median of 3, after a warm-up) and prints the ratio, and checks both agree;
4. measures what the trigger costs a writer: 50,000 message inserts + status updates with and without it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from optline.adapters.clock import SystemClock
from optline.adapters.db import counters, ledger
from optline.adapters.db.database import make_engine, migrate
from optline.domain import ledger as chain
from optline.domain.consent import Action, Channel
from optline.services import analytics

DEFAULT_URL = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
T0 = datetime(2026, 7, 1, tzinfo=UTC)
CONTACTS = 1_000_000
CAMPAIGNS = 200
PROGRAMS = 3
OPTOUTS = 20_000
CHUNK = 1_000_000


def timed(label: str, fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args)
    elapsed = time.perf_counter() - start
    print(f"  {label}: {elapsed:.2f} s", flush=True)
    return result, elapsed


MESSAGES_SQL = """
INSERT INTO messages (campaign_id, program_id, contact_id, kind, to_phone, body, segments, status,
                      idempotency_key, attempts, created_at, sent_at, delivered_at, updated_at)
SELECT c + 1, (c % :programs) + 1, contact, 'marketing', '+1' || (2000000000 + contact)::text,
       'Deal of the day. Reply STOP to opt out', 1,
       CASE WHEN h < 93 THEN 'delivered' WHEN h < 97 THEN 'sent' WHEN h < 99 THEN 'undelivered' ELSE 'failed' END,
       :prefix || i, 1, created,
       CASE WHEN h < 99 THEN created + interval '30 seconds' END,
       CASE WHEN h < 93 THEN created + interval '35 seconds' END,
       created + interval '35 seconds'
FROM (
    SELECT i, c, k, (k * 20 + c % 20) % :contacts + 1 AS contact, (k * 7 + c * 13) % 100 AS h,
           :t0 + c * interval '10.8 hours' + (k % 3600) * interval '1 second' AS created
    FROM (SELECT i, i % :campaigns AS c, i / :campaigns AS k FROM generate_series(:lo, :hi - 1) AS i) s
) m
"""


def load(conn: Connection, n: int) -> None:
    now = datetime.now(UTC)
    conn.execute(text("SET synchronous_commit = off"))
    for p in range(PROGRAMS):
        conn.execute(
            text(
                "INSERT INTO programs (id, name, brand, sender_numbers, help_text, frequency_text, optout_scope,"
                " double_opt_in, join_keywords, settings, created_at) VALUES (:id, :name, 'Bench', '[]', 'help',"
                " 'weekly', 'program', false, '[]', '{}', :now)"
            ),
            {"id": p + 1, "name": f"program-{p + 1}", "now": now},
        )
    conn.execute(
        text(
            "INSERT INTO campaigns (id, program_id, name, template, message_type, tag, audience_filter, status,"
            " created_at) SELECT c + 1, (c % :programs) + 1, 'campaign-' || (c + 1), 'hi', "
            " CASE WHEN c % 4 = 0 THEN 'transactional' ELSE 'marketing' END, 'tag-' || (c % 7), '{}', 'done',"
            " :t0 FROM generate_series(0, :campaigns - 1) c"
        ),
        {"programs": PROGRAMS, "campaigns": CAMPAIGNS, "t0": T0},
    )
    conn.execute(
        text(
            "INSERT INTO contacts (id, phone, region, number_type, time_zone_overridden, attributes, created_at,"
            " updated_at) SELECT i, '+1' || (2000000000 + i)::text, 'US', 'fixed_line_or_mobile', false, '{}',"
            " :t0, :t0 FROM generate_series(1, :n) i"
        ),
        {"n": CONTACTS, "t0": T0},
    )
    for seq in ("programs_id_seq", "campaigns_id_seq", "contacts_id_seq"):
        conn.execute(text(f"SELECT setval('{seq}', (SELECT max(id) FROM {seq.removesuffix('_id_seq')}))"))
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        start = time.perf_counter()
        conn.execute(
            text(MESSAGES_SQL),
            {
                "programs": PROGRAMS,
                "contacts": CONTACTS,
                "campaigns": CAMPAIGNS,
                "t0": T0,
                "lo": lo,
                "hi": hi,
                "prefix": "bench-",
            },
        )
        conn.commit()
        print(f"    messages {hi:>11,} ({time.perf_counter() - start:.1f} s)", flush=True)


TRIGGERS = ("messages_counts_insert", "messages_counts_update", "messages_counts_delete")


def set_triggers(conn: Connection, enabled: bool) -> None:
    for name in TRIGGERS:
        conn.execute(text(f"ALTER TABLE messages {'ENABLE' if enabled else 'DISABLE'} TRIGGER {name}"))


COUNTS = (
    "SELECT program_id, campaign_id, kind, day, sum(sent), sum(delivered) FROM message_counts"
    " GROUP BY 1, 2, 3, 4 HAVING sum(sent) <> 0 OR sum(delivered) <> 0 ORDER BY 1, 2, 3, 4"
)
EXPOSURES = "SELECT program_id, messages_30d, sum(sent) FROM frequency_exposures GROUP BY 1, 2 ORDER BY 1, 2"


def add_optouts(conn: Connection) -> None:
    """20,000 program-scoped opt-outs, hash-chained like ``consent.record`` writes them."""
    now = datetime.now(UTC)
    events = []
    for j in range(OPTOUTS):
        contact = 1 + j * (CONTACTS // OPTOUTS)
        r = (contact - 1) % 20
        c = r + 20 * (j % 10)  # one of the campaigns this contact received
        sent = T0 + timedelta(hours=10.8 * c, seconds=((contact - 1) // 20) % 3600)
        occurred = sent + timedelta(days=(j % 9) + 0.1)  # 1 in 9 falls outside the 7-day window
        channel = [Channel.SMS_KEYWORD, Channel.SMS_TEXT, Channel.WEB, Channel.PROVIDER][j % 4]
        events.append(
            ledger.build_event(
                contact_id=contact,
                seq=1,
                prev_hash=chain.GENESIS,
                program_id=(c % PROGRAMS) + 1,
                brand="Bench",
                action=Action.OPT_OUT,
                channel=channel,
                evidence={"message_text": "STOP"},
                occurred_at=occurred,
                recorded_at=now,
            )
        )
    for i in range(0, len(events), 5000):
        ledger.insert_events(conn, events[i : i + 5000])
    conn.commit()


NAIVE = (
    "SELECT campaign_id, count(*) FILTER (WHERE sent_at IS NOT NULL OR status IN ('sent','delivered','undelivered')),"
    " count(*) FILTER (WHERE status = 'delivered') FROM messages GROUP BY campaign_id"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000_000)
    args, _ = parser.parse_known_args()  # ``python -m bench report_10m`` passes benchmark names
    server = make_url(os.environ.get("OPTLINE_BENCH_POSTGRES_URL", DEFAULT_URL))
    name = f"optline_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(server.set(database=name).render_as_string(hide_password=False))
    clock = SystemClock()
    try:
        print(f"report_10m: {args.messages:,} messages in PostgreSQL database {name}", flush=True)
        migrate(engine)
        with engine.connect() as conn:
            _, t_load = timed("load (the counter triggers on)", load, conn, args.messages)
            by_trigger = (conn.execute(text(COUNTS)).all(), conn.execute(text(EXPOSURES)).all())
            conn.execute(text("SET work_mem = '256MB'"))
            _, t_backfill = timed(
                "counter rebuild (set-based, as migration 0003 backfills)", counters.rebuild, conn
            )
            conn.commit()
            rebuilt = (conn.execute(text(COUNTS)).all(), conn.execute(text(EXPOSURES)).all())
            print(
                f"  counters kept by the triggers equal the rebuild: {'yes' if by_trigger == rebuilt else 'NO'}"
            )
            conn.execute(text("ANALYZE"))
            conn.commit()
            timed("append 20,000 opt-outs to the ledger", add_optouts, conn)
        with engine.begin() as conn:
            attributed, t_rollup = timed(
                "incremental opt-out rollup (20,000 events)", analytics.refresh, conn, clock
            )
        with engine.connect() as conn:
            sizes = conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM message_counts), (SELECT count(*) FROM optout_counts),"
                    " (SELECT count(*) FROM frequency_exposures)"
                )
            ).one()
        print(
            f"  aggregate rows read by the report: message_counts {sizes[0]:,}, optout_counts {sizes[1]:,},"
            f" frequency_exposures {sizes[2]:,}"
        )

        report_times = []
        for _ in range(5):
            with engine.begin() as conn:
                start = time.perf_counter()
                rep = analytics.report(conn, clock)
                report_times.append(time.perf_counter() - start)
        naive_times = []
        with engine.connect() as conn:
            naive = conn.execute(text(NAIVE)).all()  # warm-up: the naive query gets a warm cache too
            for _ in range(3):
                start = time.perf_counter()
                naive = conn.execute(text(NAIVE)).all()
                naive_times.append(time.perf_counter() - start)
        t_report, t_naive = statistics.median(report_times), statistics.median(naive_times)
        direct = {r[0]: (r[1], r[2]) for r in naive if r[0] is not None and (r[1] or r[2])}
        mismatches = [
            (c.campaign_id, (c.sent, c.delivered), direct.get(c.campaign_id))
            for c in rep.campaigns
            if direct.get(c.campaign_id) != (c.sent, c.delivered)
        ]
        agree = not mismatches and len(rep.campaigns) == len(direct)
        if not agree:
            print(
                f"  mismatches (campaign, report, naive): {mismatches[:5]}; {len(rep.campaigns)} vs {len(direct)}"
            )
        print(
            f"  report: {len(rep.campaigns)} campaigns, {rep.totals.sent:,} sent, {rep.totals.optouts:,} opt-outs"
            f" ({rep.attributed:,} attributed), {sum(c.flagged for c in rep.campaigns)} flagged;"
            f" per-campaign counts agree with the naive query: {'yes' if agree else 'NO'}"
        )

        # What the trigger costs a writer: insert + two status updates per message, with and without it.
        queued_sql = (
            MESSAGES_SQL.replace(
                "CASE WHEN h < 93 THEN 'delivered' WHEN h < 97 THEN 'sent' WHEN h < 99 THEN 'undelivered' "
                "ELSE 'failed' END",
                "'queued'",
            )
            .replace("CASE WHEN h < 99 THEN created + interval '30 seconds' END", "NULL")
            .replace("CASE WHEN h < 93 THEN created + interval '35 seconds' END", "NULL")
            + " RETURNING id"
        )

        def write(n: int, prefix: str, with_trigger: bool) -> float:
            """Materialise n queued messages in one statement, then mark them sent and delivered in
            transactions of 100 (a dispatcher's batch, a burst of status callbacks)."""
            with engine.begin() as conn:
                set_triggers(conn, with_trigger)
            start = time.perf_counter()
            with engine.begin() as conn:
                ids = (
                    conn.execute(
                        text(queued_sql),
                        {
                            "programs": PROGRAMS,
                            "contacts": CONTACTS,
                            "campaigns": CAMPAIGNS,
                            "t0": T0 + timedelta(days=95),
                            "lo": 0,
                            "hi": n,
                            "prefix": prefix,
                        },
                    )
                    .scalars()
                    .all()
                )
            for step in (
                "status = 'sent', sent_at = created_at",
                "status = 'delivered', delivered_at = created_at",
            ):
                for i in range(0, len(ids), 100):
                    with engine.begin() as conn:
                        conn.execute(
                            text(f"UPDATE messages SET {step} WHERE id = ANY(:ids)"),
                            {"ids": ids[i : i + 100]},
                        )
            elapsed = time.perf_counter() - start
            with engine.begin() as conn:
                set_triggers(conn, True)
            return elapsed

        n_write = 50_000
        t_with = write(n_write, "with-", True)
        t_without = write(n_write, "without-", False)

        print()
        print(f"RESULT report over {args.messages:,} messages: {t_report * 1000:.1f} ms (median of 5)")
        print(f"RESULT naive GROUP BY over messages:        {t_naive * 1000:.1f} ms (median of 3, warm)")
        print(f"RESULT ratio naive / report: {t_naive / t_report:,.0f}x")
        print(
            f"RESULT incremental rollup: {attributed:,} opt-outs in {t_rollup:.2f} s"
            f" ({t_rollup / max(attributed, 1) * 1e6:.0f} us per opt-out)"
        )
        print(
            f"RESULT writer cost (insert + sent + delivered) of {n_write:,} messages: {t_with:.2f} s with the"
            f" trigger, {t_without:.2f} s without ({t_with / t_without:.2f}x)"
        )
        print(f"(load {t_load:.0f} s, one-off counter backfill {t_backfill:.0f} s)")
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
