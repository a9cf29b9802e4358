"""Indexes for finding people by name on the dashboard: the lower-cased ``first_name`` and ``last_name``
attributes (services/contact_search.py), so a name search reads index ranges, not every contact.

Expression indexes, hand-written per engine: the query must use exactly these expressions
(``contact_search.name_key``), which autogenerate cannot express for both engines.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FIELDS = ("first_name", "last_name")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for field in FIELDS:
        if postgres:  # text_pattern_ops: the index serves LIKE 'prefix%' whatever the database's collation
            op.execute(
                f"CREATE INDEX ix_contacts_{field} ON contacts "
                f"(lower(attributes ->> '{field}') text_pattern_ops)"
            )
        else:
            op.execute(
                f"CREATE INDEX ix_contacts_{field} ON contacts (lower(json_extract(attributes, '$.{field}')))"
            )


def downgrade() -> None:
    for field in FIELDS:
        op.execute(f"DROP INDEX ix_contacts_{field}")
