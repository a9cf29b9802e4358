"""Group commit: the units of work of many concurrent requests, several per transaction, on writer threads.

Why: a burst of webhooks (STOP replies right after a campaign) used to run as one thread and one transaction
per request. On SQLite the threads queued for the one write lock and each paid its own BEGIN and COMMIT; on
PostgreSQL each paid a durable commit (an fsync, milliseconds on a busy disk) of its own. Here a writer
thread (one on SQLite, a few on PostgreSQL) takes every unit waiting (once the event loop has finished the
turn it was in: see ``_caught_up``), runs them one after another in one transaction and commits once: under
a burst the batches grow by themselves, alone a unit is a transaction of its own and waits for nothing else.
One writer takes in a batch at a time while the others commit theirs (``GroupCommit._collect``).

Every guarantee of a transaction per request is kept:
- A unit's caller gets its result only after the transaction that holds its writes committed (invariant 3:
  a webhook answers 2xx only then). A failed commit fails every unit in it; none is answered 2xx.
- One unit's failure costs the others nothing: the batch is rolled back and each unit runs again in a
  transaction of its own, so only the unit that fails again gets its error (and its 5xx).
- A unit sees the writes of the units before it in its batch, as it would have seen them committed.

Set-based work: a unit may carry a ``run_many(conn, units) -> results`` attribute (the same function on
every unit of its kind). Consecutive units with the same ``run_many`` in a batch are handed to it together,
so that it can do in a few statements what they would do in a few each (services/inbound.py: a burst of
STOPs). It must give the results the units would have given one after another; when it raises, the batch
is rolled back and each unit runs alone, by its own call, as for any failed batch.

A unit must do nothing but database work on the connection it is given (no commits, no side effects outside
the transaction: it may run twice when its batch is retried); what follows the commit (metrics, logs) is the
caller's, after ``run`` returns.

Beside a dispatch worker in the same process (``optline serve`` on SQLite): the worker's writes take the same
one write lock, and a transaction of hundreds of messages held it for 100-200 ms while STOPs waited (p99 152
ms at 100 STOPs/s while it drained a backlog). ``of(db)`` lets such a worker see the units waiting here
(``waiting``) and wait, boundedly, for them to commit before its next transaction (``give_way``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection

from optline.adapters.db.database import Database

T = TypeVar("T")
log = logging.getLogger("optline.group_commit")

# Units per transaction at most: enough to amortise a commit over a burst, few enough that one transaction
# holds SQLite's write lock (or PostgreSQL's row locks) for milliseconds, not seconds.
MAX_BATCH = 32

# Few: a batch of STOPs is recorded set-based (a few statements whatever its size), so bigger batches cost
# less per request; eight writers split a burst of 16 requests into batches of two, and their threads
# fought over the GIL with the event loop (2.4 ms of CPU per STOP over HTTP against 1.8-2.2 with two or
# three, bench.inbound at load 5-6). Three still overlap one batch's round trips with the next ones'.
# Per server, not per process: the ``serve --workers N`` processes share them out (``writer_threads``), as
# their batches overlap each other's round trips already; a process's batches are only as big as its share
# of the requests, and three writers in each of four processes held 7-11 PostgreSQL connections for what
# four do (CPU per request within the noise of a loaded 2-core machine: 1.9-3.2 ms vs 2.1-3.4, A B B A).
POSTGRES_WRITERS = 3
# Turns of the event loop a batch waits before it closes: the one the loop is in, and the next, whose poll
# takes in the requests that arrived meanwhile. Over HTTP (SQLite, webhook path alone, alternating rounds of
# one run) one turn gave a mean batch of 9.9 and 1.50 ms of CPU per request (median), two 13.0 and 1.28 ms;
# against none (the batch was whatever was queued): 7.4 -> 12.1 and 1.38 -> 1.12 ms (bench.inbound).
LOOP_TURNS = 2
IDLE_SECONDS = 10.0  # a writer thread with nothing to do for this long ends; the next unit starts another
# The longest a worker beside the group commit waits for its units before it writes all the same: under a
# stream of webhooks with no gap, the worker must still move (a confirmation is due within 5 minutes).
GIVE_WAY_SECONDS = 0.05

_Item = tuple[Callable[[Connection], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def writer_threads(db: Database, processes: int = 1) -> int:
    """Writer threads of one process of a server that runs ``processes`` of them on ``db``.

    SQLite has one writer at a time: one thread. PostgreSQL takes writers in parallel, and a transaction
    there spends most of its time waiting on round trips to the server: several threads overlap those
    waits (one alone answered a burst at a fraction of the rate of a thread per request)."""
    if db.is_sqlite:
        return 1
    return max(1, -(-POSTGRES_WRITERS // max(1, processes)))  # rounded up: 3, 2, 1, 1 ...


class GroupCommit:
    def __init__(
        self, db: Database, max_batch: int = MAX_BATCH, writers: int | None = None, processes: int = 1
    ) -> None:
        """``processes``: how many processes of the same server each have one (``serve --workers``)."""
        self._db = db
        self._max_batch = max_batch
        self._writers = writers if writers is not None else writer_threads(db, processes)
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._live = 0  # writer threads running
        self._started = threading.Lock()
        self._collecting = threading.Lock()  # held by the writer that is taking in the next batch
        # Units submitted and units whose transaction ended (committed or failed), counted since the start:
        # ``waiting`` is the difference; ``wait_settled`` waits for the units submitted before it was called.
        self._submitted = 0
        self._ended_units = 0
        self._settled = threading.Condition()  # notified when a batch ends
        _LIVE.setdefault(db, weakref.WeakSet()).add(self)

    async def run(self, unit: Callable[[Connection], T]) -> T:
        """``unit(conn)``'s result, once the transaction it ran in has committed (its exception otherwise)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._settled:
            self._submitted += 1
        self._queue.put((unit, loop, future))
        self._start()  # after the put: a writer that is just leaving checks the queue under the same lock
        return await future

    def queued(self) -> int:
        """Units waiting for a writer (not yet taken into a batch)."""
        return self._queue.qsize()

    def waiting(self) -> int:
        """Units whose transaction has not ended: queued, being collected, or in a batch not committed yet
        (a batch waiting for the write lock has left the queue but still waits)."""
        return self._submitted - self._ended_units

    def wait_settled(self, timeout: float) -> bool:
        """Wait until the units waiting now have ended (not those that arrive meanwhile: under a stream of
        webhooks with no gap the worker gets its turn after one batch), at most ``timeout`` seconds; whether
        they have."""
        with self._settled:
            target = self._submitted
            return self._settled.wait_for(lambda: self._ended_units >= target, timeout)

    def _ended(self, units: int) -> None:
        with self._settled:
            self._ended_units += units
            self._settled.notify_all()

    def _start(self) -> None:
        if self._live >= self._writers:
            return
        with self._started:
            while self._live < self._writers:
                # Daemons: requests in flight await their units, so a graceful shutdown (which waits for
                # them) also waits for the transactions they are in.
                self._live += 1
                threading.Thread(target=self._serve, name="optline-group-commit", daemon=True).start()

    def _serve(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                with self._started:  # idle: leave (an application that is gone leaves no thread behind)
                    if self._queue.empty():
                        self._live -= 1
                        return
                continue
            try:
                self._commit(batch)
            finally:
                self._ended(len(batch))

    def _collect(self) -> list[_Item] | None:
        """The next batch (None: nothing came for IDLE_SECONDS). One writer collects at a time; the others
        commit meanwhile or wait their turn. Why: a writer that waited on the queue while another was
        catching up with the event loop took the next unit into a transaction of its own, so idle writers
        split what would have been one batch into batches of one (``serve --workers 4`` on PostgreSQL:
        mostly batches of one, three times the CPU per request of one process)."""
        if not self._collecting.acquire(timeout=IDLE_SECONDS):
            return None
        try:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                return None
            for _ in range(LOOP_TURNS):
                _caught_up(first[1])
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            return batch
        finally:
            self._collecting.release()

    def _commit(self, batch: list[_Item]) -> None:
        try:
            with self._db.transaction() as conn:
                results = (
                    _run([unit for unit, _, _ in batch], conn) if len(batch) > 1 else [batch[0][0](conn)]
                )
        except Exception as exc:
            if len(batch) == 1:
                _settle_all([(batch[0], None, exc)])
                return
            # Rolled back: nothing of the batch was written. Each unit again, alone, so that only the one
            # that fails (a bad row, a deadlock loser) answers with its error.
            log.info("a batch of %d writes failed (%s); running each alone", len(batch), type(exc).__name__)
            for item in batch:
                self._commit([item])
            return
        _settle_all([(item, result, None) for item, result in zip(batch, results, strict=True)])


# The group commits of each database (weakly: an application that is gone leaves nothing behind).
_LIVE: weakref.WeakKeyDictionary[Database, weakref.WeakSet[GroupCommit]] = weakref.WeakKeyDictionary()


class Beside:
    """The webhooks' writes to ``db`` as a worker in the same process sees them (``of``): whichever group
    commits exist when it asks (the application may be created after the worker, or again in tests)."""

    def __init__(self, db: Database, max_wait: float = GIVE_WAY_SECONDS) -> None:
        self._db, self.max_wait = db, max_wait

    def waiting(self) -> int:
        """Webhook units waiting for their transaction (for the write lock, on SQLite)."""
        return sum(g.waiting() for g in list(_LIVE.get(self._db, ())))

    def give_way(self) -> None:
        """Before a write of the worker: let the units already waiting commit first (those that arrive
        meanwhile come after it), waiting ``max_wait`` seconds at most."""
        deadline = time.monotonic() + self.max_wait
        for group in list(_LIVE.get(self._db, ())):
            left = deadline - time.monotonic()
            if left <= 0 or not group.wait_settled(left):
                return


def of(db: Database) -> Beside | None:
    """What a worker beside the webhooks yields to: on SQLite, whose one write lock they share (None on
    PostgreSQL, where writers lock rows, not the database, and the worker runs in processes of its own)."""
    return Beside(db) if db.is_sqlite else None


def _caught_up(loop: asyncio.AbstractEventLoop) -> None:
    """Return once ``loop`` has run the callbacks it had ready: the requests it was already reading when the
    first unit of a batch arrived hand theirs over before the batch closes.

    Why: a batch's fixed cost (its statements, its commit) is several times one unit's share in it: the
    webhook app driven in process spent 0.75 ms of CPU per STOP in batches of 16, 1.0 ms in the batches of 8
    or 9 that taking whatever happened to be queued gave, 1.6 ms in batches of 3 (bench.inbound's docstring).
    Not a timer: the wait is one turn of the event loop, and an idle loop answers at once, so a lone unit is
    not held back."""
    if loop.is_closed():
        return
    turned = threading.Event()
    try:
        loop.call_soon_threadsafe(turned.set)
    except RuntimeError:  # closed meanwhile: nobody is reading requests any more
        return
    # Bounded only so that a loop that is stopped with the callback pending cannot hold the writer forever.
    turned.wait(1.0)


def _run(units: list[Callable[[Connection], Any]], conn: Connection) -> list[Any]:
    """Each unit's result, in order: runs of consecutive units that share a ``run_many`` go together."""
    results: list[Any] = []
    i = 0
    while i < len(units):
        many = getattr(units[i], "run_many", None)
        j = i + 1
        while many is not None and j < len(units) and getattr(units[j], "run_many", None) == many:
            j += 1
        if j - i > 1:
            assert many is not None
            done = many(conn, units[i:j])
            if len(done) != j - i:  # pragma: no cover - a run_many that lost a unit would answer nobody
                raise RuntimeError(f"run_many answered {len(done)} of {j - i} units")
            results.extend(done)
        else:
            results.append(units[i](conn))
        i = j
    return results


def _settle_all(settled: list[tuple[_Item, Any, BaseException | None]]) -> None:
    """Hand each caller its result or exception: one wakeup of each event loop for the whole batch (a wakeup
    per unit was a write to the loop's self-pipe and a callback each, in the thread that holds the GIL)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for (_, loop, future), result, exc in settled:
        by_loop.setdefault(loop, []).append((future, result, exc))
    for loop, outcomes in by_loop.items():
        # RuntimeError: the event loop closed while the units ran (the server stopped): nobody is waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_deliver, outcomes)


def _deliver(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in outcomes:
        if future.cancelled():  # the client went away: the writes stand (a provider retry is a duplicate)
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
