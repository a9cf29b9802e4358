"""Analytics counters: triggers on ``messages`` keep ``message_counts`` and ``frequency_exposures`` (both
engines), and a backfill for messages written before the triggers existed.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

from optline.adapters.db import counters

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    counters.install(conn)
    counters.rebuild(conn)


def downgrade() -> None:
    counters.uninstall(op.get_bind())
