"""Units of work on several PostgreSQL connections at once, committed strictly in the order given.

Why: a contacts import's merge is mostly the server's own work per row (indexes, foreign-key checks, the
events' heap), and one backend runs on one core. Two backends merging alternate chunks use two cores, while
this process builds the next chunk's rows between their round trips (psycopg releases the GIL while it
waits). Each unit is still one transaction, and a unit commits only after the one before it committed: the
committed units are always a prefix, so "lines before X are imported" stays exact, and after a failure (or
a kill) importing the same file again finishes it.

Deadlocks: a unit that waits for the one before it holds its own row locks meanwhile. If another writer
waited on those while the earlier unit waited on that writer, a wait in Python would be a cycle nobody sees.
So the wait is a lock the server knows: each unit takes a transaction-level advisory lock first, and the
unit after it takes the same lock before committing — it is granted when the earlier transaction ends, and
PostgreSQL's deadlock detector sees the whole cycle (one transaction fails with a deadlock error; the
import reports where it stopped, as for any database failure).

With one connection (SQLite: one writer at a time) the units simply run one after the other, here.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection, func, select

U = TypeVar("U")
R = TypeVar("R")


class EarlierUnitFailed(RuntimeError):
    """This unit was rolled back because the one before it did not commit (that one's error is raised)."""


class _Turn:
    """One unit's place in the commit order."""

    def __init__(self, previous: _Turn | None) -> None:
        self.previous = previous
        self.key = secrets.randbits(63)  # the advisory lock held while its transaction is open
        self.locked = threading.Event()  # the lock is held (or the unit ended without taking it)
        self.ended = threading.Event()  # the transaction committed or rolled back
        self.committed = False


def in_order(
    conns: list[Connection], units: Iterable[U], work: Callable[[Connection, U], R]
) -> Generator[tuple[U, R], None, None]:
    """Run ``work(conn, unit)`` for each unit in a transaction of its own, on all ``conns`` at once, and
    yield ``(unit, result)`` in the order of ``units``, each once its transaction has committed.

    A unit's failure is raised here, at its turn; the units after it are rolled back. Stopping the
    iteration early rolls back every unit not yet yielded."""
    if len(conns) == 1:
        for unit in units:
            with conns[0].begin():
                result = work(conns[0], unit)
            yield unit, result
        return
    stop = threading.Event()
    pending: deque[tuple[U, Future[R]]] = deque()
    previous: _Turn | None = None
    pool = ThreadPoolExecutor(len(conns), thread_name_prefix="optline-ordered-commit")
    try:
        for i, unit in enumerate(units):
            if len(pending) == len(conns):  # the oldest unit's connection is the one the next unit takes
                done, future = pending.popleft()
                yield done, future.result()
            turn = _Turn(previous)
            pending.append((unit, pool.submit(_run, conns[i % len(conns)], work, unit, turn, stop)))
            previous = turn
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        stop.set()  # units still running roll back instead of committing
        pool.shutdown(wait=True)


def _run(
    conn: Connection, work: Callable[[Connection, U], R], unit: U, turn: _Turn, stop: threading.Event
) -> R:
    try:
        with conn.begin():
            conn.execute(select(func.pg_advisory_xact_lock(turn.key)))
            turn.locked.set()
            result = work(conn, unit)
            earlier = turn.previous
            if earlier is not None:
                earlier.locked.wait()
                # Granted when the earlier transaction ends: a wait the deadlock detector sees.
                conn.execute(select(func.pg_advisory_xact_lock(earlier.key)))
                earlier.ended.wait()  # its outcome is set right after its transaction ended
                if not earlier.committed:
                    raise EarlierUnitFailed("an earlier unit of this run did not commit")
            if stop.is_set():
                raise EarlierUnitFailed("the run stopped before this unit's turn")
        turn.committed = True
        return result
    finally:
        turn.locked.set()
        turn.ended.set()
