"""bulk.insert_tuples on both engines: every row stored as given, whatever the count (on SQLite rows go in
multi-row statements of up to SQLITE_ROWS_PER_INSERT rows, the rest in statements of 2^k rows), and a
failure raised as SQLAlchemy raises one, the caller's transaction rolled back whole."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, Text, select
from sqlalchemy.exc import DBAPIError

from optline.adapters.db import bulk
from optline.adapters.db.database import make_engine

probe = Table(
    "probe_insert",
    MetaData(),
    Column("n", Integer, primary_key=True),
    Column("label", Text),
    Column("x", Text),
)
FULL = bulk.SQLITE_ROWS_PER_INSERT


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    with e.begin() as conn:
        probe.create(conn)
    yield e
    e.dispose()


@pytest.mark.parametrize("count", [1, 2, 3, 7, FULL - 1, FULL, FULL + 1, 2 * FULL + 37])
def test_every_row_is_stored_as_given_across_statement_boundaries(engine: Engine, count: int) -> None:
    rows = [(n, f"row {n}", None if n % 3 else "x'y\"z") for n in range(count)]
    with engine.begin() as conn:
        bulk.insert_tuples(conn, probe.name, ["n", "label", "x"], rows)
    with engine.begin() as conn:
        stored = [tuple(r) for r in conn.execute(select(probe).order_by(probe.c.n))]
    assert stored == rows


def test_a_library_with_a_lower_limit_on_parameters_gets_fewer_rows_a_statement(engine: Engine) -> None:
    # SQLite before 3.32 allowed 999 parameters a statement (this connection is set to that): 40 columns
    # get 24 rows a statement, and a statement of 2,000 rows would be refused.
    wide = Table("probe_wide", MetaData(), *(Column(f"c{i}", Integer) for i in range(40)))
    with engine.begin() as conn:
        wide.create(conn)
    rows = [tuple(range(r, r + 40)) for r in range(100)]
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            driver = conn.connection.driver_connection
            driver.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # type: ignore[union-attr]
        bulk.insert_tuples(conn, wide.name, [f"c{i}" for i in range(40)], rows)
    with engine.begin() as conn:
        stored = [tuple(r) for r in conn.execute(select(wide).order_by(wide.c.c0))]
    assert stored == rows


def test_a_failing_row_is_raised_as_sqlalchemy_raises_one_and_nothing_is_kept(engine: Engine) -> None:
    with engine.begin() as conn:
        bulk.insert_tuples(conn, probe.name, ["n", "label", "x"], [(0, "kept", None)])
    # The duplicate key comes after a full statement: its rows were written by then, and are rolled back.
    rows = [(n, "new", None) for n in range(1, FULL + 10)] + [(0, "duplicate", None)]
    with pytest.raises(DBAPIError) as raised, engine.begin() as conn:
        bulk.insert_tuples(conn, probe.name, ["n", "label", "x"], rows)
    # Named briefly: not a statement of thousands of placeholders in the log.
    assert probe.name in str(raised.value) and len(str(raised.value)) < 2000
    with engine.begin() as conn:
        assert [tuple(r) for r in conn.execute(select(probe.c.n, probe.c.label))] == [(0, "kept")]
