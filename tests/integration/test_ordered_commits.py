"""adapters/db/ordered_commits.py: units run at once on several connections (PostgreSQL) commit strictly in
order, and a failure rolls back every unit after it, so what is committed is always a prefix."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from optline.adapters.db import ordered_commits
from optline.adapters.db.database import make_engine


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    with e.begin() as conn:
        conn.execute(text("CREATE TABLE probe (unit integer PRIMARY KEY)"))
    yield e
    e.dispose()


def stored(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [r.unit for r in conn.execute(text("SELECT unit FROM probe ORDER BY unit"))]


def connections(engine: Engine, n: int) -> list[Connection]:
    # One writer at a time on SQLite: the units run one after the other on one connection there.
    return [engine.connect() for _ in range(n if engine.dialect.name == "postgresql" else 1)]


def write(conn: Connection, unit: int) -> int:
    conn.execute(text("INSERT INTO probe (unit) VALUES (:u)"), {"u": unit})
    return unit


def test_a_failure_rolls_back_every_later_unit_and_is_raised_at_its_turn(engine: Engine) -> None:
    conns = connections(engine, 2)
    later_written = threading.Event()

    def work(conn: Connection, unit: int) -> int:
        if unit == 1 and len(conns) > 1:
            later_written.wait()  # unit 2 has written its row (on the other connection) before unit 1 fails
        if unit == 2:
            write(conn, unit)
            later_written.set()
            return unit
        if unit == 1:
            raise RuntimeError("unit 1 failed")
        return write(conn, unit)

    seen = []
    with pytest.raises(RuntimeError, match="unit 1 failed"):
        for unit, result in ordered_commits.in_order(conns, [0, 1, 2, 3], work):
            assert unit == result
            seen.append(unit)
    assert seen == [0]
    assert stored(engine) == [0]  # unit 2 was written, then rolled back: the committed units are a prefix
    for conn in conns:
        conn.close()


def test_a_unit_that_finishes_first_commits_after_the_one_before_it(engine: Engine) -> None:
    conns = connections(engine, 2)
    if len(conns) == 1:
        # SQLite: in order by construction (one connection, one unit after the other).
        results = list(ordered_commits.in_order(conns, [0, 1, 2], write))
        assert results == [(0, 0), (1, 1), (2, 2)] and stored(engine) == [0, 1, 2]
        conns[0].close()
        return
    second_done = threading.Event()
    visible_while_first_open: list[list[int]] = []

    def work(conn: Connection, unit: int) -> int:
        write(conn, unit)
        if unit == 1:
            second_done.set()
        if unit == 0:
            second_done.wait()  # unit 1 has finished its work; it must still wait for this commit
            visible_while_first_open.append(stored(engine))
        return unit

    assert list(ordered_commits.in_order(conns, [0, 1, 2], work)) == [(0, 0), (1, 1), (2, 2)]
    assert visible_while_first_open == [[]]
    assert stored(engine) == [0, 1, 2]
    for conn in conns:
        conn.close()


def test_a_cycle_through_the_wait_for_an_earlier_unit_is_broken_by_the_database(engine: Engine) -> None:
    # Unit 1 waits for unit 0's commit while holding a row lock; unit 0 waits for another writer's lock, and
    # that writer waits for unit 1's. A wait in Python would hang all three; the advisory lock makes it a
    # cycle PostgreSQL's deadlock detector sees and breaks (one of the three fails; nothing hangs).
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite: one connection, units never wait for each other")
    with engine.begin() as conn:
        write(conn, 100)
        write(conn, 200)
    conns = connections(engine, 2)
    unit_1_locked = threading.Event()
    other = engine.connect()
    other.begin()
    lock(other, 100)
    failures: list[BaseException] = []

    def other_writer() -> None:
        unit_1_locked.wait()
        try:
            lock(other, 200)  # waits for unit 1
            other.commit()
        except DBAPIError as exc:
            failures.append(exc)
            other.rollback()

    def work(conn: Connection, unit: int) -> int:
        if unit == 1:
            lock(conn, 200)
            unit_1_locked.set()
        else:
            unit_1_locked.wait()
            lock(conn, 100)  # waits for the other writer
        return unit

    thread = threading.Thread(target=other_writer)
    thread.start()
    committed = []
    try:
        for unit, _ in ordered_commits.in_order(conns, [0, 1], work):
            committed.append(unit)
    except DBAPIError as exc:
        failures.append(exc)
    thread.join()
    assert len(failures) == 1 and "deadlock" in str(failures[0]).lower(), failures
    assert committed in ([], [0], [0, 1])  # whichever the detector chose: a prefix
    for conn in [*conns, other]:
        conn.close()


def lock(conn: Connection, unit: int) -> None:
    conn.execute(text("SELECT unit FROM probe WHERE unit = :u FOR UPDATE"), {"u": unit})
