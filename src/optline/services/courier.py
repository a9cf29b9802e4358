"""Handing checked messages to the provider, one call after another — in the worker's process, or in a
courier process of its own.

Why a process of its own: a worker's database work (claim, the send-time check, composing, recording)
and its provider calls are both Python, and in one process they take turns for one interpreter lock.
Overlapping them with threads was measured to save almost nothing: each time a call waits for the
provider, the check takes the lock, and the call's answer then waits for it. With the calls in a courier
process, the worker claims and checks the next batch and records the last one on another core while the
courier makes the calls (``bench/dispatch.py`` measures both).

What the courier does not change (``services/dispatch.py``'s docstring has the whole argument):
- It receives only messages that the worker's check transaction marked ``sending`` with
  ``handed_over_at`` and committed, and it never touches the database.
- It asks for the next batch (``prefetch``) when the threaded worker would start preparing it — when the
  current batch's remaining calls should take about as long as a claim + check — so a message is still
  checked about one batch's sending time before its hand-over, never earlier.
- It starts no call after the batch's deadline (its lease minus the longest call) and none once its worker
  process is gone: messages it did not call stay ``sending`` until their lease expires, and the next worker
  reconciles them with the provider before any resend.

The courier is ``python -m optline.services.courier`` with one end of a socket pair, speaking
multiprocessing's Connection (pickled messages): worker → courier the SenderFactory first, then
``(batch_id, [Handover], deadline, prepare_seconds)`` per batch, ``None`` to stop; courier → worker
``("ready",)``, ``("prefetch", batch_id)``, ``("delivered", batch_id, Delivery)`` as each call returns (the
worker stores the provider id at once), ``("done", batch_id, [Delivery])`` (all of the batch, the expired
ones included), ``("failed", reason)``.
(Not ``multiprocessing.Process``: its spawn mode re-imports the parent's ``__main__``, which a service's
entry point — or a script embedding the worker — need not be written for; fork copies threads mid-way.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

from optline.adapters.clock import SystemClock
from optline.adapters.providers.base import ErrorKind, OutboundSms, ProviderError, Sender
from optline.services.rate_limit import RateLimiter

# Pipelined workers prepare the next batch when the current one's remaining provider calls should take
# PREFETCH_LEAD times as long as the last claim + check (estimated after PREFETCH_MIN_SAMPLE calls), and at
# the latest alongside the last call.
PREFETCH_LEAD = 1.25
PREFETCH_MIN_SAMPLE = 5
# A new courier is a fresh interpreter importing the provider's client: seconds on a slow machine.
START_TIMEOUT = 120.0

# Builds the provider's Sender inside the courier process; must be picklable (a module-level function or
# a functools.partial of one): the courier is a new interpreter, not a fork.
SenderFactory = Callable[[], Sender]


@dataclass(frozen=True)
class Handover:
    """One provider call the check approved (picklable: it crosses to the courier process)."""

    message_id: int
    sms: OutboundSms
    reconcile_since: datetime | None  # set when an earlier hand-over may have reached the provider
    rate_key: str  # the rate limiter's key: the sender number
    rate: float | None


@dataclass(frozen=True)
class Delivery:
    """What became of one Handover."""

    message_id: int
    provider_id: str | None = None  # accepted now, or found by reconciliation
    error: ProviderError | None = None
    at: datetime | None = None  # when the provider answered
    expired: bool = False  # not attempted: past the batch's deadline, or the worker is gone
    # Not attempted either: an earlier call of the batch found the account misconfigured (bad credentials,
    # out of credit), which every further call would hit too. The error is that call's.
    held_back: ProviderError | None = None
    # How long the provider took to answer (None: no call was made). Measured where the call is made (the
    # courier process, perhaps) and counted by the worker that records the outcome (services/dispatch.py).
    seconds: float | None = None


def prefetch_due(done: int, total: int, elapsed: float, prepare_seconds: float) -> bool:
    """Whether to start preparing the next batch before call number ``done`` (0-based) of ``total``."""
    if done < PREFETCH_MIN_SAMPLE:
        return False
    remaining = (total - done) * elapsed / done
    return remaining <= prepare_seconds * PREFETCH_LEAD or done == total - 1


def deliver_one(
    sender: Sender, limiter: RateLimiter, item: Handover, now: Callable[[], datetime]
) -> Delivery:
    calling = 0.0  # seconds spent in provider calls (not in the rate limiter's wait), for the metrics
    started = time.perf_counter()
    try:
        if item.reconcile_since is not None:
            found = sender.find_sent(item.sms, item.reconcile_since - timedelta(minutes=5))
            calling += time.perf_counter() - started
            if found:
                return Delivery(item.message_id, provider_id=found, at=now(), seconds=calling)
        limiter.wait(item.rate_key, item.rate)
        started = time.perf_counter()
        result = sender.send(item.sms)
    except ProviderError as exc:
        return Delivery(item.message_id, error=exc, at=now(), seconds=calling + time.perf_counter() - started)
    calling += time.perf_counter() - started
    return Delivery(item.message_id, provider_id=result.provider_message_id, at=now(), seconds=calling)


def deliver_all(sender: Sender, limiter: RateLimiter, items: Sequence[Handover], *, deadline: float,
                now: Callable[[], datetime], progress: Callable[[int, float], bool] | None = None,
                on_delivery: Callable[[Delivery], None] | None = None) -> list[Delivery]:  # fmt: skip
    """Hand ``items`` over in order. No call starts at or after ``deadline`` (``time.monotonic()``): once
    the lease can be reclaimed another worker reconciles and may resend, so a call still in flight then
    could become a duplicate. ``progress(done, seconds so far)`` runs before each call; False stops the
    batch (the rest expire). A configuration error (ErrorKind.BAD_CONFIG: credentials, credit) stops it
    too: the rest are held back, not sent to fail the same way. ``on_delivery`` gets each call's result as soon as the call returns, so the
    provider id can be stored at once (a receipt may already be on its way)."""
    deliveries: list[Delivery] = []
    started = time.monotonic()
    going = True
    config_error: ProviderError | None = None
    for done, item in enumerate(items):
        moment = time.monotonic()
        if config_error is not None:
            deliveries.append(Delivery(item.message_id, held_back=config_error))
            continue
        if going and progress is not None:
            going = progress(done, moment - started)
        if going and moment < deadline:
            deliveries.append(deliver_one(sender, limiter, item, now))
            if on_delivery is not None:
                on_delivery(deliveries[-1])
            error = deliveries[-1].error
            if error is not None and error.kind is ErrorKind.BAD_CONFIG:
                config_error = error
        else:
            deliveries.append(Delivery(item.message_id, expired=True))
    return deliveries


class CourierGone(RuntimeError):
    """The courier process exited or failed; the batches it held wait for their lease to expire."""


class Courier:
    """The worker's end of a courier process."""

    def __init__(self, factory: SenderFactory) -> None:
        self._factory = factory
        self._conn: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        if self._process is not None:
            return
        ours, theirs = socket.socketpair()
        # The parent's import path, so the factory's pickle resolves in the child as it does here.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        with theirs:
            process = subprocess.Popen(
                [sys.executable, "-m", "optline.services.courier", str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
        self._conn, self._process = Connection(ours.detach()), process
        try:
            self._conn.send(self._factory)
        except OSError as exc:
            self._reap()
            raise CourierGone(f"the courier process did not start ({exc})") from None
        if self.receive(timeout=START_TIMEOUT)[0] != "ready":
            self.stop()
            raise CourierGone("the courier process did not start")

    def submit(self, batch_id: int, items: list[Handover], deadline: float, prepare_seconds: float) -> None:
        assert self._conn is not None, "start() first"
        try:
            self._conn.send((batch_id, items, deadline, prepare_seconds))
        except OSError as exc:
            self._reap()
            raise CourierGone(f"the courier process is gone ({exc})") from None

    def has_more(self) -> bool:
        """Whether an event is already waiting (the worker then reads it before writing what it has)."""
        return self._conn is not None and self._conn.poll(0)

    def receive(self, timeout: float | None = None) -> tuple[Any, ...]:
        conn = self._conn
        assert conn is not None, "start() first"
        try:
            if timeout is not None and not conn.poll(timeout):
                self._reap()
                raise CourierGone(f"the courier process did not answer within {timeout:.0f}s")
            event: tuple[Any, ...] = conn.recv()
        except (EOFError, OSError):
            code = self._reap()
            raise CourierGone(f"the courier process exited (exit code {code})") from None
        if event[0] == "failed":
            self._reap()
            raise CourierGone(f"the courier process failed: {event[1]}")
        return event

    def stop(self) -> None:
        """Ask the courier to finish (it completes the batches it holds first) and wait for it."""
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
        self._reap(wait=30.0)

    def _reap(self, wait: float = 5.0) -> int | None:
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        try:
            return process.wait(wait)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(5)


def _serve(conn: Connection, worker_pid: int) -> None:
    """The courier process: make the calls of each batch it receives, report back, until told to stop."""
    # The worker coordinates shutdown (it stops submitting, then closes the pipe): a Ctrl-C or a service
    # manager's SIGTERM sent to the whole process group must not cut a batch off half way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        factory: SenderFactory = conn.recv()
        sender = factory()
    except Exception as exc:
        conn.send(("failed", f"could not build the provider's sender: {type(exc).__name__}: {exc}"))
        return
    limiter = RateLimiter()  # per sender number, per worker: the courier is the worker's only caller
    clock = SystemClock()
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        try:
            conn.send(("done", message[0], _deliver(conn, sender, limiter, clock, worker_pid, *message)))
        except (BrokenPipeError, EOFError):
            return
        except Exception:  # a bug, not a provider error (those are Deliveries): report it and stop
            conn.send(("failed", traceback.format_exc(limit=8)))
            return


def _deliver(conn: Connection, sender: Sender, limiter: RateLimiter, clock: SystemClock, worker_pid: int,
             batch_id: int, items: list[Handover], deadline: float, prepare_seconds: float) -> list[Delivery]:  # fmt: skip
    asked = False

    def progress(done: int, elapsed: float) -> bool:
        nonlocal asked
        if os.getppid() != worker_pid:  # orphaned: the worker died; start no more calls
            return False
        if not asked and prefetch_due(done, len(items), elapsed, prepare_seconds):
            asked = True
            conn.send(("prefetch", batch_id))
        return True

    def delivered(delivery: Delivery) -> None:
        conn.send(("delivered", batch_id, delivery))

    return deliver_all(sender, limiter, items, deadline=deadline, now=clock.now, progress=progress,
                       on_delivery=delivered)  # fmt: skip


if __name__ == "__main__":
    # Through the imported module, not this __main__ copy: what it pickles back must name
    # optline.services.courier's classes.
    from optline.services import courier

    courier._serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
