"""The review queue: an operator decides an ambiguous reply, and the decision is a ledger event.

"Opt-out" records an ``opt_out``; "not an opt-out" records ``review_cleared`` (which lifts a review hold and
leaves the subscription as it was). Both go through ``consent.record`` with channel ``admin`` and the
operator's name, and the reply is marked decided in the same transaction.

A reply sent to a number of no program has no program to decide for. A clear opt-out of that kind already
stopped every subscription when it arrived (services/inbound.py); it waits here so that an operator sees it
(and adds the number to its program), and can only be marked "seen": nothing but the person's own act
undoes an opt-out. An unclear one is decided as "opt-out" (every subscription stops) or "not an opt-out"
(nothing was held, so nothing is recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, RowMapping, select, update

from optline.adapters.clock import Clock
from optline.adapters.db import programs as program_repo
from optline.adapters.db.tables import inbound_messages
from optline.domain.consent import Action, Channel
from optline.services import consent
from optline.services.inbound import unrouted_reason


class Decision(StrEnum):
    OPT_OUT = "opt_out"
    NOT_OPT_OUT = "not_opt_out"
    SEEN = "seen"  # an unrouted opt-out that already stopped everything: the operator has seen it


class ReviewError(LookupError):
    """The reply is unknown, already decided, or has no contact/program to decide for."""


def stopped_everything(row: Mapping[str, Any] | RowMapping) -> bool:
    """Whether a queued reply is an opt-out to a number of no program that already stopped every
    subscription when it arrived (the only kind of queued reply with an event and no program)."""
    return row["program_id"] is None and row["consent_event_id"] is not None


def decide(
    conn: Connection, clock: Clock, inbound_id: int, decision: Decision, *, operator: str
) -> dict[str, Any] | None:
    """Record the operator's decision; returns the consent event it recorded (None when it records none)."""
    row = conn.execute(select(inbound_messages).where(inbound_messages.c.id == inbound_id)).first()
    if row is None or not row.review:
        raise ReviewError(f"reply {inbound_id} is not in the review queue")
    if row.review_decided_at is not None:
        raise ReviewError(f"reply {inbound_id} was already decided")
    if row.contact_id is None:
        raise ReviewError(f"reply {inbound_id} has no known contact to decide for")
    evidence = {
        "operator": operator, "note": f"review decision: {decision.value}", "inbound_message_id": row.id,
        "message_text": row.body,
    }  # fmt: skip
    if decision is Decision.SEEN and not stopped_everything(row._mapping):
        raise ReviewError(f"reply {inbound_id} needs a decision: opt-out or not an opt-out")
    if row.program_id is None:
        event = _decide_unrouted(conn, clock, dict(row._mapping), decision, evidence)
    else:
        program = program_repo.get(conn, row.program_id)
        if program is None:
            raise ReviewError(f"reply {inbound_id} has no known program to decide for")
        action = Action.OPT_OUT if decision is Decision.OPT_OUT else Action.REVIEW_CLEARED
        event = consent.record(
            conn,
            clock,
            contact_id=row.contact_id,
            program=program,
            action=action,
            channel=Channel.ADMIN,
            evidence=evidence,
        ).event
    # A guarded update: if two operators click at once, only one decision marks the row.
    marked = conn.execute(
        update(inbound_messages)
        .where((inbound_messages.c.id == row.id) & inbound_messages.c.review_decided_at.is_(None))
        .values(review_decided_at=clock.now())
    ).rowcount
    if marked != 1:
        raise ReviewError(f"reply {inbound_id} was already decided")
    return event


def _decide_unrouted(
    conn: Connection, clock: Clock, row: Mapping[str, Any], decision: Decision, evidence: dict[str, Any]
) -> dict[str, Any] | None:
    if stopped_everything(row):
        if decision is Decision.NOT_OPT_OUT:
            raise ReviewError(
                f"reply {row['id']} was an opt-out sent to {row['to_phone']}, a number of no program: it already "
                "stopped every subscription, and only the person can undo that (by texting START); mark it seen"
            )
        return None
    if decision is not Decision.OPT_OUT:
        return None  # nothing was held for an unclear reply without a program: nothing to lift
    changes = consent.revoke_all(
        conn,
        clock,
        contact_id=row["contact_id"],
        channel=Channel.ADMIN,
        evidence={**evidence, "unrouted": unrouted_reason(row["to_phone"])},
    )
    return changes[0].event if changes else None
