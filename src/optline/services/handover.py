"""Handing checked messages to the provider: up to K calls at once per worker, on one asyncio event loop.

Why an event loop with aiohttp (adapters/providers/http_errors.py has the figures): against a fake Twilio
answering in 150 ms with 100 calls in flight, a call costs ~0.45 CPU ms there and 2–5 ms on threads with
httpx, and the worker shares its cores with the database; the loop runs in one thread of its own while
the dispatching thread claims and checks and the recorder thread stores. K is per provider
(adapters/providers/registry.py, ``OPTLINE_SEND_CONCURRENCY``): K tasks take calls from one queue, in
the order submitted (replies first), over one session holding up to K connections.

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

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp

from optline.adapters.providers import http_errors
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
    reply: bool = False  # the reply lane (outbox.REPLY_LANE): taken before every campaign call queued


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


async def deliver_one(
    http: aiohttp.ClientSession, sender: Sender, item: Handover, now: Callable[[], datetime]
) -> Delivery:
    """Reconcile first when an earlier hand-over may have reached the provider, else (or if it did not)
    send. Provider errors become a Delivery; anything else is a bug and propagates."""
    calling = 0.0
    started = time.perf_counter()
    try:
        if item.reconcile_since is not None:
            found = await sender.find_sent(http, item.sms, item.reconcile_since - timedelta(minutes=5))
            calling += time.perf_counter() - started
            if found:
                return Delivery(item.message_id, provider_id=found, at=now(), seconds=calling)
        started = time.perf_counter()
        result = await sender.send(http, item.sms)
    except ProviderError as exc:
        return Delivery(item.message_id, error=exc, at=now(), seconds=calling + time.perf_counter() - started)
    calling += time.perf_counter() - started
    return Delivery(item.message_id, provider_id=result.provider_message_id, at=now(), seconds=calling)


def deliver_now(sender: Sender, item: Handover, now: Callable[[], datetime]) -> Delivery:
    """One hand-over from synchronous code (tests, the demo), on a session of its own."""
    return http_errors.run(lambda http: deliver_one(http, sender, item, now))


_Call = tuple[int, Handover, Run]


class Pool:
    """K provider calls at once on an event loop in a thread of its own; results on ``results`` as
    ``(batch key, Delivery)`` as each returns. ``submit``, ``pause`` and ``close`` are called from other
    threads."""

    def __init__(self, sender: Sender, concurrency: int, now: Callable[[], datetime]) -> None:
        self.sender, self.now = sender, now
        self.concurrency = max(1, concurrency)
        self.results: queue.SimpleQueue[tuple[int, Delivery]] = queue.SimpleQueue()
        self._paused: dict[str, float] = {}  # sender -> epoch seconds
        self._lock = threading.Lock()
        self._outstanding = 0  # submitted, result not put yet
        self._loop = asyncio.new_event_loop()
        # Calls waiting for a task: (lane, order of submission, call), replies (lane 0) first, then the
        # rest in the order submitted; the stop marks (lane 2) after everything. Made on the loop.
        self._calls: asyncio.PriorityQueue[tuple[int, int, _Call | None]] | None = None
        self._submitted = 0
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="optline-send", daemon=True)
        self._thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve(started))
        self._loop.close()

    async def _serve(self, started: threading.Event) -> None:
        self._calls = asyncio.PriorityQueue()
        started.set()
        async with http_errors.session(self.concurrency) as http:
            # K long-lived tasks taking calls from one queue. A reply checked after a campaign's calls were
            # queued still goes before them: a STOP's confirmation waits for a free task, not for a batch.
            await asyncio.gather(*(self._take(http) for _ in range(self.concurrency)))

    async def _take(self, http: aiohttp.ClientSession) -> None:
        assert self._calls is not None
        while (call := (await self._calls.get())[2]) is not None:
            await self._call(http, *call)

    @property
    def outstanding(self) -> int:
        with self._lock:
            return self._outstanding

    def submit(self, key: int, items: list[Handover], run: Run) -> None:
        with self._lock:
            self._outstanding += len(items)
        calls: list[_Call | None] = [(key, item, run) for item in items]
        self._loop.call_soon_threadsafe(self._enqueue, calls)

    def _enqueue(self, calls: list[_Call | None]) -> None:
        assert self._calls is not None
        for call in calls:
            self._submitted += 1
            lane = 2 if call is None else 0 if call[1].reply else 1
            self._calls.put_nowait((lane, self._submitted, call))

    def pause(self, sender: str, until: float) -> None:
        """No call from ``sender`` begins before ``until`` (epoch seconds)."""
        with self._lock:
            self._paused[sender] = max(until, self._paused.get(sender, 0.0))

    def paused(self) -> dict[str, float]:
        now = time.time()
        with self._lock:
            return {k: v for k, v in self._paused.items() if v > now}

    async def _call(self, http: aiohttp.ClientSession, key: int, item: Handover, run: Run) -> None:
        try:
            delivery = await self._attempt(http, item, run)
        except Exception as exc:  # a bug: reported as a retryable error, never a lost result
            # It may have struck after the request went out: the retry reconciles first, as after a timeout.
            error = ProviderError(
                ErrorKind.RETRY, f"internal error: {exc!r}", code="internal", outcome_unknown=True
            )
            delivery = Delivery(item.message_id, error=error, at=self.now())
        with self._lock:
            self._outstanding -= 1
        self.results.put((key, delivery))

    async def _attempt(self, http: aiohttp.ClientSession, item: Handover, run: Run) -> Delivery:
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
            await asyncio.sleep(min(wait, WAIT_STEP))
        delivery = await deliver_one(http, self.sender, item, self.now)
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
        if self._thread.is_alive():
            stops: list[_Call | None] = [None] * self.concurrency  # after every call already queued
            self._loop.call_soon_threadsafe(self._enqueue, stops)
            self._thread.join()
