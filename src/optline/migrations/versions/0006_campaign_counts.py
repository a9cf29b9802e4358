"""Counts kept for the dashboard, and TRUNCATE for the analytics counters: the scrape-count triggers now also
keep ``campaign_status_counts`` (messages per campaign and status), and the analytics counters
(``message_counts``, ``frequency_exposures``) are emptied by a TRUNCATE of ``messages`` on PostgreSQL like
the scrape counts already were. Both sets of triggers are reinstalled and the scrape counts rebuilt.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from optline.adapters.db import counters, rollups
from optline.adapters.db.tables import (
    campaign_status_counts,
    consent_events,
    inbound_messages,
    leases,
    message_counts,
)

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _schema_of_0001_before_0006(conn: sa.Connection) -> None:
    """A database whose 0001 predates these tables (a development database made before this revision; 0001
    is regenerated while optline is unreleased) gets them here; on one made by today's 0001, nothing to do."""
    for new_table in (campaign_status_counts, leases):
        new_table.create(conn, checkfirst=True)
    inspector = sa.inspect(conn)
    if "chains" not in {c["name"] for c in inspector.get_columns("consent_event_counts")}:
        op.add_column(
            "consent_event_counts",
            sa.Column("chains", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        )
    wanted = {
        ix.name: (ix, [c.name for c in ix.columns])
        for ix in (*consent_events.indexes, *message_counts.indexes, *inbound_messages.indexes)
        if ix.name
        in (
            "ix_consent_events_action_time",
            "ix_consent_events_recorded",
            "ix_message_counts_day",
            "ix_inbound_campaign_time",
        )
    }
    for table in ("consent_events", "message_counts", "inbound_messages"):
        found = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes(table)}
        for name, (index, columns) in wanted.items():
            if index.table is not None and index.table.name == table and found.get(name) != columns:
                if name in found:  # (action, recorded_at) before: the filters are on occurred_at
                    op.drop_index(name, table_name=table)
                index.create(conn)


def upgrade() -> None:
    conn = op.get_bind()
    _schema_of_0001_before_0006(conn)
    # The backfill and the triggers must see the same rows: no write may fall between them.
    rollups.lock_sources(conn)
    rollups.uninstall(conn)
    rollups.install(conn)
    rollups.rebuild(conn)
    counters.uninstall(conn)
    counters.install(conn)


def downgrade() -> None:
    # The TRUNCATE trigger is the one thing 0003 did not install. The scrape-count triggers keep counting
    # campaigns: their table belongs to 0001, and 0005's downgrade removes them.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS messages_counts_truncate ON messages")
