"""The pages' rate limits live in the database: a sliding window per client that every process shares."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from optline.adapters.db.tables import rate_limit_hits
from optline.bootstrap import Container, build
from optline.entrypoints.web.security import RateLimiter


def test_sliding_window_per_key(container: Container) -> None:
    limiter = RateLimiter(container.db, "login", limit=3, window_seconds=60)
    assert [limiter.hit("ip", now=t) for t in (0, 1, 2)] == [None, None, None]
    assert limiter.hit("ip", now=3) == 57  # wait until the first hit leaves the window
    assert limiter.hit("other", now=3) is None  # per key
    assert (
        RateLimiter(container.db, "optout", limit=3, window_seconds=60).hit("ip", now=3) is None
    )  # per bucket
    assert limiter.hit("ip", now=60.5) is None
    with container.db.read() as conn:  # the hit that left the window was deleted by the next hit of its key
        assert (
            conn.execute(select(func.min(rate_limit_hits.c.at)).where(rate_limit_hits.c.key == "ip")).scalar()
            == 1
        )


def test_two_processes_share_one_window(container: Container) -> None:
    """Two containers on one database stand for two ``serve`` processes; concurrent hits never exceed the
    limit between them (PostgreSQL: the key's advisory lock; SQLite: one writer at a time)."""
    other = build(container.settings, clock=container.clock)
    try:
        limiters = [RateLimiter(c.db, "login", limit=10, window_seconds=300) for c in (container, other)]
        answers: list[float | None] = []
        lock = threading.Lock()

        def attempt(limiter: RateLimiter) -> None:
            for _ in range(6):
                wait = limiter.hit("203.0.113.7", now=1000.0)
                with lock:
                    answers.append(wait)

        threads = [threading.Thread(target=attempt, args=(lim,)) for lim in limiters]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers.count(None) == 10 and len(answers) == 12
        assert limiters[1].hit("203.0.113.7", now=1000.0) == 300
    finally:
        other.close()
