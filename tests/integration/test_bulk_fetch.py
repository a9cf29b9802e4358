"""bulk.fetch_tuples on both engines: a statement's rows as the driver's plain tuples, with its parameters,
and a failure raised as SQLAlchemy raises one (so an import's ImportInterrupted still catches it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, Text, select
from sqlalchemy.exc import DBAPIError

from optline.adapters.db import bulk
from optline.adapters.db.database import make_engine

probe = Table("probe", MetaData(), Column("n", Integer, primary_key=True), Column("label", Text))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    with e.begin() as conn:
        probe.create(conn)
        conn.execute(probe.insert(), [{"n": n, "label": f"row {n}"} for n in range(10)])
    yield e
    e.dispose()


def test_rows_come_back_as_plain_tuples_with_the_statements_parameters(engine: Engine) -> None:
    with engine.begin() as conn:
        rows = bulk.fetch_tuples(conn, select(probe.c.n, probe.c.label).where(probe.c.n.between(3, 5)))
    assert sorted(rows) == [(3, "row 3"), (4, "row 4"), (5, "row 5")]
    assert all(type(r) is tuple for r in rows)


def test_a_failure_is_raised_as_sqlalchemy_raises_one(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE probe")
        with pytest.raises(DBAPIError):
            bulk.fetch_tuples(conn, select(probe.c.n).where(probe.c.n > 1))
