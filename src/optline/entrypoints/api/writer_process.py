"""The webhooks' group commit in a process of its own (``optline serve``).

Why: in one process the event loop and the group commit's writer thread share one GIL. Over HTTP a STOP
cost ~1.5 ms of CPU in all, of which the HTTP side (uvicorn, the webhook lane, verifying and parsing) was
~0.5 ms: a webhook path with its writes taken away answered 85% of the bare endpoint's requests/s, the real
one 25-30% (bench.inbound, same run). Here the HTTP process verifies and parses, then hands the parsed reply
(a small picklable ``job``) over a pipe; the writer process batches, commits and answers; the HTTP process
answers 2xx only after the writer said committed (invariant 3).

If the writer dies, every request waiting on it gets an error (its webhook answers 500: the provider
retries; a unit that had committed is then a duplicate, answered 200), and the next request starts a new
writer. The writer's own GroupCommit keeps every other guarantee (adapters/db/group_commit.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import threading
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("optline.writer_process")


class WriterGone(RuntimeError):
    """The writer process ended before it answered: the unit's fate is unknown, its caller answers 5xx."""


class WriterProcess:
    """``run(unit)`` as GroupCommit's, with the unit's ``job`` recorded in the writer process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: Any = None
        self._pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self._ids = itertools.count()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The running writer's process id (None before the first start and after it ended)."""
        with self._lock:
            return self._process.pid if self._conn is not None and self._process is not None else None

    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise WriterGone("the webhook writer was stopped (the server is shutting down)")
            if self._conn is not None:
                return
            ctx = multiprocessing.get_context(
                "spawn"
            )  # not fork: the parent has threads and open connections
            # Two one-way pipes, not one two-way: closing the jobs' end is how the writer is told to finish,
            # and an end that a thread is blocked reading (the replies') cannot be closed under it on Linux.
            jobs_in, jobs_out = ctx.Pipe(duplex=False)
            replies_in, replies_out = ctx.Pipe(duplex=False)
            process = ctx.Process(
                target=_writer_main, args=(jobs_in, replies_out), name="optline-webhook-writer", daemon=True
            )
            process.start()
            jobs_in.close()
            replies_out.close()
            self._conn, self._process = jobs_out, process
            threading.Thread(
                target=self._read,
                args=(replies_in, jobs_out, process),
                name="optline-writer-replies",
                daemon=True,
            ).start()

    async def run(self, unit: Any) -> Any:
        """The unit's result once the writer committed it; ``WriterGone`` if the writer ended first."""
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        rid = next(self._ids)
        with self._lock:
            conn = self._conn
            if conn is None:
                raise WriterGone("the webhook writer ended")
            self._pending[rid] = (loop, future)
        try:
            conn.send((rid, unit.job))
        except (OSError, ValueError) as exc:  # the pipe broke: the writer is gone (the reader fails the rest)
            with self._lock:
                self._pending.pop(rid, None)
            raise WriterGone("the webhook writer ended") from exc
        return await future

    def _read(self, replies_in: Connection, jobs_out: Connection, process: Any) -> None:
        while True:
            try:
                replies = replies_in.recv()
            except (EOFError, OSError):
                break
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
            with self._lock:
                for rid, ok, value in replies:
                    item = self._pending.pop(rid, None)
                    if item is not None:
                        by_loop.setdefault(item[0], []).append((item[1], ok, value))
            for loop, outcomes in by_loop.items():
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                    loop.call_soon_threadsafe(_deliver, outcomes)
        process.join()
        replies_in.close()
        with self._lock:
            if self._conn is jobs_out:
                self._conn = None
                jobs_out.close()
            lost, self._pending = self._pending, {}
        if not self._closed:
            log.error(
                "the webhook writer process ended (exit code %s); %d requests answered 500, the next one starts a new writer",
                process.exitcode,
                len(lost),
            )
        for loop, future in lost.values():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(
                    _deliver, [(future, False, "the webhook writer ended before it answered")]
                )

    def close(self) -> None:
        """Stop the writer once it has answered everything sent to it (the server drained its requests)."""
        with self._lock:
            self._closed = True
            conn, process = self._conn, self._process
        if conn is not None:
            conn.close()  # the writer reads the end of its input, finishes what it holds, and exits
        if process is not None:
            process.join(30)
            if process.is_alive():
                process.kill()


def _deliver(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(WriterGone(value))


def _writer_main(jobs: Connection, replies: Connection) -> None:
    """The writer process: the container from the environment (as ``serve --workers`` processes build theirs),
    a GroupCommit, and the jobs of the pipe recorded through it."""
    from optline.bootstrap import build
    from optline.logs import configure

    container = build()
    configure(container.settings.effective_log_format)
    try:
        asyncio.run(_serve(container, jobs, replies))
    finally:
        container.close()


async def _serve(container: Any, jobs: Connection, replies: Connection) -> None:
    from optline.adapters.db.group_commit import GroupCommit
    from optline.entrypoints.api.webhooks import unit_for
    from optline.logs import describe

    group = GroupCommit(container.db)
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    outbox: list[tuple[int, bool, Any]] = []

    def flush() -> None:
        # One write for every answer ready in this turn of the loop (a batch settles all at once).
        if outbox:
            replies.send(list(outbox))
            outbox.clear()

    async def one(rid: int, job: Any) -> None:
        answer: tuple[int, bool, Any]
        try:
            result = await group.run(unit_for(container, job))
            answer = (rid, True, result)
        except Exception as exc:  # not committed: the caller answers 5xx
            answer = (rid, False, describe(exc))
        if not outbox:
            loop.call_soon(flush)
        outbox.append(answer)

    def received(messages: list[tuple[int, Any]]) -> None:
        for rid, job in messages:
            task = loop.create_task(one(rid, job))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def reader() -> None:
        while True:
            try:
                batch = [jobs.recv()]
                while jobs.poll():
                    batch.append(jobs.recv())
            except (EOFError, OSError):
                loop.call_soon_threadsafe(ended.set)
                return
            loop.call_soon_threadsafe(received, batch)

    threading.Thread(target=reader, name="optline-writer-jobs", daemon=True).start()
    await ended.wait()
    while tasks:  # what was sent before the end is recorded and answered
        await asyncio.gather(*tasks, return_exceptions=True)
    flush()
