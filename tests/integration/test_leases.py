"""Leases (adapters/db/leases.py) on both engines: one holder at a time, a dead holder's lease runs out and
is taken over; the retention purge runs in one worker at a time and is never skipped for ever."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select

from optline.adapters.clock import FrozenClock
from optline.adapters.db import leases
from optline.adapters.db.tables import pending_receipts
from optline.adapters.providers.base import StatusUpdate
from optline.bootstrap import Container
from optline.entrypoints import worker
from optline.services import receipts

HOUR = timedelta(hours=1)


def take(container: Container, holder: str, at_minutes: float = 0) -> bool:
    now = container.clock.now() + timedelta(minutes=at_minutes)
    with container.db.transaction() as conn:
        return leases.take(conn, "job", holder, now, HOUR)


def test_one_holder_at_a_time_and_a_dead_holders_lease_runs_out(container: Container) -> None:
    assert take(container, "a")
    assert not take(container, "b") and not take(container, "b", at_minutes=59)
    assert take(container, "a", at_minutes=30)  # the holder renews: now until 1 h 30 min
    assert not take(container, "b", at_minutes=80)
    with container.db.read() as conn:
        assert leases.holder_of(conn, "job", container.clock.now() + timedelta(minutes=80)) == "a"
        assert leases.holder_of(conn, "job", container.clock.now() + timedelta(minutes=90)) is None
    # "a" stopped renewing (it died): at the end of its lease, "b" takes over, and "a" is then refused.
    assert take(container, "b", at_minutes=90)
    assert not take(container, "a", at_minutes=91)
    with container.db.transaction() as conn:  # another lease's name is independent of this one
        assert leases.take(conn, "other", "a", container.clock.now(), HOUR)


def test_concurrent_takers_get_one_lease(container: Container) -> None:
    """Eight processes asking at once (threads with their own connections): exactly one holds it, whether
    the row exists yet (the INSERT race) or has expired (the UPDATE race)."""
    for at_minutes in (0, 61):
        start = threading.Barrier(8)
        won: list[str] = []
        errors: list[BaseException] = []

        def ask(
            name: str,
            at_minutes: float,
            start: threading.Barrier,
            won: list[str],
            errors: list[BaseException],
        ) -> None:
            try:
                start.wait()
                if take(container, name, at_minutes):
                    won.append(name)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [
            threading.Thread(target=ask, args=(f"w{i}", at_minutes, start, won, errors)) for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors and len(won) == 1, (errors, won)


def receipt(container: Container, sid: str) -> None:
    with container.db.transaction() as conn:
        receipts.record_status(conn, container.clock, StatusUpdate("twilio", sid, "undelivered"))


def pending(container: Container) -> int:
    with container.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(pending_receipts)).scalar_one())


def test_one_worker_purges_and_another_takes_over_when_it_dies(
    container: Container, clock: FrozenClock
) -> None:
    receipt(container, "SM-1")
    receipt(container, "SM-2")
    clock.advance(days=container.settings.pending_receipts_retention_days + 1)
    with container.db.transaction() as conn:  # w1 took the lease and died before it purged anything
        assert leases.take(conn, worker.RETENTION_LEASE, "w1", clock.now(), HOUR)
    assert not worker.purge_expired(container, holder="w2")  # w2 leaves it to w1...
    assert pending(container) == 2
    clock.advance(seconds=worker.RETENTION_EVERY_SECONDS - 1)
    assert not worker.purge_expired(container, holder="w2")
    clock.advance(seconds=1)  # ...until w1's lease runs out: w2 takes over
    assert worker.purge_expired(container, holder="w2")
    assert pending(container) == 0
    assert not worker.purge_expired(container, holder="w1")  # w1 is back: w2 holds the lease now
    receipt(container, "SM-3")
    clock.advance(days=container.settings.pending_receipts_retention_days + 1)  # days later: due again
    assert worker.purge_expired(container, holder="w1") and pending(container) == 0
