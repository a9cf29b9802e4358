"""Claim and the send-time check (services/dispatch.py's docstring has the argument): ``SendCheck`` claims a
batch (reply lane first), reserves its senders' rate-limit slots (services/sender_limits.py), and runs THE
SEND-TIME CHECK in a transaction of its own; the rules it applies, read set-based for a batch: consent
(DESIGN.md invariant 2), quiet hours and state daily limits, the program's frequency cap, first-of-month
opt-out text.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, literal_column, or_, select, update
from sqlalchemy.sql import Select

from optline.adapters.clock import Clock, as_utc
from optline.adapters.db import programs as program_repo
from optline.adapters.db.database import Database, one_of, unindexed
from optline.adapters.db.tables import campaigns, contacts, messages, subscriptions
from optline.adapters.providers.base import OutboundSms, Sender
from optline.domain import caps, compose, quiet_hours, segments
from optline.domain.consent import Status
from optline.domain.optout_links import new_token
from optline.domain.phones import InvalidPhoneNumber, parse_phone
from optline.services import consent, recording, sender_limits
from optline.services.dispatch_model import (
    PERSON_COLUMNS,
    SEND_MARGIN,
    Counts,
    DispatchConfig,
    ToSend,
    rate_key,
)
from optline.services.handover import Handover, Pool
from optline.services.outbox import REPLY_KINDS, REPLY_LANE, Kind
from optline.services.recording import Outcome

log = logging.getLogger("optline.dispatch")
HANDED_OVER = ("sending", "sent", "delivered", "undelivered")  # counted for caps and state limits


def consent_refusal(
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


class History:
    """What the batch's recipients already received: for caps, state daily limits and monthly opt-out text.

    Read set-based for the whole batch, then updated in memory as the batch approves messages.
    """

    def __init__(
        self,
        conn: Connection,
        now: datetime,
        batch: list[dict[str, Any]],
        programs: Mapping[int, Any],
        people: Mapping[int, Any],
    ) -> None:
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
        # A search of the batch's people's messages (ix_messages_contact_time), never of every message handed
        # over: on SQLite the status test took ix_messages_claim and read the whole sent history once per
        # batch (50 ms per batch of confirmations with 50,000 sent messages), hence ``unindexed``.
        rows = conn.execute(
            select(
                messages.c.contact_id, messages.c.program_id, messages.c.kind, messages.c.handed_over_at
            ).where(
                one_of(conn, messages.c.contact_id, contact_ids),
                unindexed(messages.c.status).in_(HANDED_OVER),
                messages.c.handed_over_at >= since,
                messages.c.kind.in_((Kind.MARKETING.value, Kind.TRANSACTIONAL.value)),
            )
        )
        for r in rows:
            self.sent[r.contact_id].append((r.program_id, r.kind, as_utc(r.handed_over_at)))
        self.month_start = month_start
        self.programs = programs

    def note_handover(self, m: Mapping[str, Any], at: datetime) -> None:
        if m["kind"] in (Kind.MARKETING.value, Kind.TRANSACTIONAL.value):
            self.sent[m["contact_id"]].append((m["program_id"], m["kind"], at))

    def first_this_month(self, m: Mapping[str, Any]) -> bool:
        return not any(
            p == m["program_id"] and k == Kind.MARKETING.value and at >= self.month_start
            for p, k, at in self.sent[m["contact_id"]]
        )

    def quiet_or_capped(
        self, m: Mapping[str, Any], person: Mapping[str, Any], settings: Mapping[str, Any], kind: Kind
    ) -> tuple[str, datetime | None, str] | None:
        """(status, not_before, reason) when the message must wait or be skipped; None when it may go."""
        zones = _zones(person)
        window = quiet_hours.window_for(person.get("us_state"), quiet_hours.program_window(settings))
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


class SendCheck:
    """Claim, rate-limit reservation and THE SEND-TIME CHECK of a batch (services/dispatch.py's docstring
    has the argument). A part of ``Dispatcher``, which provides the attributes below."""

    db: Database
    clock: Clock
    sender: Sender
    config: DispatchConfig
    worker_id: str

    def _the_pool(self) -> Pool:
        raise NotImplementedError

    def _give_way(self) -> None:
        raise NotImplementedError

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
            .values(
                status="claimed",
                lease_owner=self.worker_id,
                lease_expires_at=now + self._lease(),
                updated_at=now,
            )
            .returning(*messages.c)
        ).all()
        return [r._asdict() for r in rows]

    def pick(self, conn: Connection, now: datetime, limit: int, *, reply: bool) -> Select[tuple[int]]:
        """The ids one lane's claim takes (its own statement, so a test can EXPLAIN it)."""
        sending_campaigns = select(campaigns.c.id).where(campaigns.c.status == "sending")
        ready = and_(
            messages.c.status.in_(("queued", "deferred")),
            or_(messages.c.not_before.is_(None), messages.c.not_before <= now),
        )
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

    def _sending_lease(self) -> timedelta:
        # A hand-over is reclaimed (after a crash) no sooner than the provider's reconcile_after past it: a
        # message it accepted may show in its list only then, and an earlier look would send it twice.
        return self._lease() + timedelta(seconds=getattr(self.sender, "reconcile_after", 0.0))

    # -- 2. the send-time check --------------------------------------------------------------------
    def check(
        self,
        conn: Connection,
        claimed: list[dict[str, Any]],
        counts: Counts,
        slots: Mapping[int, float] | None = None,
    ) -> list[ToSend]:
        """THE SEND-TIME CHECK of a claimed batch; ``slots``: each message's reserved start (rate limits)."""
        slots = slots or {}
        ids = [m["id"] for m in claimed]
        # Re-read our rows: only those still claimed by us go on (a slow worker may have lost its lease).
        current = {
            r.id: r
            for r in conn.execute(
                select(messages.c.id, messages.c.status, messages.c.lease_owner).where(
                    one_of(conn, messages.c.id, ids)
                )
            )
        }
        ours = [
            m
            for m in claimed
            if current[m["id"]].status == "claimed" and current[m["id"]].lease_owner == self.worker_id
        ]
        counts.lost += len(claimed) - len(ours)
        claimed = ours
        if not claimed:
            return []
        campaign_status = {
            r.id: r.status
            for r in conn.execute(
                select(campaigns.c.id, campaigns.c.status).where(
                    campaigns.c.id.in_({m["campaign_id"] for m in claimed if m["campaign_id"]})
                )
            )
        }
        programs = {pid: program_repo.get(conn, pid) for pid in {m["program_id"] for m in claimed}}
        people: dict[int, Any] = {
            r.id: r._mapping
            for r in conn.execute(
                select(*(contacts.c[c] for c in PERSON_COLUMNS)).where(
                    one_of(conn, contacts.c.id, sorted({m["contact_id"] for m in claimed}))
                )
            )
        }

        # THE CHECK: the consent projection, read now, after the claim (see the module docstring).
        pairs = sorted({(m["contact_id"], m["program_id"]) for m in claimed if m["kind"] not in REPLY_KINDS})
        consent_rows: dict[tuple[int, int], Any] = {}
        if pairs:
            stmt = select(
                subscriptions.c.contact_id,
                subscriptions.c.program_id,
                subscriptions.c.status,
                subscriptions.c.held,
                subscriptions.c.consent_event_id,
            ).where(
                # Both keys as arrays (one parameter each, whatever the batch size); pairs outside the
                # batch that this also matches are dropped below.
                one_of(conn, subscriptions.c.contact_id, sorted({c for c, _ in pairs})),
                one_of(conn, subscriptions.c.program_id, sorted({p for _, p in pairs})),
            )
            if conn.dialect.name == "postgresql":
                stmt = stmt.order_by(subscriptions.c.contact_id, subscriptions.c.program_id).with_for_update(
                    read=True
                )
            wanted = set(pairs)
            consent_rows = {
                (r.contact_id, r.program_id): r
                for r in conn.execute(stmt)
                if (r.contact_id, r.program_id) in wanted
            }
        # Taken after the read: handed_over_at is later than every opt-out the check could see.
        now = self.clock.now()

        history = History(conn, now, claimed, programs, people)
        outcomes: list[Outcome] = []
        to_send: list[ToSend] = []
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
                        m["body"],
                        brand=program["brand"],
                        program_name=program["name"],
                        phone=person["phone"],
                        attributes=person.get("attributes") or {},
                        locale=person.get("locale"),
                        settings=settings,
                        marketing=kind is Kind.MARKETING,
                        first_this_month=history.first_this_month(m),
                        public_url=self.config.public_url,
                        optout_token=token,
                    )
                except compose.TemplateError as exc:
                    outcomes.append(
                        Outcome(
                            m["id"],
                            {**base, "status": "failed", "reason": str(exc)[:200], "error_code": "template"},
                            "failed",
                        )
                    )
                    continue
                body, segs = composed.body, segments.count(composed.body).segments
            history.note_handover(m, now)
            outcomes.append(
                Outcome(
                    m["id"],
                    {
                        "status": "sending",
                        "handed_over_at": now,
                        "attempts": m["attempts"] + 1,
                        "body": body,
                        "segments": segs,
                        "optout_token": token,
                        "provider": self.sender.name,
                        "reason": None,
                        "updated_at": now,
                        "consent_event_id": authorised_by,
                        "lease_expires_at": now + self._sending_lease(),
                    },
                )
            )
            reconcile = as_utc(m["handed_over_at"]) if m["handed_over_at"] else None
            sender_number = (
                m["from_phone"]
                or next(iter(program.get("sender_numbers") or []), None)
                or program.get("short_code")
            )
            sms = OutboundSms(
                to=m["to_phone"],
                from_=sender_number,
                body=body,
                idempotency_key=m["idempotency_key"],
                status_callback_url=self.config.status_callback_url,
            )
            handover = Handover(
                m["id"],
                sms,
                reconcile,
                rate_key(m, program),
                slots.get(m["id"]),
                reply=m["priority"] == REPLY_LANE,
            )
            to_send.append(ToSend({**m, "body": body}, handover, m["attempts"] + 1, program))
        to_send = self._hold_for_campaigns(conn, to_send, outcomes, now)
        # Every write is guarded (still 'claimed', still ours): a cancel or a reclaim that committed since
        # our claim wins, and a row whose guard failed is neither handed over nor counted as ours.
        written = recording.write(conn, self.clock, outcomes, expect=("claimed", self.worker_id))
        recording.tally(outcomes, written, counts, "check")
        return [item for item in to_send if item.row["id"] in written]

    def _hold_for_campaigns(
        self, conn: Connection, to_send: list[ToSend], outcomes: list[Outcome], now: datetime
    ) -> list[ToSend]:
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
        kept: list[ToSend] = []
        for item in to_send:
            cid = item.row["campaign_id"]
            if cid not in stopped:
                kept.append(item)
                continue
            status = "cancelled" if state.get(cid) == "cancelled" else "queued"
            outcomes[by_id[item.row["id"]]] = Outcome(item.row["id"], {**base, "status": status}, "released")
        return kept

    def _on_clock(self, epoch: float) -> datetime:
        """A wall-clock slot time on the dispatch clock (a test's clock may be set elsewhere). The offset is
        read at one instant: measured against a ``clock.now()`` taken before the reservation's transaction, it
        moved every due time earlier by that transaction's duration (seconds on a loaded machine), before the
        sender's next slot."""
        return datetime.fromtimestamp(epoch, UTC) + (self.clock.now() - datetime.now(UTC))

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
                due = self._on_clock(until)
                released.append(
                    Outcome(
                        m["id"],
                        {
                            "status": "queued",
                            "not_before": due,
                            "lease_owner": None,
                            "lease_expires_at": None,
                            "updated_at": stamp,
                        },
                        "released",
                    )
                )
        rated = {k: (r, [m for m in ms if m["id"] not in held]) for k, (r, ms) in rated.items()}
        rated = {k: v for k, v in rated.items() if v[1]}
        if not rated:
            return {}, released
        lanes = {
            k: (
                [m for m in ms if m["priority"] == REPLY_LANE],
                [m for m in ms if m["priority"] != REPLY_LANE],
            )
            for k, (_, ms) in rated.items()
        }
        self._give_way()
        with self.db.transaction() as conn:
            got = sender_limits.reserve(
                conn,
                {k: (rated[k][0], len(r), len(b)) for k, (r, b) in lanes.items()},
                now,
                self.config.send_window,
            )
        slots: dict[int, float] = {}
        for key, (rate, _ms) in rated.items():
            left: list[dict[str, Any]] = []
            for lane, times in zip(lanes[key], got.get(key, ([], [])), strict=True):
                for m, at in zip(lane, times, strict=False):
                    slots[m["id"]] = at
                left += lane[len(times) :]
            last = max((slots[m["id"]] for m in rated[key][1] if m["id"] in slots), default=None)
            after = last + 1 / rate if last is not None else now + self.config.send_window / 2
            due = self._on_clock(after)
            for m in left:
                released.append(
                    Outcome(
                        m["id"],
                        {
                            "status": "queued",
                            "not_before": due,
                            "lease_owner": None,
                            "lease_expires_at": None,
                            "updated_at": stamp,
                        },
                        "released",
                    )
                )
        return slots, released

    # -- 3. hand over and record --------------------------------------------------------------------
