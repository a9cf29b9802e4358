"""Counts kept for the dashboard, and TRUNCATE for the analytics counters: the scrape-count triggers now also
keep ``campaign_status_counts`` (messages per campaign and status), and the analytics counters
(``message_counts``, ``frequency_exposures``) are emptied by a TRUNCATE of ``messages`` on PostgreSQL like
the scrape counts already were. Both sets of triggers are reinstalled and the scrape counts rebuilt.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

from optline.adapters.db import counters, rollups

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
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
