"""Dispatch: claim queued messages, run the send-time check, hand them to the provider, record the outcome.

One batch goes through three short transactions and the provider calls between them:

1. **claim** — ``UPDATE messages SET status='claimed', lease… WHERE id IN (SELECT … LIMIT n)``; on
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
   stored as each call returns (in writes at most ``STREAM_INTERVAL`` apart, or as the courier streams
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

Where the calls run: ``optline worker`` makes them in a courier process (``services/courier.py``) so that
claim, check and record run on another core meanwhile; the courier only ever receives messages the check
transaction marked ``sending`` and committed, so everything above holds unchanged.

Exactly once: ``handed_over_at`` is written before the provider call. A message found with it set (a retry
after a timeout/5xx, or a reclaim after a crash) is first reconciled with the provider
(``Sender.find_sent``); only when the provider has no record of it is it sent again — after passing the
check again. Telnyx also receives the message's idempotency key as ``Idempotency-Key``.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import TextClause

from optline.adapters import metrics
from optline.adapters.clock import Clock, as_utc
from optline.adapters.db import programs as program_repo
from optline.adapters.db.database import Database, one_of
from optline.adapters.db.tables import campaigns, contacts, messages, subscriptions
from optline.adapters.providers.base import ErrorKind, OutboundSms, ProviderError, Sender, reconcile_delay
from optline.domain import caps, compose, quiet_hours, segments
from optline.domain.consent import Action, Channel, Status
from optline.domain.optout_links import new_token
from optline.domain.phones import InvalidPhoneNumber, parse_phone
from optline.services import consent, event_hooks, receipts
from optline.services.courier import (
    Courier,
    CourierGone,
    Delivery,
    Handover,
    SenderFactory,
    deliver_all,
    deliver_one,
    prefetch_due,
)
from optline.services.outbox import REPLY_KINDS, REPLY_LANE, Kind
from optline.services.rate_limit import RateLimiter

log = logging.getLogger("optline.dispatch")

ACTIVE = ("queued", "claimed", "sending", "deferred")  # not finished yet
HANDED_OVER = ("sending", "sent", "delivered", "undelivered")  # counted for caps and state limits
# What the check, quiet hours and composition read of a contact.
PERSON_COLUMNS = ("id", "phone", "region", "time_zone", "us_state", "locale", "attributes")
# The longest a provider call can take (http_errors.DEFAULT_TIMEOUT) plus slack: no call starts later
# than this before the lease ends.
SEND_MARGIN = 12.0
# Provider ids are stored as their calls return, in writes at most this far apart (a receipt may arrive
# before the batch ends; one that still arrives first is kept and applied when the id is stored).
STREAM_INTERVAL = 0.1


@dataclass
class DispatchConfig:
    batch_size: int = 100
    lease: timedelta = timedelta(seconds=120)
    max_attempts: int = 8
    backoff_base: float = 2.0  # seconds; attempt n waits base * 2**(n-1), capped
    backoff_max: float = 3600.0
    rate_per_second: float | None = None  # per sender number, per worker; program setting overrides
    # The longest a checked message may then wait for its sender's rate limit: at 1 message/s a batch of
    # 100 would otherwise be checked up to 100 s before its last hand-over. Beyond it, back to the queue.
    send_window: float = 5.0
    public_url: str = "http://127.0.0.1:8000"
    status_callback_url: str | None = None
    pipeline: bool = False  # record a batch's outcome in the background while the next one is sent
    # Make the provider calls in a courier process whose Sender this builds (services/courier.py), while
    # this process claims, checks and records; its times come from the system clock. None: calls here.
    courier: SenderFactory | None = None


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
class _Outcome:
    id: int
    values: dict[str, Any]
    tally: str | None = None  # the Counts field this outcome adds one to, once its guarded write landed


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
    deadline: float  # time.monotonic() after which none of its provider calls may start (lease budget)
    counts: Counts
    recorded: set[int] = field(default_factory=set)  # message ids whose outcome is already stored

    @property
    def campaign_ids(self) -> set[int]:
        return {m["campaign_id"] for m in self.claimed if m["campaign_id"]}


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Dispatcher:
    def __init__(self, db: Database, clock: Clock, sender: Sender, config: DispatchConfig | None = None,
                 worker_id: str | None = None, limiter: RateLimiter | None = None) -> None:  # fmt: skip
        self.db, self.clock, self.sender = db, clock, sender
        self.config = config or DispatchConfig()
        self.worker_id = worker_id or default_worker_id()
        self.limiter = limiter or RateLimiter()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[Counts] | None = None
        self._prefetched: Future[_Batch] | None = None
        self._prepare_seconds = 0.0  # how long the last claim + check took (when to start the next one)
        self._courier = Courier(self.config.courier) if self.config.courier else None
        self._at_courier: deque[tuple[int, _Batch]] = deque()  # submitted, not done yet (at most two)
        self._batch_ids = 0

    # -- 1. claim ----------------------------------------------------------------------------------
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
        # Long enough for a whole batch at the configured rate, plus one provider call's worst case.
        rate = self.config.rate_per_second
        needed = timedelta(seconds=(self.config.batch_size / rate if rate else 0) * 2 + 2 * SEND_MARGIN)
        return max(self.config.lease, needed)

    def _sending_lease(self) -> timedelta:
        # A hand-over is reclaimed (after a crash) no sooner than the provider's reconcile_after past it: a
        # message it accepted may show in its list only then, and an earlier look would send it twice.
        return self._lease() + timedelta(seconds=getattr(self.sender, "reconcile_after", 0.0))

    # -- 2. the send-time check --------------------------------------------------------------------
    def check(self, conn: Connection, claimed: list[dict[str, Any]], counts: Counts) -> list[_ToSend]:
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

        history = _History(conn, now, claimed, programs, people)
        outcomes: list[_Outcome] = []
        to_send: list[_ToSend] = []
        per_sender: dict[str, int] = defaultdict(int)
        for m in claimed:
            program, person = programs[m["program_id"]], people[m["contact_id"]]
            assert program is not None
            settings: Mapping[str, Any] = program.get("settings") or {}
            kind = Kind(m["kind"])
            base = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
            if m["campaign_id"] and campaign_status.get(m["campaign_id"]) != "sending":
                state = campaign_status.get(m["campaign_id"])
                status = "cancelled" if state == "cancelled" else "queued"
                outcomes.append(_Outcome(m["id"], {**base, "status": status}, "released"))
                continue
            rate = settings.get("rate_per_second", self.config.rate_per_second)
            consent_row = consent_rows.get((m["contact_id"], m["program_id"]))
            # The consent that allowed this hand-over, kept on the message for the proof (issue 16).
            authorised_by = consent_row.consent_event_id if consent_row is not None else None
            if kind not in REPLY_KINDS:
                refusal = _consent_refusal(conn, kind, m, program, consent_row)
                if refusal:
                    outcomes.append(
                        _Outcome(m["id"], {**base, "status": "suppressed", "reason": refusal}, "suppressed")
                    )
                    continue
                later = history.quiet_or_capped(m, person, settings, kind)
                if later is not None:
                    status, when, reason = later
                    values = {**base, "status": status, "not_before": when, "reason": reason}
                    outcomes.append(
                        _Outcome(m["id"], values, "skipped" if status == "skipped" else "deferred")
                    )
                    continue
            if rate:  # counted over the messages about to be handed over, suppressed ones take no turn
                key = m["from_phone"] or "-"  # the rate limiter's key (deliver)
                per_sender[key] += 1
                if per_sender[key] > 1 and per_sender[key] / float(rate) > self.config.send_window:
                    # Handed over now, this message would wait for its sender's rate limit longer than the
                    # window: back to the queue, to be checked again when it is next claimed, so that its
                    # check stays close to its hand-over.
                    outcomes.append(_Outcome(m["id"], {**base, "status": "queued"}, "released"))
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
                    outcomes.append(_Outcome(m["id"], {**base, "status": "failed", "reason": str(exc)[:200],
                                                       "error_code": "template"}, "failed"))  # fmt: skip
                    continue
                body, segs = composed.body, segments.count(composed.body).segments
            history.note_handover(m, now)
            outcomes.append(_Outcome(m["id"], {
                "status": "sending", "handed_over_at": now, "attempts": m["attempts"] + 1, "body": body,
                "segments": segs, "optout_token": token, "provider": self.sender.name, "reason": None, "updated_at": now,
                "consent_event_id": authorised_by,
                "lease_expires_at": now + self._sending_lease(),
            }))  # fmt: skip
            reconcile = as_utc(m["handed_over_at"]) if m["handed_over_at"] else None
            sender_number = (
                m["from_phone"]
                or next(iter(program.get("sender_numbers") or []), None)
                or program.get("short_code")
            )
            sms = OutboundSms(to=m["to_phone"], from_=sender_number, body=body,
                              idempotency_key=m["idempotency_key"], status_callback_url=self.config.status_callback_url)  # fmt: skip
            handover = Handover(
                m["id"], sms, reconcile, m["from_phone"] or "-", float(rate) if rate else None
            )
            to_send.append(_ToSend({**m, "body": body}, handover, m["attempts"] + 1, program))
        to_send = self._hold_for_campaigns(conn, to_send, outcomes, now)
        # Every write is guarded (still 'claimed', still ours): a cancel or a reclaim that committed since
        # our claim wins, and a row whose guard failed is neither handed over nor counted as ours.
        written = _write(conn, self.clock, outcomes, expect=("claimed", self.worker_id))
        self._tally(outcomes, written, counts, "check")
        return [item for item in to_send if item.row["id"] in written]

    def _hold_for_campaigns(
        self, conn: Connection, to_send: list[_ToSend], outcomes: list[_Outcome], now: datetime
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
            outcomes[by_id[item.row["id"]]] = _Outcome(item.row["id"], {**base, "status": status}, "released")
        return kept

    def _tally(self, outcomes: list[_Outcome], written: set[int], counts: Counts, step: str) -> None:
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
    def deliver(self, item: _ToSend) -> _Outcome:
        return self._outcome(item, deliver_one(self.sender, self.limiter, item.handover, self.clock.now))

    def _outcome(self, item: _ToSend, delivery: Delivery) -> _Outcome:
        if delivery.seconds is not None:  # a provider call was made: each delivery passes here once
            kind = delivery.error.kind.value if delivery.error is not None else "ok"
            metrics.PROVIDER_CALL_SECONDS.labels(self.sender.name, kind).observe(delivery.seconds)
            if delivery.error is not None:
                metrics.PROVIDER_ERRORS.labels(self.sender.name, kind).inc()
        now = delivery.at or self.clock.now()
        # Not attempted (lease budget): back to the queue; handed_over_at stays set, so the next attempt
        # reconciles first.
        if delivery.expired:
            return _Outcome(item.row["id"], {"status": "queued", "reason": "lease budget used up",
                                             "lease_owner": None, "lease_expires_at": None})  # fmt: skip
        if delivery.held_back is not None:  # not attempted: the account is misconfigured (see _failure)
            exc = delivery.held_back
            return _Outcome(item.row["id"], {"status": "queued", "reason": _config_reason(exc, attempted=False),
                                             "not_before": now + self._config_pause(), "error_code": exc.code,
                                             "error_message": exc.message[:500], "lease_owner": None,
                                             "lease_expires_at": None, "updated_at": now})  # fmt: skip
        if delivery.error is not None:
            return self._failure(item, delivery.error, now)
        assert delivery.provider_id is not None
        return _Outcome(item.row["id"], {"status": "sent", "provider_message_id": delivery.provider_id,
                                         "sent_at": now, "error_code": None, "error_message": None,
                                         "lease_owner": None, "lease_expires_at": None, "updated_at": now})  # fmt: skip

    def _failure(self, item: _ToSend, exc: ProviderError, now: datetime) -> _Outcome:
        base = {"error_code": exc.code, "error_message": exc.message[:500], "lease_owner": None,
                "lease_expires_at": None, "updated_at": now}  # fmt: skip
        if exc.kind is ErrorKind.RETRY and item.attempts < self.config.max_attempts:
            delay = min(self.config.backoff_max, self.config.backoff_base * 2 ** (item.attempts - 1))
            if exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            delay = max(delay, reconcile_delay(self.sender, exc))  # an accepted message may show up late
            return _Outcome(item.row["id"], {**base, "status": "queued", "not_before": now + timedelta(seconds=delay),
                                             "reason": f"retry: {exc.code}"})  # fmt: skip
        if exc.kind is ErrorKind.BAD_CONFIG:
            # Our credentials, sender or credit are wrong: nothing about this message or its recipient (no
            # ledger event); back to the queue for later, loudly, until the attempts run out.
            log.error("provider configuration error (message %s): %s", item.row["id"], exc.message)
            if item.attempts < self.config.max_attempts:
                return _Outcome(item.row["id"], {**base, "status": "queued", "reason": _config_reason(exc, attempted=True),
                                                 "not_before": now + self._config_pause()})  # fmt: skip
            return _Outcome(
                item.row["id"], {**base, "status": "failed", "reason": _config_reason(exc, attempted=True)}
            )
        if exc.kind is ErrorKind.OPTED_OUT:
            return _Outcome(item.row["id"], {**base, "status": "suppressed",
                                             "reason": "recipient opted out at the provider"})  # fmt: skip
        reason = "gave up after retries" if exc.kind is ErrorKind.RETRY else "permanent provider error"
        return _Outcome(item.row["id"], {**base, "status": "failed", "reason": reason})

    def _config_pause(self) -> timedelta:
        return timedelta(seconds=self.config.backoff_max / 6)

    def record(
        self, conn: Connection, items: list[_ToSend], outcomes: list[_Outcome], counts: Counts
    ) -> None:
        # Only rows still 'sending' and ours are updated; a reclaimer reconciles anything we lost.
        tallies = {"sent": "sent", "queued": "retried", "suppressed": "suppressed"}
        for o in outcomes:
            o.tally = tallies.get(o.values["status"], "failed")
        provider_ids = {
            o.values["provider_message_id"]: o.id for o in outcomes if o.values["status"] == "sent"
        }
        # Before the write: a receipt for these ids arriving now waits, then finds its message (receipts.py).
        receipts.lock_keys(conn, self.sender.name, sorted(provider_ids))
        written = _write(conn, self.clock, outcomes, expect=("sending", self.worker_id))
        self._tally(outcomes, written, counts, "record")
        # Receipts that arrived before their message's provider id was stored: applied now, in this write.
        receipts.apply_pending(conn, self.clock, self.sender.name,
                               {pid: mid for pid, mid in provider_ids.items() if mid in written})  # fmt: skip
        by_id = {i.row["id"]: i for i in items}
        for o in outcomes:
            if o.values["status"] == "suppressed":
                item = by_id[o.id]
                # The provider says this person opted out: that is a consent event (ledger), never ignored.
                consent.record(conn, self.clock, contact_id=item.row["contact_id"], program=item.opted_out_program or {},
                               action=Action.OPT_OUT, channel=Channel.PROVIDER,
                               evidence={"provider": self.sender.name, "error_code": o.values["error_code"],
                                         "message_id": item.row["id"], "error_message": o.values["error_message"]})  # fmt: skip

    def start(self) -> None:
        """Start the courier process now, if one is configured (else it starts with the first batch)."""
        if self._courier is not None:
            self._courier.start()

    def run_once(self) -> Counts:
        """Take one batch all the way: claim, check, hand over, record (claimed == 0: queue idle).

        With ``config.pipeline`` (what ``optline worker`` runs) two things overlap the provider calls:
        - the outcome of a batch is recorded by a background thread while the next batch is sent (at most
          one batch behind; ``flush`` waits for it). Safe because every message it records is already
          marked ``sending`` with ``handed_over_at``: if the process dies first, the lease expires and the
          next worker reconciles with the provider before any resend.
        - the NEXT batch is claimed and checked in the background, but only once the current batch is
          about to run out: when its remaining provider calls are expected to take about as long as a claim
          and check take. So a message's check still happens about one batch's send time before its
          hand-over, as without overlapping, and never before its claim (invariant 2 is unchanged: the
          check runs in a transaction that starts after the claim committed).
        With ``config.courier`` the same happens with the provider calls in a courier process
        (``services/courier.py``) and the claim, check and record in this one.
        """
        if self._courier is not None:
            return self._run_once_with_courier(self._courier)
        counts = Counts()
        batch = self._take_prefetched() or self._prepare()
        counts.add(batch.counts)
        if not batch.claimed:
            counts.add(self.flush())
            return counts
        items, outcomes, streamed = self._deliver_batch(batch, prefetch=self.config.pipeline)
        counts.add(streamed)
        if not self.config.pipeline:
            counts.add(self._record_batch(items, outcomes, batch.campaign_ids))
            return counts
        counts.add(self.flush())
        self._pending = self._pool().submit(self._record_batch, items, outcomes, batch.campaign_ids)
        return counts

    def _run_once_with_courier(self, courier: Courier, *, prefetch: bool = True) -> Counts:
        """The courier hands batch N over while this process claims and checks batch N+1 (when the courier
        asks for it, see ``prefetch_due``; not when closing) and then records batch N."""
        counts = Counts()
        courier.start()
        if not self._at_courier:
            batch = self._prepare()
            if not batch.to_send:  # nothing claimed, or nothing in it may go (suppressed, deferred…)
                return self._settle_unsendable(batch)
            self._submit(courier, batch)
        head_id, head = self._at_courier[0]
        fresh: list[Delivery] = []  # results received, not stored yet
        since = time.monotonic()  # when the oldest of them arrived
        try:
            while True:
                event = courier.receive()
                if event[0] == "delivered" and event[1] == head_id:
                    # Store provider ids as the calls return: whatever arrived meanwhile in one write.
                    since = since if fresh else time.monotonic()
                    fresh.append(event[2])
                    if not courier.has_more() or time.monotonic() - since >= STREAM_INTERVAL:
                        counts.add(self._record_deliveries(head, fresh))
                        fresh = []
                elif (
                    prefetch and event[0] == "prefetch" and event[1] == head_id and len(self._at_courier) == 1
                ):
                    batch = self._prepare()
                    if batch.to_send:
                        self._submit(courier, batch)  # the courier starts on it as soon as it finishes N
                    else:
                        counts.add(self._settle_unsendable(batch))
                elif event[0] == "done" and event[1] == head_id:
                    self._at_courier.popleft()
                    rest = [(i, d) for i, d in zip(head.to_send, event[2], strict=True)
                            if i.row["id"] not in head.recorded]  # fmt: skip
                    counts.add(head.counts)
                    counts.add(self._record_batch([i for i, _ in rest], [self._outcome(i, d) for i, d in rest],
                                                  head.campaign_ids))  # fmt: skip
                    return counts
        except CourierGone:
            # What it held stays 'sending' with handed_over_at: the lease expires and the next claim
            # reconciles with the provider. The next run_once starts a new courier.
            self._at_courier.clear()
            raise

    def _settle_unsendable(self, batch: _Batch) -> Counts:
        """A batch with nothing to hand over: its counts, and its campaigns finished if that was the last."""
        counts = Counts()
        counts.add(batch.counts)
        if batch.claimed:
            counts.add(self._record_batch([], [], batch.campaign_ids))
        return counts

    def _submit(self, courier: Courier, batch: _Batch) -> None:
        self._batch_ids += 1
        self._at_courier.append((self._batch_ids, batch))
        courier.submit(self._batch_ids, [i.handover for i in batch.to_send], batch.deadline,
                       self._prepare_seconds)  # fmt: skip

    def _prepare(self) -> _Batch:
        """Claim a batch, then (in a second transaction) run the send-time check on it."""
        started = time.monotonic()
        counts = Counts()
        with self.db.transaction() as conn:
            claimed = self.claim(conn, self.clock.now(), self.config.batch_size)
        counts.claimed = len(claimed)
        # Never start a provider call that could outlive our lease: once the lease is reclaimed another
        # worker reconciles and may resend, so a call still in flight then could become a duplicate.
        deadline = time.monotonic() + self._lease().total_seconds() - SEND_MARGIN
        to_send: list[_ToSend] = []
        if claimed:
            # The check runs in its own transaction after the claim committed. (Sharing one would make the
            # 'sending' UPDATE re-check the contacts foreign key of rows this transaction already updated —
            # a KEY SHARE lock on contacts taken after our subscriptions lock, the reverse of
            # consent.record's order: a deadlock with concurrent opt-outs on PostgreSQL.)
            with self.db.transaction() as conn:
                to_send = self.check(conn, claimed, counts)
        self._prepare_seconds = time.monotonic() - started
        return _Batch(claimed, to_send, deadline, counts)

    def _record_deliveries(self, batch: _Batch, deliveries: list[Delivery]) -> Counts:
        """Store the outcomes of calls that just returned (their provider ids), before the batch ends."""
        by_id = {i.row["id"]: i for i in batch.to_send}
        items = [by_id[d.message_id] for d in deliveries if d.message_id not in batch.recorded]
        outcomes = [
            self._outcome(by_id[d.message_id], d) for d in deliveries if d.message_id not in batch.recorded
        ]
        counts = Counts()
        if items:
            with self.db.transaction() as conn:
                self.record(conn, items, outcomes, counts)
            batch.recorded.update(i.row["id"] for i in items)
        return counts

    def _deliver_batch(
        self, batch: _Batch, *, prefetch: bool
    ) -> tuple[list[_ToSend], list[_Outcome], Counts]:
        """Hand the batch over, storing results as they come (at most ``STREAM_INTERVAL`` apart); returns
        what is left to record (the items and their outcomes) and the counts of what was stored."""
        total = len(batch.to_send)
        streamed = Counts()
        fresh: list[Delivery] = []
        last_write = time.monotonic()

        def delivered(delivery: Delivery) -> None:
            nonlocal fresh, last_write
            fresh.append(delivery)
            if time.monotonic() - last_write >= STREAM_INTERVAL:
                streamed.add(self._record_deliveries(batch, fresh))
                fresh, last_write = [], time.monotonic()

        def progress(done: int, elapsed: float) -> bool:
            if (
                prefetch
                and self._prefetched is None
                and prefetch_due(done, total, elapsed, self._prepare_seconds)
            ):
                self._prefetched = self._pool().submit(self._prepare)
            return True

        deliveries = deliver_all(self.sender, self.limiter, [i.handover for i in batch.to_send],
                                 deadline=batch.deadline, now=self.clock.now, progress=progress,
                                 on_delivery=delivered)  # fmt: skip
        rest = [
            (i, d)
            for i, d in zip(batch.to_send, deliveries, strict=True)
            if i.row["id"] not in batch.recorded
        ]
        return [i for i, _ in rest], [self._outcome(i, d) for i, d in rest], streamed

    def _take_prefetched(self) -> _Batch | None:
        future, self._prefetched = self._prefetched, None
        return future.result() if future is not None else None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:  # one thread records, one prepares the next batch
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="optline-dispatch")
        return self._executor

    def _record_batch(
        self, to_send: list[_ToSend], outcomes: list[_Outcome], campaign_ids: set[int]
    ) -> Counts:
        from optline.services.campaigns import finish_if_done

        counts = Counts()
        with self.db.transaction() as conn:
            if outcomes:
                self.record(conn, to_send, outcomes, counts)
            finish_if_done(conn, self.clock, campaign_ids)
        return counts

    def flush(self) -> Counts:
        """Wait for the batch being recorded in the background (if any); its counts."""
        pending, self._pending = self._pending, None
        return pending.result() if pending is not None else Counts()

    def close(self) -> Counts:
        """Finish what was started and stop; returns the counts of that work.

        A batch prepared in the background (or already at the courier) is already checked and marked
        ``sending``: it is handed over now (leaving it would cost a lease expiry and a reconciliation with
        the provider)."""
        counts = Counts()
        try:
            if self._courier is not None:
                try:
                    while self._at_courier and self._courier.running:
                        counts.add(self._run_once_with_courier(self._courier, prefetch=False))
                except CourierGone as exc:  # what it held waits for its lease and a reconciliation
                    log.error("stopping: %s", exc)
            batch = self._take_prefetched()
            if batch is not None and batch.claimed:
                counts.add(batch.counts)
                items, outcomes, streamed = self._deliver_batch(batch, prefetch=False)
                counts.add(streamed)
                counts.add(self.flush())
                counts.add(self._record_batch(items, outcomes, batch.campaign_ids))
            counts.add(self.flush())
        finally:
            if self._courier is not None:
                self._courier.stop()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
        return counts

    def next_due(self) -> datetime | None:
        """When the earliest waiting message becomes due (the worker sleeps until then, or its poll)."""
        with self.db.read() as conn:
            value = conn.execute(select(func.min(messages.c.not_before)).where(
                messages.c.status.in_(("queued", "deferred")))).scalar()  # fmt: skip
        return as_utc(value) if value else None


def _config_reason(exc: ProviderError, *, attempted: bool) -> str:
    what = "provider configuration error" if attempted else "held back: provider configuration error"
    return f"{what} ({exc.code}): {exc.message}"[:200]


def _consent_refusal(
    conn: Connection, kind: Kind, m: Mapping[str, Any], program: Mapping[str, Any], row: Any
) -> str | None:
    """Why this message may not go out under the consent state just read (None: it may)."""
    if row is None:
        status, held = consent.current(
            conn, m["contact_id"], program
        )  # no row: brand-wide opt-out still counts
        evidence = None
    else:
        status, held, evidence = Status(row.status), bool(row.held), row.consent_event_id
    if status is Status.UNSUBSCRIBED:
        return "opted out"
    if kind is Kind.TRANSACTIONAL:
        return None
    if status is not Status.SUBSCRIBED:
        return f"not subscribed ({status.value})"
    if evidence is None:
        return "no consent evidence"
    if held:
        return "held for review"
    return None


class _History:
    """What the batch's recipients already received: for caps, state daily limits and monthly opt-out text.

    Read set-based for the whole batch, then updated in memory as the batch approves messages.
    """

    def __init__(self, conn: Connection, now: datetime, batch: list[dict[str, Any]],
                 programs: Mapping[int, Any], people: Mapping[int, Any]) -> None:  # fmt: skip
        self.now = now
        self.conn = conn
        self.people = people
        contact_ids = sorted({m["contact_id"] for m in batch})
        longest = timedelta(days=1)
        for p in programs.values():
            cap = caps.from_settings((p or {}).get("settings") or {})
            if cap:
                longest = max(longest, cap.window)
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        since = min(now - longest, month_start)
        self.sent: dict[int, list[tuple[int, str, datetime]]] = defaultdict(
            list
        )  # contact -> (program, kind, at)
        rows = conn.execute(
            select(messages.c.contact_id, messages.c.program_id, messages.c.kind, messages.c.handed_over_at).where(
                one_of(conn, messages.c.contact_id, contact_ids), messages.c.status.in_(HANDED_OVER),
                messages.c.handed_over_at >= since, messages.c.kind.in_((Kind.MARKETING.value, Kind.TRANSACTIONAL.value)))
        )  # fmt: skip
        for r in rows:
            self.sent[r.contact_id].append((r.program_id, r.kind, as_utc(r.handed_over_at)))
        self.month_start = month_start
        self.programs = programs

    def note_handover(self, m: Mapping[str, Any], at: datetime) -> None:
        if m["kind"] in (Kind.MARKETING.value, Kind.TRANSACTIONAL.value):
            self.sent[m["contact_id"]].append((m["program_id"], m["kind"], at))

    def first_this_month(self, m: Mapping[str, Any]) -> bool:
        return not any(p == m["program_id"] and k == Kind.MARKETING.value and at >= self.month_start
                       for p, k, at in self.sent[m["contact_id"]])  # fmt: skip

    def quiet_or_capped(self, m: Mapping[str, Any], person: Mapping[str, Any], settings: Mapping[str, Any],
                        kind: Kind) -> tuple[str, datetime | None, str] | None:  # fmt: skip
        """(status, not_before, reason) when the message must wait or be skipped; None when it may go."""
        zones = _zones(person)
        window = quiet_hours.window_for(person.get("us_state"))
        if not quiet_hours.allowed(self.now, zones, window):
            return (
                "deferred",
                quiet_hours.next_allowed(self.now, zones, window),
                f"quiet hours ({window.start:%H:%M}-{window.end:%H:%M} {', '.join(zones[:2])})",
            )
        limit = quiet_hours.daily_limit(person.get("us_state"))
        history = self.sent[m["contact_id"]]
        if limit is not None:
            decision = caps.check(limit, timedelta(days=1), [at for _, _, at in history], self.now, "defer")
            if not decision.ok:
                return (
                    "deferred",
                    decision.not_before,
                    f"{person.get('us_state')} law: {limit} messages per 24 hours",
                )
        if kind is Kind.MARKETING:
            cap = caps.from_settings(settings)
            if cap:
                times = [at for p, k, at in history if p == m["program_id"] and k == Kind.MARKETING.value]
                decision = caps.check(cap.max, cap.window, times, self.now, cap.action)
                if decision.skip:
                    return "skipped", None, cap.reason
                if not decision.ok:
                    return "deferred", decision.not_before, cap.reason
        return None


def _zones(person: Mapping[str, Any]) -> tuple[str, ...]:
    number_zones: tuple[str, ...] = ()
    if not person.get("time_zone"):
        try:
            number_zones = parse_phone(person["phone"], person.get("region") or "US").time_zones
        except InvalidPhoneNumber:
            number_zones = ()
    return quiet_hours.zones_for(person.get("time_zone"), number_zones, person.get("region"))


def _write(conn: Connection, clock: Clock, outcomes: list[_Outcome], *, expect: tuple[str, str]) -> set[int]:
    """Write the outcomes, each guarded by ``expect`` = (status, lease owner) the row must still have;
    returns the ids whose write landed. Every status write of dispatch goes through here, so a cancel, a
    pause's release or another worker's reclaim that committed meanwhile is never overwritten.

    Outcomes are grouped by the columns they set. On PostgreSQL a group is one ``UPDATE … FROM
    unnest(<one array per column>) … RETURNING``: the statement-level analytics trigger on ``messages``
    (adapters/db/counters.py) then runs once per group instead of once per message — it was most of the
    database's work per message — and the SQL text depends only on the column set, so it is compiled and
    prepared once. (A ``FROM (VALUES …)`` with one parameter per cell was measured slower than
    executemany: compiling 2,000 parameters per batch cost more than it saved.) SQLite has no
    statement-level triggers to save, and its executemany cannot say which rows matched: one UPDATE …
    RETURNING per row (in-process, microseconds each).
    """
    written: set[int] = set()
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for o in outcomes:
        groups[tuple(sorted(o.values))].append({"b_id": o.id, **o.values})
    status, owner = expect
    for columns, rows in groups.items():
        if conn.dialect.name == "postgresql":
            # A value shared by the whole group (status, hand-over time, provider…) is sent once.
            same = tuple(c for c in columns if all(r[c] == rows[0][c] for r in rows))
            params: dict[str, Any] = {n: [r[n] for r in rows] for n in ("b_id", *columns) if n not in same}
            params.update({c: rows[0][c] for c in same})
            params.update(expect_status=status, expect_owner=owner)
            written.update(conn.execute(_update_from_arrays(conn, columns, same), params).scalars())
            continue
        stmt = (
            update(messages)
            .where(messages.c.id == bindparam("b_id"), messages.c.status == status,
                   messages.c.lease_owner == owner)
            .values({c: bindparam(c) for c in columns})
            .returning(messages.c.id)
        )  # fmt: skip
        for row in rows:
            written.update(conn.execute(stmt, row).scalars())
    # A message that failed for good is an event for webhook endpoints, queued in this same write.
    failed = [o.id for o in outcomes if o.values.get("status") == "failed" and o.id in written]
    if failed:
        event_hooks.emit_message_failures(conn, clock, failed)
    return written


def _update_from_arrays(conn: Connection, columns: tuple[str, ...], same: tuple[str, ...]) -> TextClause:
    def sql_type(column: str) -> str:
        # VARCHAR(n)[] would silently truncate; the unbounded type lets the column's own limit refuse.
        return re.sub(r"\(\d+\)", "", messages.c[column].type.compile(dialect=conn.dialect))

    varying = [c for c in columns if c not in same]
    arrays = ", ".join(["CAST(:b_id AS BIGINT[])", *(f"CAST(:{c} AS {sql_type(c)}[])" for c in varying)])
    values = [f"{c} = CAST(:{c} AS {sql_type(c)})" if c in same else f"{c} = v.{c}" for c in columns]
    return text(
        f"UPDATE messages AS m SET {', '.join(values)} "
        f"FROM unnest({arrays}) AS v({', '.join(['b_id', *varying])}) "
        "WHERE m.id = v.b_id AND m.status = :expect_status AND m.lease_owner = :expect_owner RETURNING m.id"
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
