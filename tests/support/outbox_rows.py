"""Writing outbox and inbound rows straight into the tables, for analytics and audit tests.

The dispatcher and the inbound service write these rows in production; the analytics tests need messages
in precise states at precise times, so they insert them directly (the counters' triggers see every write,
whoever makes it).
"""

from __future__ import annotations

from datetime import datetime
from itertools import count
from typing import Any

from sqlalchemy import Connection, insert, update

from optline.adapters.db.tables import campaigns, inbound_messages, messages

_seq = count(1)


def campaign(
    conn: Connection, program: dict[str, Any], name: str, at: datetime, **extra: Any
) -> dict[str, Any]:
    values = {
        "program_id": program["id"], "name": name, "template": f"{name}: hello. Reply STOP to opt out",
        "message_type": "marketing", "audience_filter": {}, "status": "done", "created_at": at, **extra,
    }  # fmt: skip
    return dict(conn.execute(insert(campaigns).values(**values).returning(*campaigns.c)).one()._mapping)


def message(
    conn: Connection,
    *,
    program: dict[str, Any],
    contact: dict[str, Any],
    at: datetime,
    campaign: dict[str, Any] | None = None,
    status: str = "delivered",
    kind: str = "marketing",
) -> int:
    """A message created at ``at`` as queued, then moved through the statuses the way dispatch does."""
    n = next(_seq)
    mid = conn.execute(
        insert(messages)
        .values(
            campaign_id=campaign["id"] if campaign else None,
            program_id=program["id"],
            contact_id=contact["id"],
            kind=kind,
            to_phone=contact["phone"],
            body="hi",
            segments=1,
            status="queued",
            idempotency_key=f"test-{n}",
            attempts=0,
            created_at=at,
            updated_at=at,
        )
        .returning(messages.c.id)
    ).scalar_one()
    path = {
        "queued": [],
        "cancelled": ["cancelled"],
        "suppressed": ["suppressed"],
        "failed": ["sending", "failed"],
        "sent": ["sending", "sent"],
        "delivered": ["sending", "sent", "delivered"],
        "undelivered": ["sending", "sent", "undelivered"],
    }[status]
    for step in path:
        values: dict[str, Any] = {"status": step, "updated_at": at}
        if step == "sent":
            values["sent_at"] = at
        if step == "delivered":
            values["delivered_at"] = at
        conn.execute(update(messages).where(messages.c.id == mid).values(**values))
    return int(mid)


def inbound(
    conn: Connection,
    *,
    contact: dict[str, Any],
    program: dict[str, Any],
    body: str,
    at: datetime,
    intent: str = "other",
    review: bool = False,
    decided_at: datetime | None = None,
) -> int:
    n = next(_seq)
    return int(
        conn.execute(
            insert(inbound_messages)
            .values(
                provider="simulator",
                provider_message_id=f"in-{n}",
                from_phone=contact["phone"],
                to_phone="+14155550100",
                body=body,
                contact_id=contact["id"],
                program_id=program["id"],
                intent=intent,
                review=review,
                review_decided_at=decided_at,
                received_at=at,
            )
            .returning(inbound_messages.c.id)
        ).scalar_one()
    )
