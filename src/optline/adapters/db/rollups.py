"""Counts that /metrics and the dashboard read, kept by the database itself (migrations 0005 and 0006).

``message_status_counts`` holds the number of messages per (status, provider, lane),
``consent_event_counts`` the number of ledger events per (action, channel) and how many of them began a
chain (a checkpoint's totals), ``campaign_status_counts`` the number of messages per (campaign, status)
(the dashboard's campaign list). Without them every scrape grouped the whole outbox and every opt-out ever
recorded, and every page load every campaign message: a cost growing with history, paid every 15 s by
every Prometheus that scrapes.

Why triggers (like ``counters.py``): statuses are written by many code paths (enqueue, a campaign's
INSERT … SELECT, the claim, hand-over, results, receipts, cancellations, the audit's fixes, tests that
insert rows directly). A trigger keeps the counts exact for every one of them, in the same transaction,
and no code path has to know the counts exist.

- SQLite: row triggers (the only kind); ``UPDATE OF status, provider, priority`` with a ``WHEN`` that
  skips updates that change none of them, so a lease or a provider id costs nothing here. One writer at a
  time, so one row per key (shard 0).
- PostgreSQL: statement-level triggers with transition tables, one grouped upsert per statement (a
  campaign of a million rows costs one small GROUP BY). Each backend writes rows of its own shard (its
  pid): four workers moving messages between the same statuses never wait on one counter row, and cannot
  deadlock on them. ``compact`` folds the shards into shard 0 (the worker's housekeeping), which keeps
  the table at statuses × providers × lanes × (live connections) rows.

``rebuild`` recomputes both from the base tables (the backfill, and the check that the triggers agree).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from optline.adapters.db.database import execute_ddl

_MSG_KEY = "status, provider, priority, shard"
_EVT_KEY = "action, channel, shard"
_CAMP_KEY = "campaign_id, status, shard"

# ---------------------------------------------------------------------------------------------- SQLite


def _sqlite_msg(r: str, delta: str) -> str:
    return f"""
        INSERT INTO message_status_counts (status, provider, priority, shard, messages)
        VALUES ({r}.status, COALESCE({r}.provider, ''), {r}.priority, 0, {delta})
        ON CONFLICT ({_MSG_KEY}) DO UPDATE SET messages = messages + excluded.messages;"""


def _sqlite_camp(r: str, delta: str) -> str:
    # Messages outside a campaign (replies, confirmations) are not counted here.
    return f"""
        INSERT INTO campaign_status_counts (campaign_id, status, shard, messages)
        SELECT {r}.campaign_id, {r}.status, 0, {delta} WHERE {r}.campaign_id IS NOT NULL
        ON CONFLICT ({_CAMP_KEY}) DO UPDATE SET messages = messages + excluded.messages;"""


SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER campaign_status_counts_insert AFTER INSERT ON messages
    WHEN NEW.campaign_id IS NOT NULL BEGIN
        {_sqlite_camp("NEW", "1")}
    END""",
    f"""CREATE TRIGGER campaign_status_counts_update AFTER UPDATE OF status, campaign_id ON messages
    WHEN OLD.status IS NOT NEW.status OR OLD.campaign_id IS NOT NEW.campaign_id
    BEGIN
        {_sqlite_camp("OLD", "-1")}
        {_sqlite_camp("NEW", "1")}
    END""",
    f"""CREATE TRIGGER campaign_status_counts_delete AFTER DELETE ON messages
    WHEN OLD.campaign_id IS NOT NULL BEGIN
        {_sqlite_camp("OLD", "-1")}
    END""",
    f"""CREATE TRIGGER messages_status_counts_insert AFTER INSERT ON messages BEGIN
        {_sqlite_msg("NEW", "1")}
    END""",
    f"""CREATE TRIGGER messages_status_counts_update AFTER UPDATE OF status, provider, priority ON messages
    WHEN OLD.status IS NOT NEW.status OR OLD.provider IS NOT NEW.provider OR OLD.priority IS NOT NEW.priority
    BEGIN
        {_sqlite_msg("OLD", "-1")}
        {_sqlite_msg("NEW", "1")}
    END""",
    f"""CREATE TRIGGER messages_status_counts_delete AFTER DELETE ON messages BEGIN
        {_sqlite_msg("OLD", "-1")}
    END""",
    # Insert only: the ledger refuses UPDATE and DELETE (migration 0002).
    f"""CREATE TRIGGER consent_event_counts_insert AFTER INSERT ON consent_events BEGIN
        INSERT INTO consent_event_counts (action, channel, shard, events, chains)
        VALUES (NEW.action, NEW.channel, 0, 1, NEW.seq = 1)
        ON CONFLICT ({_EVT_KEY}) DO UPDATE SET events = events + 1, chains = chains + excluded.chains;
    END""",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS campaign_status_counts_insert",
    "DROP TRIGGER IF EXISTS campaign_status_counts_update",
    "DROP TRIGGER IF EXISTS campaign_status_counts_delete",
    "DROP TRIGGER IF EXISTS messages_status_counts_insert",
    "DROP TRIGGER IF EXISTS messages_status_counts_update",
    "DROP TRIGGER IF EXISTS messages_status_counts_delete",
    "DROP TRIGGER IF EXISTS consent_event_counts_insert",
]

# ------------------------------------------------------------------------------------------ PostgreSQL


def _pg_msg_rows(table: str, sign: str) -> str:
    return f"SELECT status, COALESCE(provider, '') AS provider, priority, {sign}1 AS n FROM {table}"


def _pg_msg_apply(rows: str) -> str:
    # ORDER BY: the rows of one statement are locked in one order (the shard is this backend's own, but
    # ``compact`` may hold one of them for a moment).
    return f"""
        INSERT INTO message_status_counts AS c (status, provider, priority, shard, messages)
        SELECT status, provider, priority, s, sum(n) FROM ({rows}) d
        GROUP BY status, provider, priority
        HAVING sum(n) <> 0
        ORDER BY status, provider, priority
        ON CONFLICT ({_MSG_KEY}) DO UPDATE SET messages = c.messages + EXCLUDED.messages;"""


def _pg_camp_rows(table: str, sign: str) -> str:
    return f"SELECT campaign_id, status, {sign}1 AS n FROM {table} WHERE campaign_id IS NOT NULL"


def _pg_camp_apply(rows: str) -> str:
    return f"""
        INSERT INTO campaign_status_counts AS c (campaign_id, status, shard, messages)
        SELECT campaign_id, status, s, sum(n) FROM ({rows}) d
        GROUP BY campaign_id, status
        HAVING sum(n) <> 0
        ORDER BY campaign_id, status
        ON CONFLICT ({_CAMP_KEY}) DO UPDATE SET messages = c.messages + EXCLUDED.messages;"""


_PG_MSG_FUNCTION = f"""
CREATE FUNCTION optline_message_status_counts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s int := pg_backend_pid();  -- this backend's own rows: concurrent writers never wait on each other
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_pg_msg_apply(_pg_msg_rows("new_rows", ""))}
        {_pg_camp_apply(_pg_camp_rows("new_rows", ""))}
    ELSIF TG_OP = 'UPDATE' THEN
        {_pg_msg_apply(_pg_msg_rows("new_rows", "") + " UNION ALL " + _pg_msg_rows("old_rows", "-"))}
        {_pg_camp_apply(_pg_camp_rows("new_rows", "") + " UNION ALL " + _pg_camp_rows("old_rows", "-"))}
    ELSIF TG_OP = 'DELETE' THEN
        {_pg_msg_apply(_pg_msg_rows("old_rows", "-"))}
        {_pg_camp_apply(_pg_camp_rows("old_rows", "-"))}
    ELSE  -- TRUNCATE (no row triggers fire): it holds an exclusive lock, so no writer is counting now
        DELETE FROM message_status_counts;
        DELETE FROM campaign_status_counts;
    END IF;
    RETURN NULL;
END $$;
"""

_PG_EVT_FUNCTION = f"""
CREATE FUNCTION optline_consent_event_counts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s int := pg_backend_pid();
BEGIN
    INSERT INTO consent_event_counts AS c (action, channel, shard, events, chains)
    SELECT action, channel, s, count(*), count(*) FILTER (WHERE seq = 1) FROM new_rows
    GROUP BY action, channel ORDER BY action, channel
    ON CONFLICT ({_EVT_KEY})
    DO UPDATE SET events = c.events + EXCLUDED.events, chains = c.chains + EXCLUDED.chains;
    RETURN NULL;
END $$;
"""

POSTGRES_TRIGGERS = [
    _PG_MSG_FUNCTION,
    "CREATE TRIGGER messages_status_counts_insert AFTER INSERT ON messages REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION optline_message_status_counts()",
    "CREATE TRIGGER messages_status_counts_update AFTER UPDATE ON messages "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION optline_message_status_counts()",
    "CREATE TRIGGER messages_status_counts_delete AFTER DELETE ON messages REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION optline_message_status_counts()",
    "CREATE TRIGGER messages_status_counts_truncate AFTER TRUNCATE ON messages "
    "FOR EACH STATEMENT EXECUTE FUNCTION optline_message_status_counts()",
    _PG_EVT_FUNCTION,
    # Insert only: the ledger refuses UPDATE and DELETE (migration 0002).
    "CREATE TRIGGER consent_event_counts_insert AFTER INSERT ON consent_events "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION optline_consent_event_counts()",
]
POSTGRES_DROP = [
    "DROP TRIGGER IF EXISTS messages_status_counts_insert ON messages",
    "DROP TRIGGER IF EXISTS messages_status_counts_update ON messages",
    "DROP TRIGGER IF EXISTS messages_status_counts_delete ON messages",
    "DROP TRIGGER IF EXISTS messages_status_counts_truncate ON messages",
    "DROP TRIGGER IF EXISTS consent_event_counts_insert ON consent_events",
    "DROP FUNCTION IF EXISTS optline_message_status_counts()",
    "DROP FUNCTION IF EXISTS optline_consent_event_counts()",
]


def install(conn: Connection) -> None:
    execute_ddl(conn, postgresql=POSTGRES_TRIGGERS, sqlite=SQLITE_TRIGGERS)


def uninstall(conn: Connection) -> None:
    execute_ddl(conn, postgresql=POSTGRES_DROP, sqlite=SQLITE_DROP)


def rebuild(conn: Connection) -> None:
    """Recompute the three tables from ``messages`` and ``consent_events`` (one GROUP BY each), into shard 0.

    On PostgreSQL, run it where no writer is active (a migration), or inside a transaction that locked
    both base tables (``lock_sources``): a concurrent write would otherwise be counted twice or not at all."""
    conn.execute(text("DELETE FROM message_status_counts"))
    conn.execute(text("DELETE FROM consent_event_counts"))
    conn.execute(text("DELETE FROM campaign_status_counts"))
    conn.execute(
        text(
            f"""
            INSERT INTO campaign_status_counts ({_CAMP_KEY}, messages)
            SELECT campaign_id, status, 0, count(*) FROM messages WHERE campaign_id IS NOT NULL
            GROUP BY campaign_id, status
            """
        )
    )
    conn.execute(
        text(
            f"""
            INSERT INTO message_status_counts ({_MSG_KEY}, messages)
            SELECT status, COALESCE(provider, ''), priority, 0, count(*) FROM messages
            GROUP BY status, COALESCE(provider, ''), priority
            """
        )
    )
    conn.execute(
        text(
            f"""
            INSERT INTO consent_event_counts ({_EVT_KEY}, events, chains)
            SELECT action, channel, 0, count(*), sum(CASE WHEN seq = 1 THEN 1 ELSE 0 END)
            FROM consent_events GROUP BY action, channel
            """
        )
    )


# Each kept table: its key (without the shard) and its count columns.
KEPT = {
    "message_status_counts": (("status", "provider", "priority"), ("messages",)),
    "consent_event_counts": (("action", "channel"), ("events", "chains")),
    "campaign_status_counts": (("campaign_id", "status"), ("messages",)),
}


def summed(conn: Connection, table: str, key: tuple[str, ...], values: tuple[str, ...]) -> dict[Any, int]:
    """One kept table summed over its shards: {(key…, count column): n}, zero counts left out."""
    sums = ", ".join(f"sum({v})" for v in values)
    found: dict[Any, int] = {}
    for row in conn.execute(text(f"SELECT {', '.join(key)}, {sums} FROM {table} GROUP BY {', '.join(key)}")):
        for name, n in zip(values, row[len(key) :], strict=True):
            if n:
                found[(*(str(k) for k in row[: len(key)]), name)] = int(n)
    return found


def kept(conn: Connection) -> dict[str, dict[Any, int]]:
    """What the triggers kept, per table (``optline counts rebuild`` compares it before and after)."""
    return {table: summed(conn, table, key, values) for table, (key, values) in KEPT.items()}


def lock_sources(conn: Connection) -> None:
    """PostgreSQL: hold off every write to the counted tables until this transaction ends, so that a
    ``rebuild`` in it sees exactly the rows the triggers would have counted (reads go on meanwhile)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE messages, consent_events IN SHARE ROW EXCLUSIVE MODE"))


def shard_rows(conn: Connection) -> int:
    """How many per-backend rows wait to be folded (0 on SQLite, which writes shard 0 only)."""
    if conn.dialect.name != "postgresql":
        return 0
    return int(
        conn.execute(
            text(
                "SELECT (SELECT count(*) FROM message_status_counts WHERE shard <> 0)"
                " + (SELECT count(*) FROM consent_event_counts WHERE shard <> 0)"
                " + (SELECT count(*) FROM campaign_status_counts WHERE shard <> 0)"
            )
        ).scalar_one()
    )


def compact(conn: Connection) -> int:
    """Fold every backend's shard rows into shard 0 (PostgreSQL; nothing to do on SQLite). Returns the
    number of shard rows folded.

    Rows a writer holds right now are skipped (SKIP LOCKED): compaction never waits on a worker, and a
    worker waits at most for this one statement. A folded shard that its backend writes again simply
    starts a new row; the sums stay exact either way. Shard 0 rows are kept at zero, not deleted, so a
    status once seen keeps its series (a gauge at 0, not a series that vanished)."""
    if conn.dialect.name != "postgresql":
        return 0
    folded = 0
    for table, (key, values) in KEPT.items():
        cols = ", ".join(key)
        vals = ", ".join(values)
        folded += conn.execute(
            text(
                f"""
                WITH picked AS (
                    SELECT {cols}, shard FROM {table} WHERE shard <> 0 FOR UPDATE SKIP LOCKED
                ), gone AS (
                    DELETE FROM {table} t USING picked p
                    WHERE ({", ".join(f"t.{c}" for c in key)}, t.shard) = ({", ".join(f"p.{c}" for c in key)}, p.shard)
                    RETURNING {", ".join(f"t.{c}" for c in (*key, *values))}
                ), summed AS (
                    SELECT {cols}, {", ".join(f"sum({v}) AS {v}" for v in values)}, count(*) AS n
                    FROM gone GROUP BY {cols}
                ), ins AS (
                    INSERT INTO {table} AS t ({cols}, shard, {vals})
                    SELECT {cols}, 0, {vals} FROM summed ORDER BY {cols}
                    ON CONFLICT ({cols}, shard)
                    DO UPDATE SET {", ".join(f"{v} = t.{v} + EXCLUDED.{v}" for v in values)}
                )
                SELECT COALESCE(sum(n), 0) FROM summed
                """
            )
        ).scalar_one()
    return int(folded)
