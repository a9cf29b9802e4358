"""Group commit (adapters/db/group_commit.py), on both engines: several units in one transaction, each caller
answered only after that transaction committed, and one unit's failure costing the others nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, event, insert, select

from optline.adapters.db.group_commit import POSTGRES_WRITERS, Beside, GroupCommit, of, writer_threads
from optline.adapters.db.tables import rate_limit_hits
from optline.bootstrap import Container


def _write(key: str) -> Callable[[Connection], str]:
    def unit(conn: Connection) -> str:
        conn.execute(insert(rate_limit_hits).values(bucket="test", key=key, at=0.0, expires=0.0))
        return key

    return unit


def _failing(key: str) -> Callable[[Connection], str]:
    def unit(conn: Connection) -> str:
        _write(key)(conn)  # written, then the unit fails: its write must not survive
        raise ValueError(f"unit {key} refuses")

    return unit


def _committed(container: Container) -> set[str]:
    with container.db.read() as conn:  # another connection: only what was committed
        return set(conn.execute(select(rate_limit_hits.c.key)).scalars())


def _blocked_first(entered: threading.Event, release: threading.Event) -> Callable[[Connection], str]:
    """A unit that holds the writer until ``release``: whatever is submitted meanwhile forms the next batch."""

    def unit(conn: Connection) -> str:
        entered.set()
        assert release.wait(30)
        return _write("first")(conn)

    return unit


def _run(container: Container, units: list[Callable[[Connection], str]]) -> tuple[list[Any], list[set[str]]]:
    """Submit ``units`` after a first one that holds the writer; returns each outcome (result or exception)
    and what another connection saw committed at the moment each caller was answered."""
    group = GroupCommit(container.db, writers=1)  # (PostgreSQL's several writers would share the queue)
    entered, release = threading.Event(), threading.Event()
    seen: list[set[str]] = [set() for _ in units]

    async def one(i: int, unit: Callable[[Connection], str]) -> str:
        result = await group.run(unit)
        seen[i] = _committed(container)
        return result

    async def main() -> list[Any]:
        first = asyncio.create_task(group.run(_blocked_first(entered, release)))
        # Events, not sleeps: a loaded machine may take longer than any sleep to start the writer thread.
        assert await asyncio.to_thread(entered.wait, 30)  # the writer has taken the first unit, waits in it
        rest = [asyncio.create_task(one(i, u)) for i, u in enumerate(units)]
        await asyncio.sleep(0)  # each task's first step puts its unit on the queue (no await before the put)
        assert group.queued() == len(units)
        release.set()
        await first
        return list(await asyncio.gather(*rest, return_exceptions=True))

    return asyncio.run(main()), seen


def _commits(container: Container) -> list[int]:
    """Write transactions committed from now on (reads commit too: they are not counted)."""
    commits: list[int] = []

    def count(conn: Connection) -> None:
        if conn.get_execution_options().get("optline_write"):
            commits.append(1)

    event.listen(container.db.engine, "commit", count)
    return commits


def test_units_waiting_together_share_one_commit_and_are_answered_after_it(container: Container) -> None:
    commits = _commits(container)
    keys = [f"k{i}" for i in range(10)]
    results, seen = _run(container, [_write(k) for k in keys])
    assert results == keys
    assert len(commits) == 2  # the first unit alone, then the ten queued behind it in one transaction
    for key, committed in zip(keys, seen, strict=True):
        assert key in committed  # when its caller was answered, its write was visible to everyone


def test_a_failing_unit_fails_alone_and_the_others_of_its_batch_commit(container: Container) -> None:
    results, seen = _run(container, [_write("a"), _failing("b"), _write("c")])
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], ValueError) and "unit b refuses" in str(results[1])
    assert _committed(container) == {"first", "a", "c"}  # b's own write was rolled back with it
    assert "a" in seen[0] and "c" in seen[2]


def test_a_failed_commit_answers_every_unit_of_the_batch_with_the_error(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = GroupCommit(container.db)

    def broken_commit(conn: Any) -> None:
        raise RuntimeError("the disk is full")

    event.listen(container.db.engine, "commit", broken_commit)

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(group.run(_write(k)) for k in "xyz"), return_exceptions=True))

    results = asyncio.run(main())
    event.remove(container.db.engine, "commit", broken_commit)
    assert all(isinstance(r, RuntimeError) for r in results), results  # nobody is told it was recorded
    assert _committed(container) == set()


@pytest.mark.parametrize("writers", [1, 3])
def test_units_submitted_in_one_turn_of_the_event_loop_share_one_transaction(
    container: Container, writers: int
) -> None:
    # The writer takes the first unit, then lets the loop finish the turn it is in before closing the batch:
    # the requests the loop was already reading join it (a batch's fixed cost is shared, bench.inbound).
    # With several writers (PostgreSQL's default) the others wait their turn meanwhile instead of each taking
    # a unit of the same turn into a transaction of its own (what made ``serve --workers 4`` commit mostly
    # batches of one).
    commits = _commits(container)
    group = GroupCommit(container.db, writers=writers)
    keys = [f"t{i}" for i in range(8)]

    async def main() -> list[str]:
        return list(await asyncio.gather(*(group.run(_write(k)) for k in keys)))

    assert asyncio.run(main()) == keys
    assert len(commits) == 1
    assert _committed(container) == set(keys)


def test_a_lone_unit_is_not_held_back_waiting_for_others(container: Container) -> None:
    # An idle loop answers the writer's "caught up?" at once: a unit alone commits as soon as it is queued,
    # and the next one, submitted only after the first was answered, is a transaction of its own.
    commits = _commits(container)
    group = GroupCommit(container.db, writers=1)

    async def main() -> list[str]:
        return [await group.run(_write("alone")), await group.run(_write("next"))]

    assert asyncio.run(main()) == ["alone", "next"]
    assert len(commits) == 2


def test_the_processes_of_one_server_share_its_postgresql_writers(container: Container) -> None:
    # ``serve --workers N``: every process has its group commit, and N processes with three writers each
    # split their already small batches further; one process keeps its three.
    if container.db.is_sqlite:
        assert [writer_threads(container.db, n) for n in (1, 2, 4)] == [1, 1, 1]
        return
    assert writer_threads(container.db) == POSTGRES_WRITERS == 3
    assert [writer_threads(container.db, n) for n in (2, 3, 4, 8)] == [2, 1, 1, 1]


def test_a_worker_beside_gives_way_to_the_units_already_waiting(container: Container) -> None:
    # ``serve`` on SQLite: the in-process dispatch worker asks before each write whether webhooks wait for
    # the write lock, and lets them commit first (group_commit.Beside). Here the write it would make next
    # happens only after the waiting unit committed (the bound, GIVE_WAY_SECONDS, is not what is tested).
    group = GroupCommit(container.db, writers=1)
    beside = Beside(container.db, max_wait=60)
    entered, release, gave_way = threading.Event(), threading.Event(), threading.Event()
    seen_after: list[set[str]] = []

    def worker_write() -> None:
        beside.give_way()
        seen_after.append(_committed(container))  # what the worker's transaction would find committed
        gave_way.set()

    async def main() -> None:
        first = asyncio.create_task(group.run(_blocked_first(entered, release)))
        assert await asyncio.to_thread(entered.wait, 30)
        assert group.waiting() == 1 and group.queued() == 0  # taken into a batch, not committed yet
        assert beside.waiting() == 1
        worker = threading.Thread(target=worker_write)
        worker.start()
        assert not gave_way.is_set()  # still waiting while the unit holds the writer
        release.set()
        await first
        await asyncio.to_thread(worker.join, 30)

    asyncio.run(main())
    assert seen_after == [{"first"}] and group.waiting() == 0 and beside.waiting() == 0
    assert (of(container.db) is not None) == container.db.is_sqlite  # PostgreSQL locks rows, not the database
