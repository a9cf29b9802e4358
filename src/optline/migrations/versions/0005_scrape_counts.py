"""Scrape-time counts for /metrics: triggers on ``messages`` and ``consent_events`` keep
``message_status_counts`` and ``consent_event_counts`` (both engines), and a backfill for rows written
before the triggers existed (adapters/db/rollups.py).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

from optline.adapters.db import rollups

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        # The backfill and the triggers must see the same rows: no write may fall between them.
        op.execute("LOCK TABLE messages, consent_events IN SHARE ROW EXCLUSIVE MODE")
    rollups.install(conn)
    rollups.rebuild(conn)


def downgrade() -> None:
    rollups.uninstall(op.get_bind())
