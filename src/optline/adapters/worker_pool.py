"""A pure function over batches in worker processes: results in input order, few batches in flight.

Why processes: parsing a contacts file is pure Python CPU work (phone numbers, dates, JSON) that the GIL
keeps on one core; the database writes stay in the calling process, in order. Why ``forkserver``: the
workers start from a clean process, so they inherit no threads, locks or database connections of the
caller (a web server's upload runs among other threads; forking that could copy a held lock). Memory stays
bounded: at most ``2 × workers`` batches are submitted and not yet taken by the caller.

As with any multiprocessing start method but ``fork``, each worker runs the main module again (as
``__mp_main__``): a script that calls this must keep its work under ``if __name__ == "__main__":``. The
``optline`` commands, ``python -m`` and ``python -c`` need nothing.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

B = TypeVar("B")
R = TypeVar("R")


def default_workers() -> int:
    """One worker per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def ordered_map(
    fn: Callable[[B], R],
    batches: Iterable[B],
    *,
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[tuple[B, R]]:
    """Yield ``(batch, fn(batch))`` in the order of ``batches``; ``fn`` runs in ``workers`` processes.

    ``fn`` and ``initializer`` must be module-level functions (they are pickled by name). An exception in
    ``fn`` is raised here, at its batch; one raised while reading ``batches`` stops the workers too."""
    context = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs)
    pending: deque[tuple[B, Future[R]]] = deque()
    try:
        for batch in batches:
            pending.append((batch, pool.submit(fn, batch)))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
