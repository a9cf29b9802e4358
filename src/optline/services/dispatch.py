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
   stored as each call returns (in writes at most ``STREAM_INTERVAL`` apart, as the calling threads hand
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

Where the calls run (services/handover.py): a pool of K threads per worker (K per provider, ``concurrency``)
makes the calls while this thread claims, checks and records. The pool receives only messages the check
transaction marked ``sending`` and committed, so everything above holds unchanged; in addition no call
begins at or after its batch's deadline (its lease minus the longest call) nor more than ``send_window``
seconds after its check committed (THE BOUND: 5 s by default), nor before its sender's reserved slot. The
next batch is claimed and checked when the pool is about to run out of calls (``_topping_up``), never
earlier, so a message waits at most about one batch (``batch_seconds``) between its check and its call.

Rate limits (services/sender_limits.py): per sender, in the database, so they hold across workers and
machines. A batch reserves its senders' slots right after the claim (its own short transaction); what has
no slot inside ``send_window`` goes back to the queue unchecked, due when its sender's next slot is. A 429
pauses the sender for every worker; a configuration error pauses the campaign with its reason.

Exactly once: ``handed_over_at`` is written before the provider call. A message found with it set (a retry
after a timeout/5xx, or a reclaim after a crash) is first reconciled with the provider
(``Sender.find_sent``); only when the provider has no record of it is it sent again — after passing the
check again. Telnyx also receives the message's idempotency key as ``Idempotency-Key``.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, literal_column, or_, select, update
from sqlalchemy.sql import Select

from optline.adapters import metrics
from optline.adapters.clock import Clock, as_utc
from optline.adapters.db import programs as program_repo
from optline.adapters.db.database import Database, one_of
from optline.adapters.db.tables import campaigns, contacts, messages, subscriptions
from optline.adapters.providers.base import OutboundSms, Sender
from optline.domain import compose, retry, segments
from optline.domain.consent import Action, Channel
from optline.domain.optout_links import new_token
from optline.services import consent, receipts, recording, sender_limits
from optline.services.handover import Delivery, Handover, Pool, Run, deliver_one
from optline.services.outbox import REPLY_KINDS, REPLY_LANE, Kind
from optline.services.recording import Outcome
from optline.services.send_check import HANDED_OVER, History, consent_refusal

log = logging.getLogger("optline.dispatch")

ACTIVE = ("queued", "claimed", "sending", "deferred")  # not finished yet
__all__ = ["ACTIVE", "HANDED_OVER", "Counts", "DispatchConfig", "Dispatcher"]
# What the check, quiet hours and composition read of a contact.
PERSON_COLUMNS = ("id", "phone", "region", "time_zone", "us_state", "locale", "attributes")
# The longest a provider call can take (http_errors.DEFAULT_TIMEOUT) plus slack: no call starts later
# than this before the lease ends.
SEND_MARGIN = 12.0
# Results are stored as their calls return, in writes at most this far apart (a receipt may arrive before
# the batch ends; one that still arrives first is kept and applied when the id is stored).
STREAM_INTERVAL = 0.1
# The latency assumed for the first batch's size, before any call was timed (seconds).
FIRST_LATENCY_GUESS = 0.2
_STOP = -1  # the batch key that tells the recorder thread to finish


@dataclass
class DispatchConfig:
    batch_size: int = 500  # the most one claim takes; batches are sized by time (batch_seconds) below it
    batch_seconds: float = 1.0  # a batch holds about this many seconds of calls at the measured rate
    concurrency: int = 16  # provider calls in flight per worker (K; per provider in settings)
    lease: timedelta = timedelta(seconds=120)
    max_attempts: int = 8
    backoff_base: float = 2.0  # seconds; attempt n waits base * 2**(n-1), capped
    backoff_max: float = 3600.0
    rate_per_second: float | None = None  # per sender number, across all workers; program setting overrides
    # THE BOUND: no call begins later than this after its check committed; also how far ahead a batch
    # reserves its senders' slots (what cannot start within it goes back to the queue unchecked).
    send_window: float = 5.0
    public_url: str = "http://127.0.0.1:8000"
    status_callback_url: str | None = None

    @property
    def policy(self) -> retry.RetryPolicy:
        return retry.RetryPolicy(self.max_attempts, self.backoff_base, self.backoff_max, self.backoff_max / 6)


@dataclass
class Counts:
    claimed: int = 0
    sent: int = 0
    suppressed: int = 0
    deferred: int = 0
    skipped: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0  # writes whose guard failed: the row was no longer ours (cancelled, reclaimed): not sent

    def add(self, other: Counts) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _ToSend:
    row: Mapping[str, Any]
    handover: Handover
    attempts: int
    opted_out_program: Mapping[str, Any] | None = field(default=None)


@dataclass
class _Batch:
    claimed: list[dict[str, Any]]
    to_send: list[_ToSend]
    run: Run
    counts: Counts
    recorded: set[int] = field(default_factory=set)  # message ids whose outcome is already stored

    @property
    def campaign_ids(self) -> set[int]:
        return {m["campaign_id"] for m in self.claimed if m["campaign_id"]}

    @property
    def done(self) -> bool:
        return len(self.recorded) == len(self.to_send)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def rate_key(m: Mapping[str, Any], program: Mapping[str, Any] | None) -> str:
    """The number a message goes out from: rate limits and provider pauses are per sender."""
    program = program or {}
    number = (
        m["from_phone"] or next(iter(program.get("sender_numbers") or []), None) or program.get("short_code")
    )
    return str(number or "-")


class Dispatcher:
    def __init__(self, db: Database, clock: Clock, sender: Sender, config: DispatchConfig | None = None,
                 worker_id: str | None = None) -> None:  # fmt: skip
        self.db, self.clock, self.sender = db, clock, sender
        self.config = config or DispatchConfig()
        self.worker_id = worker_id or default_worker_id()
        self._pool: Pool | None = None
        self._in_flight: dict[int, _Batch] = {}  # submitted to the pool, not all recorded yet (oldest first)
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

    def claim(self, conn: Connection, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Claim up to ``limit`` messages: the reply lane first (outbox.REPLY_LANE: confirmations, HELP,
        sign-up prompts), then the rest. A reply enqueued behind a 100k campaign is in the next batch."""
        rows = self._claim_lane(conn, now, limit, reply=True)
        if len(rows) < limit:
            rows += self._claim_lane(conn, now, limit - len(rows), reply=False)
        return sorted(rows, key=lambda r: r["id"])

    def _claim_lane(
        self, conn: Connection, now: datetime, limit: int, *, reply: bool
    ) -> list[dict[str, Any]]:
        rows = conn.execute(
            update(messages)
            .where(messages.c.id.in_(self.pick(conn, now, limit, reply=reply).scalar_subquery()))
            .values(status="claimed", lease_owner=self.worker_id, lease_expires_at=now + self._lease(),
                    updated_at=now)
            .returning(*messages.c)
        ).all()  # fmt: skip
        return [r._asdict() for r in rows]

    def pick(self, conn: Connection, now: datetime, limit: int, *, reply: bool) -> Select[tuple[int]]:
        """The ids one lane's claim takes (its own statement, so a test can EXPLAIN it)."""
        sending_campaigns = select(campaigns.c.id).where(campaigns.c.status == "sending")
        ready = and_(messages.c.status.in_(("queued", "deferred")),
                     or_(messages.c.not_before.is_(None), messages.c.not_before <= now))  # fmt: skip
        stale = and_(messages.c.status.in_(("claimed", "sending")), messages.c.lease_expires_at < now)
        # A literal, not a parameter: only then can the planner prove the reply lane's partial index
        # (ix_messages_reply_lane, WHERE priority = 0) applies, in every plan it caches.
        lane: Any = literal_column(str(REPLY_LANE))
        pick = (
            select(messages.c.id)
            .where(messages.c.priority == lane if reply else messages.c.priority != lane)
            .where(or_(ready, stale))
            .where(or_(messages.c.campaign_id.is_(None), messages.c.campaign_id.in_(sending_campaigns)))
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True, of=messages)
        return pick

    def _lease(self) -> timedelta:
        # Long enough for a batch's calls (none begins later than send_window after the check) plus one
        # provider call's worst case, twice over.
        return max(self.config.lease, timedelta(seconds=self.config.send_window + 2 * SEND_MARGIN))

    # -- 2. the send-time check --------------------------------------------------------------------
    def check(self, conn: Connection, claimed: list[dict[str, Any]], counts: Counts,
              slots: Mapping[int, float] | None = None) -> list[_ToSend]:  # fmt: skip
        """THE SEND-TIME CHECK of a claimed batch; ``slots``: each message's reserved start (rate limits)."""
        slots = slots or {}
        ids = [m["id"] for m in claimed]
        # Re-read our rows: only those still claimed by us go on (a slow worker may have lost its lease).
        current = {r.id: r for r in conn.execute(
            select(messages.c.id, messages.c.status, messages.c.lease_owner).where(one_of(conn, messages.c.id, ids)))}  # fmt: skip
        ours = [m for m in claimed if current[m["id"]].status == "claimed"
                and current[m["id"]].lease_owner == self.worker_id]  # fmt: skip
        counts.lost += len(claimed) - len(ours)
        claimed = ours
        if not claimed:
            return []
        campaign_status = {r.id: r.status for r in conn.execute(
            select(campaigns.c.id, campaigns.c.status).where(
                campaigns.c.id.in_({m["campaign_id"] for m in claimed if m["campaign_id"]})))}  # fmt: skip
        programs = {pid: program_repo.get(conn, pid) for pid in {m["program_id"] for m in claimed}}
        people: dict[int, Any] = {r.id: r._mapping for r in conn.execute(
            select(*(contacts.c[c] for c in PERSON_COLUMNS)).where(
                one_of(conn, contacts.c.id, sorted({m["contact_id"] for m in claimed}))))}  # fmt: skip

        # THE CHECK: the consent projection, read now, after the claim (see the module docstring).
        pairs = sorted({(m["contact_id"], m["program_id"]) for m in claimed if m["kind"] not in REPLY_KINDS})
        consent_rows: dict[tuple[int, int], Any] = {}
        if pairs:
            stmt = select(subscriptions.c.contact_id, subscriptions.c.program_id, subscriptions.c.status,
                          subscriptions.c.held, subscriptions.c.consent_event_id).where(
                # Both keys as arrays (one parameter each, whatever the batch size); pairs outside the
                # batch that this also matches are dropped below.
                one_of(conn, subscriptions.c.contact_id, sorted({c for c, _ in pairs})),
                one_of(conn, subscriptions.c.program_id, sorted({p for _, p in pairs})))  # fmt: skip
            if conn.dialect.name == "postgresql":
                stmt = stmt.order_by(subscriptions.c.contact_id, subscriptions.c.program_id).with_for_update(
                    read=True
                )
            wanted = set(pairs)
            consent_rows = {(r.contact_id, r.program_id): r for r in conn.execute(stmt)
                            if (r.contact_id, r.program_id) in wanted}  # fmt: skip
        # Taken after the read: handed_over_at is later than every opt-out the check could see.
        now = self.clock.now()

        history = History(conn, now, claimed, programs, people)
        outcomes: list[Outcome] = []
        to_send: list[_ToSend] = []
        for m in claimed:
            program, person = programs[m["program_id"]], people[m["contact_id"]]
            assert program is not None
            settings: Mapping[str, Any] = program.get("settings") or {}
            kind = Kind(m["kind"])
            base = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
            if m["campaign_id"] and campaign_status.get(m["campaign_id"]) != "sending":
                state = campaign_status.get(m["campaign_id"])
                status = "cancelled" if state == "cancelled" else "queued"
                outcomes.append(Outcome(m["id"], {**base, "status": status}, "released"))
                continue
            consent_row = consent_rows.get((m["contact_id"], m["program_id"]))
            # The consent that allowed this hand-over, kept on the message for the proof (issue 16).
            authorised_by = consent_row.consent_event_id if consent_row is not None else None
            if kind not in REPLY_KINDS:
                refusal = consent_refusal(conn, kind, m, program, consent_row)
                if refusal:
                    outcomes.append(
                        Outcome(m["id"], {**base, "status": "suppressed", "reason": refusal}, "suppressed")
                    )
                    continue
                later = history.quiet_or_capped(m, person, settings, kind)
                if later is not None:
                    status, when, reason = later
                    values = {**base, "status": status, "not_before": when, "reason": reason}
                    outcomes.append(
                        Outcome(m["id"], values, "skipped" if status == "skipped" else "deferred")
                    )
                    continue
            body, segs, token = m["body"], m["segments"], m["optout_token"]
            if segs == 0:  # a campaign row still holding the template: compose it for this contact now
                # The personal opt-out link's token is made here, for messages about to be handed over
                # (not for the whole audience at materialisation). A collision with an existing token
                # (~60 random bits) fails this transaction: nothing was handed over, the lease expires
                # and the batch is claimed and checked again with new tokens.
                token = token or new_token()
                try:
                    composed = compose.compose(
                        m["body"], brand=program["brand"], program_name=program["name"], phone=person["phone"],
                        attributes=person.get("attributes") or {}, locale=person.get("locale"),
                        settings=settings, marketing=kind is Kind.MARKETING,
                        first_this_month=history.first_this_month(m), public_url=self.config.public_url,
                        optout_token=token,
                    )  # fmt: skip
                except compose.TemplateError as exc:
                    outcomes.append(Outcome(m["id"], {**base, "status": "failed", "reason": str(exc)[:200],
                                                       "error_code": "template"}, "failed"))  # fmt: skip
                    continue
                body, segs = composed.body, segments.count(composed.body).segments
            history.note_handover(m, now)
            outcomes.append(Outcome(m["id"], {
                "status": "sending", "handed_over_at": now, "attempts": m["attempts"] + 1, "body": body,
                "segments": segs, "optout_token": token, "provider": self.sender.name, "reason": None, "updated_at": now,
                "consent_event_id": authorised_by,
                "lease_expires_at": now + self._lease(),
            }))  # fmt: skip
            reconcile = as_utc(m["handed_over_at"]) if m["handed_over_at"] else None
            sender_number = (
                m["from_phone"]
                or next(iter(program.get("sender_numbers") or []), None)
                or program.get("short_code")
            )
            sms = OutboundSms(to=m["to_phone"], from_=sender_number, body=body,
                              idempotency_key=m["idempotency_key"], status_callback_url=self.config.status_callback_url)  # fmt: skip
            handover = Handover(m["id"], sms, reconcile, rate_key(m, program), slots.get(m["id"]))
            to_send.append(_ToSend({**m, "body": body}, handover, m["attempts"] + 1, program))
        to_send = self._hold_for_campaigns(conn, to_send, outcomes, now)
        # Every write is guarded (still 'claimed', still ours): a cancel or a reclaim that committed since
        # our claim wins, and a row whose guard failed is neither handed over nor counted as ours.
        written = recording.write(conn, self.clock, outcomes, expect=("claimed", self.worker_id))
        self._tally(outcomes, written, counts, "check")
        return [item for item in to_send if item.row["id"] in written]

    def _hold_for_campaigns(
        self, conn: Connection, to_send: list[_ToSend], outcomes: list[Outcome], now: datetime
    ) -> list[_ToSend]:
        """Re-read the campaigns of the messages about to be marked 'sending', at the last moment.

        A pause or cancel (services/campaigns.py, which locks the campaign row FOR UPDATE) that committed
        while the check ran wins: its messages go back to the queue or are cancelled. On PostgreSQL the
        rows are read FOR SHARE, so a pause or cancel still in progress is waited for and then read; one
        that starts after this read waits for the check to commit (it is later than the check). On SQLite
        the check holds the write lock throughout, so nothing commits during it."""
        ids = sorted({i.row["campaign_id"] for i in to_send if i.row["campaign_id"]})
        if not ids:
            return to_send
        stmt = (
            select(campaigns.c.id, campaigns.c.status).where(campaigns.c.id.in_(ids)).order_by(campaigns.c.id)
        )
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(read=True)
        state = {r.id: r.status for r in conn.execute(stmt)}
        stopped = {cid for cid in ids if state.get(cid) != "sending"}
        if not stopped:
            return to_send
        base = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
        by_id = {o.id: n for n, o in enumerate(outcomes)}
        kept: list[_ToSend] = []
        for item in to_send:
            cid = item.row["campaign_id"]
            if cid not in stopped:
                kept.append(item)
                continue
            status = "cancelled" if state.get(cid) == "cancelled" else "queued"
            outcomes[by_id[item.row["id"]]] = Outcome(item.row["id"], {**base, "status": status}, "released")
        return kept

    def _tally(self, outcomes: list[Outcome], written: set[int], counts: Counts, step: str) -> None:
        for o in outcomes:
            if o.id not in written:
                counts.lost += 1
            elif o.tally is not None:
                setattr(counts, o.tally, getattr(counts, o.tally) + 1)
        lost = [o.id for o in outcomes if o.id not in written]
        if lost:
            log.warning("%s: %d message(s) no longer ours, left alone (cancelled or reclaimed): %s",
                        step, len(lost), lost[:20])  # fmt: skip

    # -- 3. hand over and record --------------------------------------------------------------------

    def _reserve(self, claimed: list[dict[str, Any]]) -> tuple[dict[int, float], list[Outcome]]:
        """Slots for the batch's rate-limited senders (their own transaction, before the check); the
        messages that get none within the window go back to the queue unchecked, due at their sender's
        next free slot."""
        rated: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        programs: dict[int, Any] = {}
        with self.db.read() as conn:
            for pid in {m["program_id"] for m in claimed}:
                programs[pid] = program_repo.get(conn, pid)
        for m in claimed:
            settings = (programs[m["program_id"]] or {}).get("settings") or {}
            rate = settings.get("rate_per_second", self.config.rate_per_second)
            if rate:
                key = rate_key(m, programs[m["program_id"]])
                rated.setdefault(key, (float(rate), []))[1].append(m)
        now = time.time()
        released: list[Outcome] = []
        stamp = self.clock.now()
        # Senders a provider paused (a 429 here or at another worker): held in the pool until then, or back
        # to the queue unchecked when the pause outlasts the send window.
        with self.db.read() as conn:
            paused = sender_limits.paused_until(
                conn, {rate_key(m, programs[m["program_id"]]) for m in claimed}, now
            )
        for sender, until in paused.items():
            self._the_pool().pause(sender, until)
        held = {
            m["id"]
            for m in claimed
            if paused.get(rate_key(m, programs[m["program_id"]]), 0.0) >= now + self.config.send_window
        }
        for m in claimed:
            if m["id"] in held:
                until = paused[rate_key(m, programs[m["program_id"]])]
                due = datetime.fromtimestamp(until, UTC) + (stamp - datetime.now(UTC))
                released.append(Outcome(m["id"], {"status": "queued", "not_before": due, "lease_owner": None,
                                                  "lease_expires_at": None, "updated_at": stamp}, "released"))  # fmt: skip
        rated = {k: (r, [m for m in ms if m["id"] not in held]) for k, (r, ms) in rated.items()}
        rated = {k: v for k, v in rated.items() if v[1]}
        if not rated:
            return {}, released
        lanes = {k: ([m for m in ms if m["priority"] == REPLY_LANE], [m for m in ms if m["priority"] != REPLY_LANE])
                 for k, (_, ms) in rated.items()}  # fmt: skip
        with self.db.transaction() as conn:
            got = sender_limits.reserve(conn, {k: (rated[k][0], len(r), len(b)) for k, (r, b) in lanes.items()},
                                        now, self.config.send_window)  # fmt: skip
        slots: dict[int, float] = {}
        for key, (rate, _ms) in rated.items():
            left: list[dict[str, Any]] = []
            for lane, times in zip(lanes[key], got.get(key, ([], [])), strict=True):
                for m, at in zip(lane, times, strict=False):
                    slots[m["id"]] = at
                left += lane[len(times) :]
            last = max((slots[m["id"]] for m in rated[key][1] if m["id"] in slots), default=None)
            after = last + 1 / rate if last is not None else now + self.config.send_window / 2
            due = datetime.fromtimestamp(after, UTC) + (stamp - datetime.now(UTC))  # on the dispatch clock
            for m in left:
                released.append(Outcome(m["id"], {"status": "queued", "not_before": due, "lease_owner": None,
                                                  "lease_expires_at": None, "updated_at": stamp}, "released"))  # fmt: skip
        return slots, released

    # -- 3. hand over and record --------------------------------------------------------------------
    def deliver(self, item: _ToSend) -> Outcome:
        """One call, here and now (tests): the outcome to record."""
        return self._outcome(item, deliver_one(self.sender, item.handover, self.clock.now))

    def _outcome(self, item: _ToSend, delivery: Delivery) -> Outcome:
        if delivery.seconds is not None:  # a provider call was made: each delivery passes here once
            kind = delivery.error.kind.value if delivery.error is not None else "ok"
            metrics.PROVIDER_CALL_SECONDS.labels(self.sender.name, kind).observe(delivery.seconds)
            if delivery.error is not None:
                metrics.PROVIDER_ERRORS.labels(self.sender.name, kind).inc()
            self._latency = 0.9 * self._latency + 0.1 * delivery.seconds
        now = delivery.at or self.clock.now()
        base = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
        # Not attempted, or refused for certain (a 429, a configuration error): no call reached the
        # provider this time, so the attempt is given back and the hand-over time is what it was before
        # (the next claim reconciles only when an earlier call may really have gone through).
        untouched = {**base, "status": "queued", "attempts": item.attempts - 1,
                     "handed_over_at": item.handover.reconcile_since}  # fmt: skip
        if delivery.expired:
            return Outcome(item.row["id"], {**untouched, "reason": "not begun within the send window"})
        config_error = delivery.held_back
        if delivery.error is not None:
            exc = delivery.error
            decision = retry.decide(
                exc.kind.value, exc.code, item.attempts, exc.retry_after, self.config.policy
            )
            errors = {"error_code": exc.code, "error_message": exc.message[:500]}
            if decision.verdict is retry.Verdict.THROTTLED:
                assert decision.delay is not None
                return Outcome(item.row["id"], {**untouched, **errors, "reason": decision.reason,
                                                "not_before": now + timedelta(seconds=decision.delay)})  # fmt: skip
            if decision.verdict is retry.Verdict.CONFIG:
                config_error = exc
            elif decision.verdict is retry.Verdict.RETRY:
                assert decision.delay is not None
                return Outcome(item.row["id"], {**base, **errors, "status": "queued", "reason": decision.reason,
                                                "not_before": now + timedelta(seconds=decision.delay)})  # fmt: skip
            elif decision.verdict is retry.Verdict.OPTED_OUT:
                return Outcome(
                    item.row["id"], {**base, **errors, "status": "suppressed", "reason": decision.reason}
                )
            else:
                return Outcome(
                    item.row["id"], {**base, **errors, "status": "failed", "reason": decision.reason}
                )
        if config_error is not None:
            # The account is misconfigured: the campaign is paused (record), a reply waits config_pause.
            what = (
                "provider configuration error"
                if delivery.error
                else "held back: provider configuration error"
            )
            wait = (
                None if item.row["campaign_id"] else now + timedelta(seconds=self.config.policy.config_pause)
            )
            return Outcome(item.row["id"], {**untouched, "reason": f"{what} ({config_error.code}): {config_error.message}"[:200],
                                            "error_code": config_error.code, "error_message": config_error.message[:500],
                                            "not_before": wait})  # fmt: skip
        assert delivery.provider_id is not None
        return Outcome(item.row["id"], {**base, "status": "sent", "provider_message_id": delivery.provider_id,
                                        "sent_at": now, "error_code": None, "error_message": None})  # fmt: skip

    def record(self, conn: Connection, items: list[_ToSend], outcomes: list[Outcome], counts: Counts) -> None:
        # Only rows still 'sending' and ours are updated; a reclaimer reconciles anything we lost.
        tallies = {"sent": "sent", "queued": "retried", "suppressed": "suppressed"}
        for o in outcomes:
            o.tally = tallies.get(o.values["status"], "failed")
        provider_ids = {
            o.values["provider_message_id"]: o.id for o in outcomes if o.values["status"] == "sent"
        }
        # Before the write: a receipt for these ids arriving now waits, then finds its message (receipts.py).
        receipts.lock_keys(conn, self.sender.name, sorted(provider_ids))
        written = recording.write(conn, self.clock, outcomes, expect=("sending", self.worker_id))
        self._tally(outcomes, written, counts, "record")
        # Receipts that arrived before their message's provider id was stored: applied now, in this write.
        receipts.apply_pending(conn, self.clock, self.sender.name,
                               {pid: mid for pid, mid in provider_ids.items() if mid in written})  # fmt: skip
        by_id = {i.row["id"]: i for i in items}
        for o in outcomes:
            item = by_id[o.id]
            if o.values["status"] == "suppressed":
                # The provider says this person opted out: that is a consent event (ledger), never ignored.
                consent.record(conn, self.clock, contact_id=item.row["contact_id"], program=item.opted_out_program or {},
                               action=Action.OPT_OUT, channel=Channel.PROVIDER,
                               evidence={"provider": self.sender.name, "error_code": o.values["error_code"],
                                         "message_id": item.row["id"], "error_message": o.values["error_message"]})  # fmt: skip
            reason = str(o.values.get("reason") or "")
            if reason.startswith("throttled"):
                until = time.time() + max(0.0, (o.values["not_before"] - self.clock.now()).total_seconds())
                sender_limits.pause(conn, item.handover.rate_key, until, reason)
            elif "configuration error" in reason and item.row["campaign_id"]:
                self._pause_campaign(conn, item.row["campaign_id"], reason)

    def _pause_campaign(self, conn: Connection, campaign_id: int, reason: str) -> None:
        """A configuration error: every further message would fail the same way. The campaign stops
        (paused, with the reason, until an operator fixes the account and resumes it) — loudly."""
        row = conn.execute(
            update(campaigns).where(campaigns.c.id == campaign_id, campaigns.c.status == "sending")
            .values(status="paused", pause_reason=reason[:300]).returning(campaigns.c.name)
        ).first()  # fmt: skip
        if row is not None:
            log.error("campaign %r paused: %s; fix the provider account, then resume it", row.name, reason)

    def start(self) -> None:
        """Start the pool of provider calls now (else it starts with the first batch)."""
        self._the_pool()

    def _the_pool(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(self.sender, self.config.concurrency, self.clock.now)
            self._recorder = threading.Thread(target=self._record_loop, args=(self._pool,),
                                              name="optline-record", daemon=True)  # fmt: skip
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
        with self._lock:
            idle = not self._in_flight
        if idle:
            batch = self._prepare()
            counts.add(batch.counts)
            if not batch.to_send:
                self._settle(batch, counts)
                return self._collect(counts)
            self._submit(pool, batch)
        with self._lock:
            head_id = next(iter(self._in_flight))
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
        """Store the results that arrived (one transaction); finish the batches they complete."""
        counts = Counts()
        by_batch: dict[int, list[Delivery]] = defaultdict(list)
        for key, delivery in fresh:
            by_batch[key].append(delivery)
        try:
            return self._store_in(by_batch, counts)
        except BaseException:
            # Not stored (the database is away): the results go back, to be stored on the next try; if
            # this process dies instead, the rows stay 'sending' and the next claim reconciles them.
            for got in fresh:
                self._the_pool().results.put(got)
            raise

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

    def _settle(self, batch: _Batch, counts: Counts) -> Counts:
        """A batch with nothing to hand over: its campaigns finished if that was their last message."""
        if batch.claimed:
            from optline.services.campaigns import finish_if_done

            with self.db.transaction() as conn:
                finish_if_done(conn, self.clock, batch.campaign_ids)
        return counts

    def _submit(self, pool: Pool, batch: _Batch) -> None:
        self._batch_ids += 1
        with self._lock:
            self._in_flight[self._batch_ids] = batch
        pool.submit(self._batch_ids, [i.handover for i in batch.to_send], batch.run)

    def _batch_limit(self) -> int:
        """How many to claim: ``batch_seconds`` of calls at the rate K calls of the measured latency reach."""
        rate = self.config.concurrency / max(self._latency, 1e-3)
        return max(1, min(self.config.batch_size, round(rate * self.config.batch_seconds)))

    def _prepare(self) -> _Batch:
        """Claim a batch, reserve its senders' slots, then (in a transaction of its own) run the check."""
        started = time.monotonic()
        counts = Counts()
        with self.db.transaction() as conn:
            claimed = self.claim(conn, self.clock.now(), self._batch_limit())
        counts.claimed = len(claimed)
        # Never start a provider call that could outlive our lease: once the lease is reclaimed another
        # worker reconciles and may resend, so a call still in flight then could become a duplicate.
        deadline = time.monotonic() + self._lease().total_seconds() - SEND_MARGIN
        to_send: list[_ToSend] = []
        if claimed:
            slots, released = self._reserve(claimed)
            if released:
                gone = {o.id for o in released}
                with self.db.transaction() as conn:
                    written = recording.write(conn, self.clock, released, expect=("claimed", self.worker_id))
                self._tally(released, written, counts, "release")
                claimed_now = [m for m in claimed if m["id"] not in gone]
            else:
                claimed_now = claimed
            if claimed_now:
                # The check runs in its own transaction after the claim committed. (Sharing one would make
                # the 'sending' UPDATE re-check the contacts foreign key of rows this transaction already
                # updated — a KEY SHARE lock on contacts taken after our subscriptions lock, the reverse of
                # consent.record's order: a deadlock with concurrent opt-outs on PostgreSQL.)
                with self.db.transaction() as conn:
                    to_send = self.check(conn, claimed_now, counts, slots)
        checked_at = time.monotonic()
        # Replies first in the pool's queue (their lane's promise holds inside a batch too).
        to_send.sort(key=lambda i: (i.row["priority"] != REPLY_LANE, i.row["id"]))
        self._prepare_seconds = checked_at - started
        return _Batch(claimed, to_send, Run(deadline, checked_at, self.config.send_window), counts)

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
            value = conn.execute(select(func.min(messages.c.not_before)).where(
                messages.c.status.in_(("queued", "deferred")))).scalar()  # fmt: skip
        return as_utc(value) if value else None


def utc_now() -> datetime:
    return datetime.now(UTC)
