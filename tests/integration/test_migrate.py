"""``migrate`` on a database already at the newest revision returns without importing alembic (every CLI
command migrates first); one behind is still brought forward."""

from __future__ import annotations

from optline.adapters.db.database import (
    alembic_config,
    head_revision,
    make_engine,
    migrate,
    schema_revision,
    shipped_head,
)


def test_the_scripts_head_read_without_alembic_is_alembics() -> None:
    assert shipped_head() is not None
    assert shipped_head() == head_revision()


def test_a_database_one_revision_behind_is_still_migrated(db_url: str) -> None:
    from alembic import command

    engine = make_engine(db_url)
    try:
        assert schema_revision(engine) == head_revision()
        cfg = alembic_config(db_url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "-1")
        assert schema_revision(engine) != head_revision()
        migrate(engine)
        assert schema_revision(engine) == head_revision()
    finally:
        engine.dispose()
