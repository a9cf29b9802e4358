"""Handing checked messages to the provider: up to K calls at once per worker, in a pool of threads.

Why threads (and the providers' synchronous httpx clients): measured against a fake Twilio answering in
150 ms (bench/dispatch.py prints it every run), 100 threads sharing one ``httpx.Client`` reach ~85–90% of
an asyncio + aiohttp loop with 100 in flight, while httpx's async client stays far below (its pool's CPU
cost per request at high concurrency); threads keep one provider module per provider, with one client,
no async twin. K is per provider (adapters/providers/registry.py, ``OPTLINE_SEND_CONCURRENCY``).

The guarantees (services/dispatch.py's docstring has the whole argument) are checked here, at the moment a
call would begin, not when it was queued:
- a call begins only for a message the check transaction marked ``sending`` and committed (the pool
  receives nothing else);
- no call begins at or after its batch's ``deadline`` (the lease minus the longest call: after it another
  worker may reclaim, reconcile and resend) nor more than ``max_check_age`` seconds after its check
  committed: such a message comes back ``expired`` (not attempted) and returns to the queue, to be checked
  again;
- no call begins before its sender's reserved slot (services/sender_limits.py) nor while its sender is
  paused (a 429 here, or one another worker recorded: ``pause``);
- after a configuration error (credentials, From not owned, out of credit) the batch's remaining calls are
  held back, not made to fail the same way.
Each result is put on ``results`` as its call returns; the worker stores it within ~100 ms.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from optline.adapters.providers.base import ErrorKind, OutboundSms, ProviderError, Sender
from optline.domain import retry

# How often a call waiting for its slot or for a pause looks again (a pause may arrive meanwhile).
WAIT_STEP = 0.05


@dataclass(frozen=True)
class Handover:
    """One provider call the check approved."""

    message_id: int
    sms: OutboundSms
    reconcile_since: datetime | None  # set when an earlier hand-over may have reached the provider
    rate_key: str  # the sender number: rate limits and pauses are per sender
    slot: float | None = None  # epoch seconds: the call may not begin earlier (the sender's rate limit)


@dataclass(frozen=True)
class Delivery:
    """What became of one Handover."""

    message_id: int
    provider_id: str | None = None  # accepted now, or found by reconciliation
    error: ProviderError | None = None
    at: datetime | None = None  # when the provider answered
    expired: bool = False  # not attempted: past the deadline or the check-age bound
    # Not attempted either: an earlier call of the batch found the account misconfigured, which every
    # further call would hit too. The error is that call's.
    held_back: ProviderError | None = None
    seconds: float | None = None  # how long the provider took (None: no call was made)


@dataclass
class Run:
    """The limits one batch's calls live under."""

    deadline: float  # time.monotonic(): no call begins at or after it (lease budget)
    checked_at: float  # time.monotonic() when the check transaction committed
    max_check_age: float  # seconds: no call begins later than this after the check
    config_error: ProviderError | None = field(default=None)

    def too_late(self, moment: float) -> bool:
        return moment >= self.deadline or moment - self.checked_at > self.max_check_age


def deliver_one(sender: Sender, item: Handover, now: Callable[[], datetime]) -> Delivery:
    """Reconcile first when an earlier hand-over may have reached the provider, else (or if it did not)
    send. Provider errors become a Delivery; anything else is a bug and propagates."""
    calling = 0.0
    started = time.perf_counter()
    try:
        if item.reconcile_since is not None:
            found = sender.find_sent(item.sms, item.reconcile_since - timedelta(minutes=5))
            calling += time.perf_counter() - started
            if found:
                return Delivery(item.message_id, provider_id=found, at=now(), seconds=calling)
        started = time.perf_counter()
        result = sender.send(item.sms)
    except ProviderError as exc:
        return Delivery(item.message_id, error=exc, at=now(), seconds=calling + time.perf_counter() - started)
    calling += time.perf_counter() - started
    return Delivery(item.message_id, provider_id=result.provider_message_id, at=now(), seconds=calling)


class Pool:
    """K provider calls at once; results on ``results`` as ``(batch key, Delivery)`` as each returns."""

    def __init__(self, sender: Sender, concurrency: int, now: Callable[[], datetime]) -> None:
        self.sender, self.now = sender, now
        self.concurrency = max(1, concurrency)
        self.results: queue.SimpleQueue[tuple[int, Delivery]] = queue.SimpleQueue()
        # K long-lived threads taking calls from one queue (a put per call: cheaper than an executor's
        # future per call, which showed in the worker's profile at hundreds of calls per second).
        self._calls: queue.SimpleQueue[tuple[int, Handover, Run] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._serve, name=f"optline-send-{n}", daemon=True)
                         for n in range(self.concurrency)]  # fmt: skip
        self._paused: dict[str, float] = {}  # sender -> epoch seconds
        self._lock = threading.Lock()
        self._outstanding = 0  # submitted, result not put yet
        for thread in self._threads:
            thread.start()

    @property
    def outstanding(self) -> int:
        with self._lock:
            return self._outstanding

    def submit(self, key: int, items: list[Handover], run: Run) -> None:
        with self._lock:
            self._outstanding += len(items)
        for item in items:
            self._calls.put((key, item, run))

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            self._call(*call)

    def pause(self, sender: str, until: float) -> None:
        """No call from ``sender`` begins before ``until`` (epoch seconds)."""
        with self._lock:
            self._paused[sender] = max(until, self._paused.get(sender, 0.0))

    def paused(self) -> dict[str, float]:
        now = time.time()
        with self._lock:
            return {k: v for k, v in self._paused.items() if v > now}

    def _call(self, key: int, item: Handover, run: Run) -> None:
        try:
            delivery = self._attempt(item, run)
        except BaseException as exc:  # a bug: reported as a retryable error, never a lost result
            delivery = Delivery(item.message_id, error=ProviderError(ErrorKind.RETRY, f"internal error: {exc!r}",
                                                                     code="internal"), at=self.now())  # fmt: skip
        with self._lock:
            self._outstanding -= 1
        self.results.put((key, delivery))

    def _attempt(self, item: Handover, run: Run) -> Delivery:
        while True:
            if run.config_error is not None:
                return Delivery(item.message_id, held_back=run.config_error)
            with self._lock:
                not_before = max(item.slot or 0.0, self._paused.get(item.rate_key, 0.0))
            wait = not_before - time.time()
            if run.too_late(time.monotonic() + max(wait, 0.0)):
                return Delivery(item.message_id, expired=True)
            if wait <= 0:
                break
            time.sleep(min(wait, WAIT_STEP))
        delivery = deliver_one(self.sender, item, self.now)
        error = delivery.error
        if error is not None and error.kind is ErrorKind.BAD_CONFIG and run.config_error is None:
            run.config_error = error
        if error is not None:
            decision = retry.decide(error.kind.value, error.code, 1, error.retry_after, retry.RetryPolicy())
            if decision.verdict is retry.Verdict.THROTTLED and decision.delay is not None:
                self.pause(item.rate_key, time.time() + decision.delay)
        return delivery

    def close(self) -> None:
        """Let every submitted call finish (they were checked and marked ``sending``), then stop."""
        for _ in self._threads:
            self._calls.put(None)  # after every call already queued
        for thread in self._threads:
            thread.join()
