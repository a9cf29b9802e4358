"""The review queue: an operator decides an ambiguous reply, and the decision is a ledger event.

"Opt-out" records an ``opt_out``; "not an opt-out" records ``review_cleared`` (which lifts a review hold and
leaves the subscription as it was). Both go through ``consent.record`` with channel ``admin`` and the
operator's name, and the reply is marked decided in the same transaction.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select, update

from optline.adapters.clock import Clock
from optline.adapters.db import programs as program_repo
from optline.adapters.db.tables import inbound_messages
from optline.domain.consent import Action, Channel
from optline.services import consent


class Decision(StrEnum):
    OPT_OUT = "opt_out"
    NOT_OPT_OUT = "not_opt_out"


class ReviewError(LookupError):
    """The reply is unknown, already decided, or has no contact/program to decide for."""


def decide(
    conn: Connection, clock: Clock, inbound_id: int, decision: Decision, *, operator: str
) -> dict[str, Any]:
    row = conn.execute(select(inbound_messages).where(inbound_messages.c.id == inbound_id)).first()
    if row is None or not row.review:
        raise ReviewError(f"reply {inbound_id} is not in the review queue")
    if row.review_decided_at is not None:
        raise ReviewError(f"reply {inbound_id} was already decided")
    program = program_repo.get(conn, row.program_id) if row.program_id else None
    if row.contact_id is None or program is None:
        raise ReviewError(f"reply {inbound_id} has no known contact and program to decide for")
    action = Action.OPT_OUT if decision is Decision.OPT_OUT else Action.REVIEW_CLEARED
    change = consent.record(
        conn, clock, contact_id=row.contact_id, program=program, action=action, channel=Channel.ADMIN,
        evidence={
            "operator": operator, "note": f"review decision: {decision.value}", "inbound_message_id": row.id,
            "message_text": row.body,
        },
    )  # fmt: skip
    # A guarded update: if two operators click at once, only one decision marks the row.
    marked = conn.execute(
        update(inbound_messages)
        .where((inbound_messages.c.id == row.id) & inbound_messages.c.review_decided_at.is_(None))
        .values(review_decided_at=clock.now())
    ).rowcount
    if marked != 1:
        raise ReviewError(f"reply {inbound_id} was already decided")
    return change.event
