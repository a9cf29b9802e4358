"""The send-time rules a claimed message must pass, read set-based for a batch: consent (DESIGN.md
invariant 2), quiet hours and state daily limits, the program's frequency cap, first-of-month opt-out
text. The check transaction itself (what is read when, what is locked) is ``Dispatcher.check``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from optline.adapters.clock import as_utc
from optline.adapters.db.database import one_of
from optline.adapters.db.tables import messages
from optline.domain import caps, quiet_hours
from optline.domain.consent import Status
from optline.domain.phones import InvalidPhoneNumber, parse_phone
from optline.services import consent
from optline.services.outbox import Kind

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
