"""Recording what dispatch decided and what the provider answered: every status write of dispatch, guarded.

``write`` is the one place a dispatch status write happens: each row must still have the status and lease
owner the writer expects, so a cancel, a pause's release or another worker's reclaim that committed
meanwhile is never overwritten (the row is left alone and counted as ``lost``).
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, select, text, update
from sqlalchemy.sql.elements import TextClause

from optline.adapters import metrics
from optline.adapters.clock import Clock
from optline.adapters.db.database import Database, one_of, unindexed
from optline.adapters.db.tables import campaigns, messages
from optline.adapters.providers.base import Sender, reconcile_delay
from optline.domain import retry
from optline.domain.consent import Action, Channel
from optline.services import consent, event_hooks, receipts, sender_limits
from optline.services.handover import Delivery, deliver_now

if TYPE_CHECKING:  # dispatch_model imports handover, which this module must not import back at run time
    from optline.services.dispatch_model import Counts, DispatchConfig, ToSend

log = logging.getLogger("optline.dispatch")


@dataclass
class Outcome:
    id: int
    values: dict[str, Any]
    tally: str | None = None  # the Counts field this outcome adds one to, once its guarded write landed


def write(conn: Connection, clock: Clock, outcomes: list[Outcome], *, expect: tuple[str, str]) -> set[int]:
    """Write the outcomes, each guarded by ``expect`` = (status, lease owner) the row must still have;
    returns the ids whose write landed. Every status write of dispatch goes through here, so a cancel, a
    pause's release or another worker's reclaim that committed meanwhile is never overwritten.

    Outcomes are grouped by the columns they set. On PostgreSQL a group is one ``UPDATE … FROM
    unnest(<one array per column>) … RETURNING``: the statement-level analytics trigger on ``messages``
    (adapters/db/counters.py) then runs once per group instead of once per message — it was most of the
    database's work per message — and the SQL text depends only on the column set, so it is compiled and
    prepared once. (A ``FROM (VALUES …)`` with one parameter per cell was measured slower than
    executemany: compiling 2,000 parameters per batch cost more than it saved.) SQLite has no
    statement-level triggers to save, and its executemany cannot say which rows matched: the matching
    ids are read first, then one executemany (one UPDATE … RETURNING per row was most of the recorder
    thread's CPU in the worker's profile).
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
            written.update(conn.execute(update_from_arrays(conn, columns, same), params).scalars())
            continue
        # SQLite: which rows the guard matches, then one executemany for them. The write transaction holds
        # the database's write lock from its first statement (BEGIN IMMEDIATE), so nothing commits between
        # the two; the UPDATE keeps the guard all the same.
        # (The ids drive the read: SQLite's planner took the status index, reading every row in flight.)
        matched = set(
            conn.execute(
                select(messages.c.id).where(
                    one_of(conn, messages.c.id, [r["b_id"] for r in rows]),
                    unindexed(messages.c.status) == status,
                    messages.c.lease_owner == owner,
                )
            ).scalars()
        )
        mine = [r for r in rows if r["b_id"] in matched]
        if mine:
            conn.execute(
                update(messages)
                .where(
                    messages.c.id == bindparam("b_id"),
                    messages.c.status == status,
                    messages.c.lease_owner == owner,
                )
                .values({c: bindparam(c) for c in columns}),
                mine,
            )
        written |= matched
    # A message that failed for good is an event for webhook endpoints, queued in this same write.
    failed = [o.id for o in outcomes if o.values.get("status") == "failed" and o.id in written]
    if failed:
        event_hooks.emit_message_failures(conn, clock, failed)
    return written


def update_from_arrays(conn: Connection, columns: tuple[str, ...], same: tuple[str, ...]) -> TextClause:
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


def tally(outcomes: list[Outcome], written: set[int], counts: Counts, step: str) -> None:
    for o in outcomes:
        if o.id not in written:
            counts.lost += 1
        elif o.tally is not None:
            setattr(counts, o.tally, getattr(counts, o.tally) + 1)
    lost = [o.id for o in outcomes if o.id not in written]
    if lost:
        log.warning(
            "%s: %d message(s) no longer ours, left alone (cancelled or reclaimed): %s",
            step,
            len(lost),
            lost[:20],
        )


class Recording:
    """What the provider answered, stored: outcomes by the retry policy (domain/retry.py), receipts that
    came first, opt-outs at the provider as ledger events, 429 pauses, campaigns paused on configuration
    errors. A part of ``Dispatcher``, which provides the attributes below."""

    db: Database
    clock: Clock
    sender: Sender
    config: DispatchConfig
    worker_id: str
    _latency: float

    def deliver(self, item: ToSend) -> Outcome:
        """One call, here and now (tests): the outcome to record."""
        return self._outcome(item, deliver_now(self.sender, item.handover, self.clock.now))

    def _outcome(self, item: ToSend, delivery: Delivery) -> Outcome:
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
                return Outcome(
                    item.row["id"],
                    {
                        **untouched,
                        **errors,
                        "reason": decision.reason,
                        "not_before": now + timedelta(seconds=decision.delay),
                    },
                )
            if decision.verdict is retry.Verdict.CONFIG:
                config_error = exc
            elif decision.verdict is retry.Verdict.RETRY:
                assert decision.delay is not None
                # An accepted message may show in the provider's list only later: the retry reconciles
                # first, so it waits at least the sender's reconcile_after.
                delay = max(decision.delay, reconcile_delay(self.sender, exc))
                return Outcome(
                    item.row["id"],
                    {
                        **base,
                        **errors,
                        "status": "queued",
                        "reason": decision.reason,
                        "not_before": now + timedelta(seconds=delay),
                    },
                )
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
            return Outcome(
                item.row["id"],
                {
                    **untouched,
                    "reason": f"{what} ({config_error.code}): {config_error.message}"[:200],
                    "error_code": config_error.code,
                    "error_message": config_error.message[:500],
                    "not_before": wait,
                },
            )
        assert delivery.provider_id is not None
        return Outcome(
            item.row["id"],
            {
                **base,
                "status": "sent",
                "provider_message_id": delivery.provider_id,
                "sent_at": now,
                "error_code": None,
                "error_message": None,
            },
        )

    def record(self, conn: Connection, items: list[ToSend], outcomes: list[Outcome], counts: Counts) -> None:
        # Only rows still 'sending' and ours are updated; a reclaimer reconciles anything we lost.
        tallies = {"sent": "sent", "queued": "retried", "suppressed": "suppressed"}
        for o in outcomes:
            o.tally = tallies.get(o.values["status"], "failed")
        provider_ids = {
            o.values["provider_message_id"]: o.id for o in outcomes if o.values["status"] == "sent"
        }
        # Before the write: a receipt for these ids arriving now waits, then finds its message (receipts.py).
        receipts.lock_keys(conn, self.sender.name, sorted(provider_ids))
        written = write(conn, self.clock, outcomes, expect=("sending", self.worker_id))
        tally(outcomes, written, counts, "record")
        # Receipts that arrived before their message's provider id was stored: applied now, in this write.
        receipts.apply_pending(
            conn,
            self.clock,
            self.sender.name,
            {pid: mid for pid, mid in provider_ids.items() if mid in written},
        )
        by_id = {i.row["id"]: i for i in items}
        for o in outcomes:
            item = by_id[o.id]
            if o.values["status"] == "suppressed":
                # The provider says this person opted out: that is a consent event (ledger), never ignored.
                consent.record(
                    conn,
                    self.clock,
                    contact_id=item.row["contact_id"],
                    program=item.opted_out_program or {},
                    action=Action.OPT_OUT,
                    channel=Channel.PROVIDER,
                    evidence={
                        "provider": self.sender.name,
                        "error_code": o.values["error_code"],
                        "message_id": item.row["id"],
                        "error_message": o.values["error_message"],
                    },
                )
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
            update(campaigns)
            .where(campaigns.c.id == campaign_id, campaigns.c.status == "sending")
            .values(status="paused", pause_reason=reason[:300])
            .returning(campaigns.c.name)
        ).first()
        if row is not None:
            log.error("campaign %r paused: %s; fix the provider account, then resume it", row.name, reason)
