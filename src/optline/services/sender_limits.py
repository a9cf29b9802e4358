"""Per-sender rate limits that hold across every worker process and machine: the sender's token bucket
lives in the database (``sender_limits``), as virtual scheduling (domain/send_rate.py).

Why a database bucket rather than one worker owning a sender through an advisory lock: a campaign's
messages all come from one or two numbers, so an owner would make one worker the whole campaign's
throughput (the others idle), and SQLite has no advisory locks. A reservation is one short transaction
per sender per batch (not per message): the worker locks the sender's row, takes the slots its batch can
use inside the send window and moves ``next_free`` past them, and commits before the send-time check, so
workers never wait on each other for longer than that one UPDATE. Clocks: slots are wall-clock epoch
seconds, so the machines of one installation must keep their clocks in sync (NTP); a skew of ``s`` seconds
lets two machines overlap by at most ``s * rate`` messages once.

A provider that answers 429 / "queue full" pauses the sender for its Retry-After (``pause``): every
worker's next reservation starts after it, and workers with calls in flight read it back within
``STREAM_INTERVAL`` (``paused_until``) and hold their remaining calls for that sender.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from optline.adapters.db.tables import sender_limits
from optline.domain import send_rate


def _ensure(conn: Connection, senders: Iterable[str]) -> None:
    rows = [{"sender": s, "next_free": 0.0, "paused_until": 0.0} for s in sorted(set(senders))]
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(sender_limits).values(rows).on_conflict_do_nothing(index_elements=["sender"]))


def reserve(
    conn: Connection, wanted: dict[str, tuple[float, int, int]], now: float, horizon: float
) -> dict[str, tuple[list[float], list[float]]]:
    """Slots for each sender: ``wanted`` = {sender: (rate per second, replies, other messages)}; returns
    their start times (epoch seconds; fewer than asked when the window is full). Call in a transaction of
    its own.

    Replies (opt-out confirmations, HELP) may use the whole window; other messages only its first half. So
    however many workers keep a sender busy with a campaign, ``next_free`` stays within half a window of
    now, and a reply always finds a slot in this batch: a campaign cannot starve the reply lane."""
    if not wanted:
        return {}
    _ensure(conn, wanted)
    stmt = (
        select(sender_limits.c.sender, sender_limits.c.next_free, sender_limits.c.paused_until)
        .where(sender_limits.c.sender.in_(sorted(wanted)))
        .order_by(sender_limits.c.sender)  # one lock order for every worker: no deadlock
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    out: dict[str, tuple[list[float], list[float]]] = {}
    for row in conn.execute(stmt).all():
        rate, replies, rest = wanted[row.sender]
        first = send_rate.reserve(row.next_free, row.paused_until, now, rate, replies, horizon)
        then = send_rate.reserve(first.next_free, row.paused_until, now, rate, rest, horizon / 2)
        out[row.sender] = (first.slots, then.slots)
        if then.next_free != row.next_free:
            conn.execute(
                update(sender_limits)
                .where(sender_limits.c.sender == row.sender)
                .values(next_free=then.next_free)
            )
    return out


def pause(conn: Connection, sender: str, until: float, reason: str) -> None:
    """The provider asked this sender to wait until ``until`` (epoch seconds): no worker starts a call
    from it before then."""
    _ensure(conn, [sender])
    stmt = select(sender_limits.c.next_free, sender_limits.c.paused_until).where(
        sender_limits.c.sender == sender
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).one()
    next_free, paused_until = send_rate.pause(row.next_free, row.paused_until, until)
    conn.execute(
        update(sender_limits)
        .where(sender_limits.c.sender == sender)
        .values(next_free=next_free, paused_until=paused_until, pause_reason=reason[:300])
    )


def paused_until(conn: Connection, senders: Iterable[str], now: float) -> dict[str, float]:
    """The senders among ``senders`` that are paused now, and until when."""
    keys = sorted(set(senders))
    if not keys:
        return {}
    rows = conn.execute(
        select(sender_limits.c.sender, sender_limits.c.paused_until).where(
            sender_limits.c.sender.in_(keys), sender_limits.c.paused_until > now
        )
    )
    return {r.sender: r.paused_until for r in rows}
