"""Message counters kept by the database itself: triggers on ``messages`` (installed by migration 0003).

Why triggers: a message's life is written by several code paths (enqueue, the dispatcher, provider status
callbacks, cancellations, the audit's fixes). A trigger keeps ``message_counts`` and
``frequency_exposures`` right for every one of them, in the same transaction, without any of them having
to know analytics exists. The report then reads a table whose size grows with campaigns × days, not with
messages.

What counts:
- *sent*: the message was accepted by a provider — ``sent_at`` is set, or its status is sent, delivered or
  undelivered (a status callback may arrive before the sender records ``sent_at``);
- *delivered*: status ``delivered``;
- the *day* is the UTC date of ``sent_at`` (else ``delivered_at``, else ``created_at``).

Each change subtracts the old row's contribution from its key and adds the new row's to its key, so any
update (even one moving a message to another campaign or day) keeps the sums exact. On PostgreSQL the
triggers are statement-level with transition tables (one grouped upsert per key per statement); SQLite has
only row triggers, and one writer at a time. The fatigue curve's
denominator (``frequency_exposures``) is counted once, when a marketing or transactional message first
counts as sent: its bucket is how many such messages the contact was sent in the 30 days up to it.

``rebuild`` recomputes everything set-based from ``messages``: the backfill for an existing database and
the check that the triggers agree with a direct count.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from optline.adapters.db import rollups
from optline.adapters.db.database import execute_ddl

SENT_STATUSES = ("sent", "delivered", "undelivered")
FATIGUE_KINDS = ("marketing", "transactional")
FREQUENCY_WINDOW_DAYS = 30
FREQUENCY_CAP = 999  # more than this in 30 days lands in one bucket

_STATUSES = ", ".join(f"'{s}'" for s in SENT_STATUSES)
_KINDS = ", ".join(f"'{k}'" for k in FATIGUE_KINDS)


def _sent(r: str) -> str:
    return f"({r}.sent_at IS NOT NULL OR {r}.status IN ({_STATUSES}))"


def _delivered(r: str) -> str:
    return f"({r}.status = 'delivered')"


# ---------------------------------------------------------------------------------------------- SQLite


def _sqlite_day(r: str) -> str:
    return f"date(COALESCE({r}.sent_at, {r}.delivered_at, {r}.created_at))"


def _sqlite_upsert(r: str, sign: str) -> str:
    return f"""
        INSERT INTO message_counts (program_id, campaign_id, kind, day, shard, sent, delivered)
        SELECT {r}.program_id, COALESCE({r}.campaign_id, 0), {r}.kind, {_sqlite_day(r)}, 0,
               {sign}{_sent(r)}, {sign}{_delivered(r)}
        WHERE {_sent(r)} OR {_delivered(r)}
        ON CONFLICT (program_id, campaign_id, kind, day, shard)
        DO UPDATE SET sent = sent + excluded.sent, delivered = delivered + excluded.delivered;"""


def _sqlite_exposure(first_sent: str) -> str:
    t = "COALESCE(NEW.sent_at, NEW.updated_at)"
    return f"""
        INSERT INTO frequency_exposures (program_id, day, messages_30d, shard, sent)
        SELECT NEW.program_id, {_sqlite_day("NEW")}, min({FREQUENCY_CAP}, 1 + (
            SELECT count(*) FROM messages m
            WHERE m.contact_id = NEW.contact_id AND m.id <> NEW.id AND m.kind IN ({_KINDS})
              AND {_sent("m")}
              AND COALESCE(m.sent_at, m.updated_at) <= {t}
              AND COALESCE(m.sent_at, m.updated_at) >= datetime({t}, '-{FREQUENCY_WINDOW_DAYS} days')
              AND m.created_at >= datetime({t}, '-{3 * FREQUENCY_WINDOW_DAYS} days'))), 0, 1
        WHERE NEW.kind IN ({_KINDS}) AND {first_sent}
        ON CONFLICT (program_id, day, messages_30d, shard) DO UPDATE SET sent = sent + 1;"""


def _changed(a: str, b: str) -> str:
    pairs = [
        (_sent(a), _sent(b)),
        (_delivered(a), _delivered(b)),
        (_sqlite_day(a), _sqlite_day(b)),
        (f"{a}.campaign_id", f"{b}.campaign_id"),
        (f"{a}.program_id", f"{b}.program_id"),
        (f"{a}.kind", f"{b}.kind"),
    ]
    return " OR ".join(f"{x} IS NOT {y}" for x, y in pairs)


SQLITE_TRIGGERS = [
    # Only rows that count fire it: a queued row (an audience materialised, a reply enqueued) contributes
    # nothing, and its two statements would each run once per row for nothing.
    f"""CREATE TRIGGER messages_counts_insert AFTER INSERT ON messages
    WHEN {_sent("NEW")} OR {_delivered("NEW")} BEGIN
        {_sqlite_upsert("NEW", "")}
        {_sqlite_exposure(_sent("NEW"))}
    END""",
    f"""CREATE TRIGGER messages_counts_update AFTER UPDATE ON messages WHEN {_changed("OLD", "NEW")} BEGIN
        {_sqlite_upsert("OLD", "-")}
        {_sqlite_upsert("NEW", "")}
        {_sqlite_exposure(f"{_sent('NEW')} AND NOT {_sent('OLD')}")}
    END""",
    f"""CREATE TRIGGER messages_counts_delete AFTER DELETE ON messages BEGIN
        {_sqlite_upsert("OLD", "-")}
    END""",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS messages_counts_insert",
    "DROP TRIGGER IF EXISTS messages_counts_update",
    "DROP TRIGGER IF EXISTS messages_counts_delete",
]

# ------------------------------------------------------------------------------------------ PostgreSQL


def _pg_day(r: str) -> str:
    return f"(COALESCE({r}.sent_at, {r}.delivered_at, {r}.created_at) AT TIME ZONE 'UTC')::date"


def _pg_contributions(table: str, sign: str) -> str:
    return f"""
        SELECT r.program_id, COALESCE(r.campaign_id, 0) AS campaign_id, r.kind, {_pg_day("r")} AS day,
               {sign}{_sent("r")}::int AS sent, {sign}{_delivered("r")}::int AS delivered
        FROM {table} r WHERE {_sent("r")} OR {_delivered("r")}"""


def _pg_apply(contributions: str) -> str:
    return f"""
        INSERT INTO message_counts AS c (program_id, campaign_id, kind, day, shard, sent, delivered)
        SELECT program_id, campaign_id, kind, day, s, sum(sent), sum(delivered)
        FROM ({contributions}) d
        GROUP BY program_id, campaign_id, kind, day
        HAVING sum(sent) <> 0 OR sum(delivered) <> 0
        ORDER BY program_id, campaign_id, kind, day
        ON CONFLICT (program_id, campaign_id, kind, day, shard)
        DO UPDATE SET sent = c.sent + EXCLUDED.sent, delivered = c.delivered + EXCLUDED.delivered;"""


def _pg_exposures(first_sent_rows: str) -> str:
    t = "COALESCE(n.sent_at, n.updated_at)"
    return f"""
        INSERT INTO frequency_exposures AS f (program_id, day, messages_30d, shard, sent)
        SELECT program_id, day, messages_30d, s, count(*) FROM (
            SELECT n.program_id, {_pg_day("n")} AS day, LEAST({FREQUENCY_CAP}, 1 + (
                SELECT count(*) FROM messages m
                WHERE m.contact_id = n.contact_id AND m.id <> n.id AND m.kind IN ({_KINDS})
                  AND {_sent("m")}
                  AND COALESCE(m.sent_at, m.updated_at) <= {t}
                  AND COALESCE(m.sent_at, m.updated_at) >= {t} - interval '{FREQUENCY_WINDOW_DAYS} days'
                  AND m.created_at >= {t} - interval '{3 * FREQUENCY_WINDOW_DAYS} days')) AS messages_30d
            FROM {first_sent_rows}
        ) x
        GROUP BY program_id, day, messages_30d
        ORDER BY program_id, day, messages_30d
        ON CONFLICT (program_id, day, messages_30d, shard) DO UPDATE SET sent = f.sent + EXCLUDED.sent;"""


# Statement-level triggers with transition tables: one aggregate upsert per key per statement, so a bulk
# statement (materialising a campaign, a dispatcher's batch) costs one small GROUP BY, and no counter row
# is updated thousands of times inside one transaction (PostgreSQL keeps every version of a row updated
# repeatedly in one transaction, which would make a bulk statement quadratic).
_PG_FUNCTION = f"""
CREATE FUNCTION optline_message_counts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- The writing backend's own counter rows: concurrent dispatchers never wait on each other here.
    s int := pg_backend_pid();
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_pg_apply(_pg_contributions("new_rows", ""))}
        {_pg_exposures(f"new_rows n WHERE n.kind IN ({_KINDS}) AND {_sent('n')}")}
    ELSIF TG_OP = 'UPDATE' THEN
        {_pg_apply(_pg_contributions("new_rows", "") + " UNION ALL " + _pg_contributions("old_rows", "-"))}
        {_pg_exposures(f"new_rows n JOIN old_rows o ON o.id = n.id WHERE n.kind IN ({_KINDS}) AND {_sent('n')} AND NOT {_sent('o')}")}
    ELSIF TG_OP = 'DELETE' THEN
        {_pg_apply(_pg_contributions("old_rows", "-"))}
    ELSE  -- TRUNCATE fires no row or DELETE trigger; it holds an exclusive lock, so nobody is counting now
        DELETE FROM message_counts;
        DELETE FROM frequency_exposures;
    END IF;
    RETURN NULL;
END $$;
"""

POSTGRES_TRIGGERS = [
    _PG_FUNCTION,
    "CREATE TRIGGER messages_counts_insert AFTER INSERT ON messages REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION optline_message_counts()",
    "CREATE TRIGGER messages_counts_update AFTER UPDATE ON messages "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION optline_message_counts()",
    "CREATE TRIGGER messages_counts_delete AFTER DELETE ON messages REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION optline_message_counts()",
    # Migration 0006: a TRUNCATE of the outbox empties the counts too (before, they kept the old sums).
    "CREATE TRIGGER messages_counts_truncate AFTER TRUNCATE ON messages "
    "FOR EACH STATEMENT EXECUTE FUNCTION optline_message_counts()",
]
POSTGRES_DROP = [
    "DROP TRIGGER IF EXISTS messages_counts_insert ON messages",
    "DROP TRIGGER IF EXISTS messages_counts_update ON messages",
    "DROP TRIGGER IF EXISTS messages_counts_delete ON messages",
    "DROP TRIGGER IF EXISTS messages_counts_truncate ON messages",
    "DROP FUNCTION IF EXISTS optline_message_counts()",
]


def install(conn: Connection) -> None:
    execute_ddl(conn, postgresql=POSTGRES_TRIGGERS, sqlite=SQLITE_TRIGGERS)


def uninstall(conn: Connection) -> None:
    execute_ddl(conn, postgresql=POSTGRES_DROP, sqlite=SQLITE_DROP)


# --------------------------------------------------------------------------------------------- rebuild


def rebuild(conn: Connection) -> None:
    """Recompute both counter tables from ``messages`` in two set-based statements each.

    The 30-day ordinal is a window function over each contact's sent messages (a RANGE frame over time),
    the same definition the trigger applies one message at a time.
    """
    pg = conn.dialect.name == "postgresql"
    day = _pg_day("m") if pg else _sqlite_day("m")
    sent, delivered = _sent("m"), _delivered("m")
    conn.execute(text("DELETE FROM message_counts"))
    conn.execute(text("DELETE FROM frequency_exposures"))
    conn.execute(
        text(
            f"""
            INSERT INTO message_counts (program_id, campaign_id, kind, day, shard, sent, delivered)
            SELECT program_id, COALESCE(campaign_id, 0), kind, {day}, 0,
                   sum(CASE WHEN {sent} THEN 1 ELSE 0 END), sum(CASE WHEN {delivered} THEN 1 ELSE 0 END)
            FROM messages m WHERE {sent} OR {delivered}
            GROUP BY program_id, COALESCE(campaign_id, 0), kind, {day}
            """
        )
    )
    if pg:
        order = "COALESCE(sent_at, updated_at)"
        frame = f"RANGE BETWEEN INTERVAL '{FREQUENCY_WINDOW_DAYS} days' PRECEDING AND CURRENT ROW"
        cap = "LEAST"
    else:
        order = "julianday(COALESCE(sent_at, updated_at))"
        frame = f"RANGE BETWEEN {FREQUENCY_WINDOW_DAYS} PRECEDING AND CURRENT ROW"
        cap = "min"
    conn.execute(
        text(
            f"""
            INSERT INTO frequency_exposures (program_id, day, messages_30d, shard, sent)
            SELECT program_id, day, {cap}(n, {FREQUENCY_CAP}), 0, count(*)
            FROM (SELECT program_id, {day} AS day,
                         count(*) OVER (PARTITION BY contact_id ORDER BY {order} {frame}) AS n
                  FROM messages m WHERE kind IN ({_KINDS}) AND {sent}) s
            GROUP BY program_id, day, {cap}(n, {FREQUENCY_CAP})
            """
        )
    )


def kept(conn: Connection) -> dict[str, dict[Any, int]]:
    """What the triggers kept, per table, summed over shards (``optline counts rebuild`` compares it)."""
    return {
        "message_counts": rollups.summed(
            conn, "message_counts", ("program_id", "campaign_id", "kind", "day"), ("sent", "delivered")
        ),
        "frequency_exposures": rollups.summed(
            conn, "frequency_exposures", ("program_id", "day", "messages_30d"), ("sent",)
        ),
    }


def compact(conn: Connection) -> int:
    """Fold the per-backend shards of settled days (older than two days) into shard 0 (PostgreSQL), for
    message counts and exposure buckets alike.

    Keeps ``message_counts`` at campaigns × days rows as connections come and go. Rows a writer holds
    right now are skipped (SKIP LOCKED), so compaction never waits on a dispatcher nor makes one deadlock.
    Returns the number of shard rows folded.
    """
    if conn.dialect.name != "postgresql":
        return 0
    folded = conn.execute(
        text(
            """
            WITH picked AS (
                SELECT program_id, campaign_id, kind, day, shard FROM message_counts
                WHERE shard <> 0 AND day < (now() AT TIME ZONE 'UTC')::date - 2
                FOR UPDATE SKIP LOCKED
            ), gone AS (
                DELETE FROM message_counts c USING picked p
                WHERE (c.program_id, c.campaign_id, c.kind, c.day, c.shard)
                    = (p.program_id, p.campaign_id, p.kind, p.day, p.shard)
                RETURNING c.program_id, c.campaign_id, c.kind, c.day, c.sent, c.delivered
            ), summed AS (
                SELECT program_id, campaign_id, kind, day, sum(sent) AS sent, sum(delivered) AS delivered,
                       count(*) AS n
                FROM gone GROUP BY program_id, campaign_id, kind, day
            ), ins AS (
                INSERT INTO message_counts AS c (program_id, campaign_id, kind, day, shard, sent, delivered)
                SELECT program_id, campaign_id, kind, day, 0, sent, delivered FROM summed
                ON CONFLICT (program_id, campaign_id, kind, day, shard)
                DO UPDATE SET sent = c.sent + EXCLUDED.sent, delivered = c.delivered + EXCLUDED.delivered
            )
            SELECT COALESCE(sum(n), 0) FROM summed
            """
        )
    ).scalar_one()
    folded += conn.execute(
        text(
            """
            WITH picked AS (
                SELECT program_id, day, messages_30d, shard FROM frequency_exposures
                WHERE shard <> 0 AND day < (now() AT TIME ZONE 'UTC')::date - 2
                FOR UPDATE SKIP LOCKED
            ), gone AS (
                DELETE FROM frequency_exposures f USING picked p
                WHERE (f.program_id, f.day, f.messages_30d, f.shard) = (p.program_id, p.day, p.messages_30d, p.shard)
                RETURNING f.program_id, f.day, f.messages_30d, f.sent
            ), summed AS (
                SELECT program_id, day, messages_30d, sum(sent) AS sent, count(*) AS n
                FROM gone GROUP BY program_id, day, messages_30d
            ), ins AS (
                INSERT INTO frequency_exposures AS f (program_id, day, messages_30d, shard, sent)
                SELECT program_id, day, messages_30d, 0, sent FROM summed
                ON CONFLICT (program_id, day, messages_30d, shard) DO UPDATE SET sent = f.sent + EXCLUDED.sent
            )
            SELECT COALESCE(sum(n), 0) FROM summed
            """
        )
    ).scalar_one()
    return int(folded)
