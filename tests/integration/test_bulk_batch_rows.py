"""bulk.unnested / update_unnested (PostgreSQL): a batch's rows go to the server as one JSON parameter and
come out as the table's own values — text with quotes, backslashes, braces and non-ASCII letters as given,
times to the microsecond and in their offset, NULLs, booleans, nested JSON — whatever the batch's size."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)

from optline.adapters.db import bulk
from optline.adapters.db.database import make_engine

probe = Table(
    "probe_batch_rows",
    MetaData(),
    Column("n", BigInteger, primary_key=True),
    Column("label", String(40)),
    Column("body", Text),
    Column("flag", Boolean),
    Column("at", DateTime(timezone=True)),
    Column("doc", JSON),
)
COLUMNS = ["n", "label", "body", "flag", "at", "doc"]
AWKWARD = ['a "quoted" {brace}, comma', "back\\slash\nnew line\ttab", "NULL", "", "Olá — 停止 ✋"]


@pytest.fixture
def engine(db_url: str, engine_name: str) -> Iterator[Engine]:
    if engine_name != "postgresql":
        pytest.skip(
            "unnested is PostgreSQL's batch form (SQLite batches use executemany or multi-row VALUES)"
        )
    e = make_engine(db_url)
    with e.begin() as conn:
        probe.create(conn)
    yield e
    e.dispose()


def _rows(count: int) -> list[dict[str, object]]:
    base = datetime(2026, 11, 26, 19, 0, 0, 123456, tzinfo=UTC)
    rows: list[dict[str, object]] = []
    for n in range(count):
        zone = timezone(timedelta(hours=-5)) if n % 2 else UTC
        rows.append(
            {
                "n": n,
                "label": None if n % 5 == 4 else f"row {n}",
                "body": AWKWARD[n % len(AWKWARD)],
                "flag": [True, False, None][n % 3],
                "at": None if n % 7 == 6 else (base + timedelta(microseconds=n)).astimezone(zone),
                "doc": {"text": AWKWARD[n % len(AWKWARD)], "n": n, "list": [1, None, "x"]},
            }
        )
    return rows


@pytest.mark.parametrize("count", [1, 2, 16, 33])
def test_a_batch_inserted_from_its_rows_is_stored_as_given(engine: Engine, count: int) -> None:
    rows = _rows(count)
    source = bulk.unnested(probe, COLUMNS)
    stmt = insert(probe).from_select(COLUMNS, select(*(source.c[c] for c in COLUMNS)))
    with engine.begin() as conn:
        conn.execute(stmt, bulk.unnest_params(COLUMNS, rows))
    with engine.begin() as conn:
        stored = [dict(r._mapping) for r in conn.execute(select(probe).order_by(probe.c.n))]
    assert stored == rows  # (aware datetimes compare as instants; the offsets were read as given)


def test_a_batch_updated_from_its_rows_changes_each_row_found_by_its_key(engine: Engine) -> None:
    rows = _rows(6)
    with engine.begin() as conn:
        conn.execute(insert(probe), rows)
        changed = [{"n": r["n"], "body": f'changed {r["n"]} \\ "', "flag": True} for r in rows[:4]]
        conn.execute(
            bulk.update_unnested(probe, ["n"], ["body", "flag"]),
            bulk.unnest_params(["n", "body", "flag"], changed),
        )
    with engine.begin() as conn:
        stored = {r.n: (r.body, r.flag) for r in conn.execute(select(probe))}
    expected = {r["n"]: (r["body"], r["flag"]) for r in rows}
    expected.update({c["n"]: (c["body"], True) for c in changed})
    assert stored == expected


def test_a_value_json_cannot_carry_is_refused_by_name(engine: Engine) -> None:
    with pytest.raises(TypeError, match="set is not a value"):
        bulk.unnest_params(["doc"], [{"doc": {1, 2}}])
