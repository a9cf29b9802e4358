"""A token bucket per sender number: at most ``rate`` messages per second from one worker process.

Carriers rate-limit per number (10DLC throughput, short codes): sending faster only earns errors. Each
worker process keeps its own buckets, so with several workers set the per-worker rate accordingly.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ):
        self._clock, self._sleep = clock, sleep
        self._next: dict[str, float] = {}

    def wait(self, key: str, rate: float | None) -> float:
        """Block until ``key`` may send one more message; returns the seconds waited."""
        if not rate or rate <= 0:
            return 0.0
        now = self._clock()
        at = max(now, self._next.get(key, now))
        self._next[key] = at + 1.0 / rate
        delay = at - now
        if delay > 0:
            self._sleep(delay)
        return delay
