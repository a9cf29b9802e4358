"""Dispatch: claim queued messages, run the send-time check, hand them to the provider, record the outcome.

One batch goes through three short transactions and the provider calls between them:

1. **claim** — (batches are sized by time: ``batch_seconds`` of calls at the rate the worker is reaching,
   at most ``batch_size``) ``UPDATE messages SET status='claimed', lease… WHERE id IN (SELECT … LIMIT n)``; on
   PostgreSQL the inner SELECT is ``FOR UPDATE SKIP LOCKED`` so any number of workers on any number of
   machines take disjoint batches; on SQLite the write lock (``BEGIN IMMEDIATE``) serialises claimers.
   Leases expire: a claimed or sending message whose worker died is reclaimed by another worker.
   Two lanes (``messages.priority``, outbox.REPLY_LANE): replies — opt-out confirmations, HELP, sign-up
   prompts — are claimed first, through a partial index of their own, so a 100k campaign in the queue
   never holds a confirmation back; campaign messages fill the rest of the batch.
2. **check** — THE SEND-TIME CHECK (DESIGN.md invariant 2), quiet hours, caps, composition, and marking
   the message ``sending`` with ``handed_over_at`` — all in one transaction that starts after the claim
   committed. Only messages marked ``sending`` by this transaction are handed to the provider.
3. **record** — provider answers become ``sent`` / retry later / ``failed`` / opted out at the provider,
   stored as each call returns (in writes at most ``STREAM_INTERVAL`` apart, as the event loop hands
   them back), so a delivery receipt finds its message; one that still comes first is kept and applied
   in the transaction that stores the id (``services/receipts.py``).

Every status write is guarded (``_write``: ``WHERE status = <expected> AND lease_owner = <this worker>``):
a row cancelled, paused back to the queue or reclaimed by another worker since our claim is left alone,
not handed over, and counted as ``lost``. The campaigns of the messages about to be marked ``sending``
are re-read (FOR SHARE on PostgreSQL) just before that write, so a pause or cancel committed during the
check wins over it.

Why an opt-out committed before the check can never be missed:
- ``services.consent.record`` writes the ledger event and the ``subscriptions`` projection in ONE
  transaction, so once an opt-out is committed the projection says ``unsubscribed`` (no lag, no cache).
- The check re-reads that projection in a transaction that begins after the claim committed: nothing read
  before the claim (audience snapshot, queue contents) is trusted. On SQLite the check transaction holds
  the database write lock from its first statement (BEGIN IMMEDIATE), so it sees every committed
  transaction and none can commit between the read and the ``sending`` mark. On PostgreSQL (READ
  COMMITTED) each statement sees every transaction committed before it started, and the rows are read
  ``FOR SHARE``: an opt-out that already updated the row but has not committed yet makes the check wait
  and then read the committed opt-out; an opt-out that starts after the check waits for the check to
  commit, i.e. it is later than the check.
- The provider is called only after the check transaction committed, and only for the rows it marked.
  Retries, lease reclaims and resumes all re-enter through claim → check: no path reaches the provider
  without passing a check made after its own claim.

Message kinds (``services.outbox``): confirmation/help/signup are replies to the person and bypass consent,
quiet hours and caps; transactional needs consent not revoked and respects quiet hours; marketing needs
subscribed-with-evidence, not held, quiet hours, state limits and the program's frequency cap.

Where the calls run (services/handover.py): K calls at once per worker (K per provider, ``concurrency``) on
an asyncio event loop with aiohttp, in a thread of its own, while this thread claims and checks and the
recorder thread stores; replies are taken before campaign calls already queued. The pool receives only messages the check
transaction marked ``sending`` and committed, so everything above holds unchanged; in addition no call
begins at or after its batch's deadline (its lease minus the longest call) nor more than ``send_window``
seconds after its check committed (THE BOUND: 5 s by default), nor before its sender's reserved slot. The
next batch is claimed and checked when the pool is about to run out of calls (``_topping_up``), never
earlier, so a message waits at most about one batch (``batch_seconds``) between its check and its call.

Rate limits (services/sender_limits.py): per sender, in the database, so they hold across workers and
machines. A batch reserves its senders' slots right after the claim (its own short transaction); what has
no slot inside ``send_window`` goes back to the queue unchecked, due when its sender's next slot is. A 429
pauses the sender for every worker; a configuration error pauses the campaign with its reason.

Beside the webhooks (``serve`` on SQLite, one write lock for both): before each write transaction the worker
lets the webhook units already waiting commit first (bounded: adapters/db/group_commit.py ``give_way``),
and while any wait its claims, checks and stores take at most ``YIELD_BATCH`` messages each, so a STOP
waits behind a few messages' transaction, not a batch of hundreds. Every rule above holds per transaction:
each part is checked after its claim committed, and a batch's calls are bounded from its first check.

Exactly once: ``handed_over_at`` is written before the provider call. A message found with it set (a retry
after a timeout/5xx, or a reclaim after a crash) is first reconciled with the provider
(``Sender.find_sent``); only when the provider has no record of it is it sent again — after passing the
check again. Telnyx also receives the message's idempotency key as ``Idempotency-Key``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import func, select

from optline.adapters.clock import Clock, as_utc
from optline.adapters.db.database import Database
from optline.adapters.db.tables import messages
from optline.adapters.providers.base import Sender
from optline.services import recording, sender_limits
from optline.services.dispatch_model import (
    PERSON_COLUMNS,
    SEND_MARGIN,
    STREAM_INTERVAL,
    YIELD_BATCH,
    Batch,
    Counts,
    DispatchConfig,
    ToSend,
    WebhookWrites,
    default_worker_id,
    rate_key,
)
from optline.services.handover import Delivery, Pool, Run
from optline.services.recording import Recording
from optline.services.send_check import HANDED_OVER, History, SendCheck

log = logging.getLogger("optline.dispatch")

ACTIVE = ("queued", "claimed", "sending", "deferred")  # not finished yet
__all__ = [
    "ACTIVE",
    "HANDED_OVER",
    "PERSON_COLUMNS",
    "SEND_MARGIN",
    "Counts",
    "DispatchConfig",
    "Dispatcher",
    "History",
    "ToSend",
    "rate_key",
]
# The latency assumed for the first batch's size, before any call was timed (seconds).
FIRST_LATENCY_GUESS = 0.2
_STOP = -1  # the batch key that tells the recorder thread to finish


class Dispatcher(SendCheck, Recording):
    def __init__(
        self,
        db: Database,
        clock: Clock,
        sender: Sender,
        config: DispatchConfig | None = None,
        worker_id: str | None = None,
        webhooks: WebhookWrites | None = None,
    ) -> None:
        """``webhooks``: the webhooks' writes that share this process and the database's one write lock
        (``serve`` on SQLite): while they wait, this worker writes a few messages per transaction and lets
        them commit first (``_give_way``, ``_write_size``)."""
        self.db, self.clock, self.sender = db, clock, sender
        self.config = config or DispatchConfig()
        self.worker_id = worker_id or default_worker_id()
        self.webhooks = webhooks
        self._pool: Pool | None = None
        self._in_flight: dict[int, Batch] = {}  # submitted to the pool, not all recorded yet (oldest first)
        self._batch_ids = 0
        self._latency = FIRST_LATENCY_GUESS  # moving average of the provider's answer time
        self._prepare_seconds = 0.0  # how long the last claim + check took
        # The recorder thread (_record_loop) stores results; this thread claims, checks and submits.
        # _lock guards _in_flight and _recorded; _stored is notified after each store.
        self._lock = threading.Lock()
        self._stored = threading.Condition(self._lock)
        self._recorded = Counts()  # stored by the recorder, not yet returned by run_once
        self._recorder: threading.Thread | None = None
        self._recorder_error: Exception | None = None

    def start(self) -> None:
        """Start the pool of provider calls now (else it starts with the first batch)."""
        self._the_pool()

    def _the_pool(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(self.sender, self.config.concurrency, self.clock.now)
            self._recorder = threading.Thread(
                target=self._record_loop, args=(self._pool,), name="optline-record", daemon=True
            )
            self._recorder.start()
        return self._pool

    def run_once(self, *, top_up: bool = True) -> Counts:
        """Take one batch all the way: claim, check, hand over (K calls at once), record as the calls
        return (claimed == 0 and nothing in flight: the queue is idle). Returns the counts of this batch's
        claim and check and of every result stored since the last call.

        While its calls are in flight, the NEXT batch is claimed and checked once the pool is about to run
        out of calls (``_topping_up``), and submitted behind it; it is the next call's batch. So the pool
        stays busy, and a message is still checked only about one batch's time before its call. Results
        are stored by a recorder thread (``_record_loop``) as they arrive, so storing never holds up
        the next claim and check.
        """
        counts = Counts()
        pool = self._the_pool()
        self._raise_recorder_error()
        with self._lock:  # (the recorder may finish the head batch at any moment: read it once)
            head_id = next(iter(self._in_flight), None)
        if head_id is None:
            batch = self._prepare()
            counts.add(batch.counts)
            if not batch.to_send:
                self._settle(batch, counts)
                return self._collect(counts)
            head_id = self._submit(pool, batch)
        asked = not top_up
        while True:
            with self._lock:
                if head_id not in self._in_flight:
                    break
            self._raise_recorder_error()
            if not asked and self._topping_up(pool):
                asked = True
                batch = self._prepare()
                counts.add(batch.counts)
                if batch.to_send:
                    self._submit(pool, batch)
                else:
                    self._settle(batch, counts)
                continue
            with self._stored:
                if head_id in self._in_flight:
                    self._stored.wait(STREAM_INTERVAL / 4)
        return self._collect(counts)

    def _collect(self, counts: Counts) -> Counts:
        with self._lock:
            counts.add(self._recorded)
            self._recorded = Counts()
        return counts

    def _raise_recorder_error(self) -> None:
        error, self._recorder_error = self._recorder_error, None
        if error is not None:
            raise error

    def _record_loop(self, pool: Pool) -> None:
        """The recorder thread: store results as they arrive, in writes at most STREAM_INTERVAL apart (and
        at once when they complete a batch). A failed write keeps its results for the next try and is
        reported to the dispatching thread (the worker logs it and carries on)."""
        fresh: list[tuple[int, Delivery]] = []
        oldest = 0.0  # when the oldest result not stored yet arrived
        while True:
            wait = STREAM_INTERVAL if not fresh else max(0.0, oldest + STREAM_INTERVAL - time.monotonic())
            try:
                got = pool.results.get(timeout=wait)
                if got[0] == _STOP:
                    if not fresh:
                        return
                    pool.results.put(got)  # store what is left first
                else:
                    if not fresh:
                        oldest = time.monotonic()
                    fresh.append(got)
                while True:
                    got = pool.results.get_nowait()
                    if got[0] == _STOP:
                        pool.results.put(got)
                        break
                    fresh.append(got)
            except queue.Empty:
                pass
            if fresh and (time.monotonic() - oldest >= STREAM_INTERVAL or self._completes(fresh)):
                try:
                    stored = self._store(fresh)
                except Exception as exc:  # _store put the results back
                    log.exception("storing %d provider results failed; retrying", len(fresh))
                    self._recorder_error = exc
                    fresh = []
                    time.sleep(0.5)
                    continue
                fresh = []
                with self._stored:
                    self._recorded.add(stored)
                    self._stored.notify_all()

    def _topping_up(self, pool: Pool) -> bool:
        """Whether to prepare the next batch now: only one is queued behind the head, and the pool's calls
        left would be used up in about the time a claim + check takes."""
        with self._lock:
            if len(self._in_flight) > 1:
                return False
        rate = pool.concurrency / max(self._latency, 1e-3)
        return pool.outstanding <= pool.concurrency + rate * self._prepare_seconds

    def _completes(self, fresh: list[tuple[int, Delivery]]) -> bool:
        with self._lock:
            if not self._in_flight:
                return True
            head_id, head = next(iter(self._in_flight.items()))
        mine = sum(1 for k, _ in fresh if k == head_id)
        return len(head.recorded) + mine >= len(head.to_send)

    def _store(self, fresh: list[tuple[int, Delivery]]) -> Counts:
        """Store the results that arrived (one transaction, or several small ones while webhooks wait);
        finish the batches they complete."""
        counts = Counts()
        while fresh:
            size = self._write_size(len(fresh))
            part, fresh = fresh[:size], fresh[size:]
            by_batch: dict[int, list[Delivery]] = defaultdict(list)
            for key, delivery in part:
                by_batch[key].append(delivery)
            try:
                self._give_way()
                self._store_in(by_batch, counts)
            except BaseException:
                # Not stored (the database is away): the results go back, to be stored on the next try; if
                # this process dies instead, the rows stay 'sending' and the next claim reconciles them.
                for got in part + fresh:
                    self._the_pool().results.put(got)
                raise
        return counts

    def _give_way(self) -> None:
        """Before a write transaction: webhooks already waiting for the write lock commit first."""
        if self.webhooks is not None:
            self.webhooks.give_way()

    def _write_size(self, wanted: int) -> int:
        """How many messages the next write transaction takes: all of them, or YIELD_BATCH while webhooks
        wait for the same write lock (so none waits behind a transaction of hundreds)."""
        if self.webhooks is not None and self.webhooks.waiting():
            return min(wanted, YIELD_BATCH)
        return wanted

    def _store_in(self, by_batch: dict[int, list[Delivery]], counts: Counts) -> Counts:
        with self._lock:
            batches = dict(self._in_flight)
        with self.db.transaction() as conn:
            for key, deliveries in by_batch.items():
                batch = batches[key]
                by_id = {i.row["id"]: i for i in batch.to_send}
                items = [by_id[d.message_id] for d in deliveries]
                self.record(conn, items, [self._outcome(by_id[d.message_id], d) for d in deliveries], counts)
                batch.recorded.update(i.row["id"] for i in items)
            # A 429 another worker recorded pauses our calls from that sender too.
            pool = self._the_pool()
            senders = {i.handover.rate_key for b in batches.values() for i in b.to_send}
            for sender, until in sender_limits.paused_until(conn, senders, time.time()).items():
                pool.pause(sender, until)
            finished = [k for k in by_batch if batches[k].done]
            if finished:
                from optline.services.campaigns import finish_if_done

                ids: set[int] = set()
                for k in finished:
                    ids |= batches[k].campaign_ids
                finish_if_done(conn, self.clock, ids)
        with self._lock:  # committed: the batches are finished
            for k in finished:
                self._in_flight.pop(k, None)
        return counts

    def _settle(self, batch: Batch, counts: Counts) -> Counts:
        """A batch with nothing to hand over: its campaigns finished if that was their last message."""
        if batch.claimed:
            from optline.services.campaigns import finish_if_done

            self._give_way()
            with self.db.transaction() as conn:
                finish_if_done(conn, self.clock, batch.campaign_ids)
        return counts

    def _submit(self, pool: Pool, batch: Batch) -> int:
        self._batch_ids += 1
        with self._lock:
            self._in_flight[self._batch_ids] = batch
        pool.submit(self._batch_ids, [i.handover for i in batch.to_send], batch.run)
        return self._batch_ids

    def _batch_limit(self) -> int:
        """How many to claim: ``batch_seconds`` of calls at the rate K calls of the measured latency reach."""
        rate = self.config.concurrency / max(self._latency, 1e-3)
        return self._write_size(max(1, min(self.config.batch_size, round(rate * self.config.batch_seconds))))

    def _prepare(self) -> Batch:
        """Claim a batch, reserve its senders' slots, then (in transactions of their own) run the check."""
        started = time.monotonic()
        counts = Counts()
        self._give_way()
        with self.db.transaction() as conn:
            claimed = self.claim(conn, self.clock.now(), self._batch_limit())
        counts.claimed = len(claimed)
        # Never start a provider call that could outlive our lease: once the lease is reclaimed another
        # worker reconciles and may resend, so a call still in flight then could become a duplicate.
        deadline = time.monotonic() + self._lease().total_seconds() - SEND_MARGIN
        to_send: list[ToSend] = []
        checked_at: float | None = None
        if claimed:
            slots, released = self._reserve(claimed)
            if released:
                gone = {o.id for o in released}
                self._give_way()
                with self.db.transaction() as conn:
                    written = recording.write(conn, self.clock, released, expect=("claimed", self.worker_id))
                recording.tally(released, written, counts, "release")
                left = [m for m in claimed if m["id"] not in gone]
            else:
                left = claimed
            while left:
                # The check runs in its own transaction after the claim committed. (Sharing one would make
                # the 'sending' UPDATE re-check the contacts foreign key of rows this transaction already
                # updated — a KEY SHARE lock on contacts taken after our subscriptions lock, the reverse of
                # consent.record's order: a deadlock with concurrent opt-outs on PostgreSQL.) While webhooks
                # wait for the write lock, a few messages per transaction (each still checked after its claim).
                size = self._write_size(len(left))
                part, left = left[:size], left[size:]
                self._give_way()
                try:
                    with self.db.transaction() as conn:
                        to_send += self.check(conn, part, counts, slots)
                except Exception:
                    if checked_at is None:
                        raise  # nothing marked 'sending' yet: the batch fails as one check did
                    # The parts already checked are committed 'sending': hand them over (left alone, they
                    # would wait for their lease and a reconciliation). The rest stays claimed until its
                    # lease ends, as after any failed check.
                    log.exception("checking %d claimed messages failed", len(part) + len(left))
                    break
                # The batch's calls are bounded from its FIRST check's commit: none starts later than
                # send_window after the check that approved it, whichever part that was.
                checked_at = checked_at or time.monotonic()
        checked_at = checked_at or time.monotonic()
        self._prepare_seconds = time.monotonic() - started
        return Batch(claimed, to_send, Run(deadline, checked_at, self.config.send_window), counts)

    def flush(self) -> Counts:
        """Wait for every batch in flight to be handed over and recorded; their counts."""
        counts = Counts()
        while True:
            with self._lock:
                if not self._in_flight:
                    break
            counts.add(self.run_once(top_up=False))
        return self._collect(counts)

    @property
    def in_flight(self) -> int:
        """Batches handed to the pool whose results are not all stored yet."""
        with self._lock:
            return len(self._in_flight)

    def close(self) -> Counts:
        """Finish what was started and stop; returns the counts of that work. A batch in flight is already
        checked and marked ``sending``: it is handed over now (leaving it would cost a lease expiry and a
        reconciliation with the provider)."""
        try:
            return self.flush()
        finally:
            if self._pool is not None:
                self._pool.close()
                self._pool.results.put((_STOP, Delivery(0)))
                if self._recorder is not None:
                    self._recorder.join()
                self._pool, self._recorder = None, None

    def next_due(self) -> datetime | None:
        """When the earliest waiting message becomes due (the worker sleeps until then, or its poll)."""
        with self.db.read() as conn:
            value = conn.execute(
                select(func.min(messages.c.not_before)).where(messages.c.status.in_(("queued", "deferred")))
            ).scalar()
        return as_utc(value) if value else None


def utc_now() -> datetime:
    return datetime.now(UTC)
