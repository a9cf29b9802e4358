"""Make the consent ledger append-only in the database itself (PostgreSQL).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        # SQLite has no roles to grant to; the code has no update/delete path, and verify catches edits.
        op.execute(
            "CREATE TRIGGER consent_events_no_update BEFORE UPDATE ON consent_events "
            "BEGIN SELECT RAISE(ABORT, 'consent_events is append-only'); END"
        )
        op.execute(
            "CREATE TRIGGER consent_events_no_delete BEFORE DELETE ON consent_events "
            "BEGIN SELECT RAISE(ABORT, 'consent_events is append-only'); END"
        )
        return
    op.execute(
        """
        CREATE FUNCTION optline_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE ON consent_events "
        "FOR EACH ROW EXECUTE FUNCTION optline_append_only()"
    )
    op.execute(
        "CREATE TRIGGER consent_events_no_truncate BEFORE TRUNCATE ON consent_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION optline_append_only()"
    )
    for table in ("ledger_digests", "ledger_digest_heads"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION optline_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TRIGGER IF EXISTS consent_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS consent_events_no_delete")
        return
    op.execute("DROP TRIGGER IF EXISTS ledger_digest_heads_append_only ON ledger_digest_heads")
    op.execute("DROP TRIGGER IF EXISTS ledger_digests_append_only ON ledger_digests")
    op.execute("DROP TRIGGER IF EXISTS consent_events_no_truncate ON consent_events")
    op.execute("DROP TRIGGER IF EXISTS consent_events_append_only ON consent_events")
    op.execute("DROP FUNCTION IF EXISTS optline_append_only()")
