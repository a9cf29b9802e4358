"""Per-sender rate limits as virtual scheduling (GCRA), pure: which start times a batch may use.

A sender (a phone number, short code or alphanumeric ID) may start one message every ``1 / rate`` seconds.
The shared state is one number per sender, ``next_free``: the earliest time the next message may start.
Reserving ``n`` messages hands out the slots ``start, start + 1/rate, …`` that fall inside the window
(``now + horizon``) and moves ``next_free`` past the last one. Whoever holds the state's lock (a database
row, services/sender_limits.py) therefore never hands the same slot out twice: N workers together start at
most ``rate`` messages per second from one sender. Slots that go unused (the message was then suppressed,
the worker crashed) are simply lost: the sender runs slower, never faster.

A provider that answers 429 sets ``paused_until``: no slot before it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reservation:
    slots: list[float]  # start times (epoch seconds), one per message that may go; len <= n
    next_free: float  # the new shared state


def reserve(
    next_free: float, paused_until: float, now: float, rate: float, n: int, horizon: float
) -> Reservation:
    """Up to ``n`` start times at ``rate`` per second, none at or after ``now + horizon``.

    An idle sender does not bank credit: the first slot is never earlier than ``now``.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, not {rate}")
    interval = 1.0 / rate
    start = max(now, next_free, paused_until)
    slots: list[float] = []
    t = start
    while len(slots) < n and t < now + horizon:
        slots.append(t)
        t = start + len(slots) * interval  # multiplied, not summed: no drift below the interval
    return Reservation(slots, t if slots else next_free)


def pause(next_free: float, paused_until: float, until: float) -> tuple[float, float]:
    """The state after a provider asked this sender to wait until ``until``: (next_free, paused_until)."""
    until = max(paused_until, until)
    return max(next_free, until), until
