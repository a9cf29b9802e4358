"""The outbox contract: every message optline sends is a row in ``messages`` first.

Kinds and what dispatch checks at send time (the dispatcher is the one place that enforces this):
- ``marketing``: consent (subscribed with evidence, not held) for the program, quiet hours, caps.
- ``transactional``: consent not revoked (unsubscribed contacts get nothing), quiet hours.
- ``confirmation`` (the one reply to an opt-out or opt-in), ``help``, ``signup`` (double opt-in prompt):
  replies to something the person just sent; sent at once, even to an opted-out person and in quiet hours.

Replies travel in their own lane (``REPLY_LANE``): claimed before campaigns, so a large campaign cannot
hold up a confirmation.

Enqueueing is idempotent on ``idempotency_key``: enqueueing the same key twice returns the first row.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from optline.adapters.clock import Clock
from optline.adapters.db import bulk
from optline.adapters.db.tables import messages


class Kind(StrEnum):
    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"
    CONFIRMATION = "confirmation"
    HELP = "help"
    SIGNUP = "signup"


REPLY_KINDS = frozenset({Kind.CONFIRMATION, Kind.HELP, Kind.SIGNUP})

# The claim's lanes (``messages.priority``, lower first): a reply answers something the person just sent
# and must leave within seconds (FCC: the opt-out confirmation within 5 minutes), so it is claimed before
# any campaign message, however many are queued (services/dispatch.py ``claim``).
REPLY_LANE, BULK_LANE = 0, 1


def lane(kind: Kind) -> int:
    return REPLY_LANE if kind in REPLY_KINDS else BULK_LANE


def key(*parts: object) -> str:
    """A deterministic idempotency key from what makes a message unique (e.g. campaign id + contact id)."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:40]


# INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING *, built once per dialect (every reply and
# confirmation comes here; building it cost more than running it).
_ENQUEUE = {
    is_pg: dialect.insert(messages)
    .on_conflict_do_nothing(index_elements=["idempotency_key"])
    .returning(*messages.c)
    for is_pg, dialect in ((True, postgresql), (False, sqlite))
}

_COLUMNS = [
    "program_id", "contact_id", "to_phone", "from_phone", "kind", "priority", "body", "segments", "status",
    "idempotency_key", "campaign_id", "not_before", "optout_token", "attempts", "created_at", "updated_at",
]  # fmt: skip
_UNNESTED = bulk.unnested(messages, _COLUMNS)
# enqueue_many's: one statement a batch, giving back (id, idempotency key) of the rows it inserted.
_ENQUEUE_IDS_UNNESTED = (
    postgresql.insert(messages)
    .from_select(_COLUMNS, select(*(_UNNESTED.c[c] for c in _COLUMNS)))
    .on_conflict_do_nothing(index_elements=["idempotency_key"])
    .returning(messages.c.id, messages.c.idempotency_key)
)
_ENQUEUE_IDS = (
    sqlite.insert(messages)
    .on_conflict_do_nothing(index_elements=["idempotency_key"])
    .returning(messages.c.id, messages.c.idempotency_key)
)


def enqueue(
    conn: Connection,
    clock: Clock,
    *,
    program_id: int,
    contact_id: int,
    to_phone: str,
    kind: Kind,
    body: str,
    idempotency_key: str,
    from_phone: str | None = None,
    campaign_id: int | None = None,
    not_before: datetime | None = None,
    segments: int = 1,
    optout_token: str | None = None,
) -> dict[str, Any]:
    now = clock.now()
    values = {
        "program_id": program_id, "contact_id": contact_id, "to_phone": to_phone, "from_phone": from_phone,
        "kind": kind.value, "priority": lane(kind), "body": body, "segments": segments, "status": "queued",
        "idempotency_key": idempotency_key, "campaign_id": campaign_id, "not_before": not_before,
        "optout_token": optout_token, "attempts": 0, "created_at": now, "updated_at": now,
    }  # fmt: skip
    # One statement in the common case (a new key); a repeated key inserts nothing and reads the first row.
    row = conn.execute(_ENQUEUE[conn.dialect.name == "postgresql"], values).first()
    if row is None:
        row = conn.execute(select(messages).where(messages.c.idempotency_key == idempotency_key)).one()
    return dict(row._mapping)


def enqueue_many(conn: Connection, clock: Clock, items: list[dict[str, Any]]) -> list[int]:
    """``enqueue`` for several messages in one statement (a burst of STOP confirmations); their ids, in
    order. ``items``: each ``enqueue``'s keyword arguments, with distinct idempotency keys. A key already
    queued inserts nothing and gives its first row's id, as ``enqueue`` gives its first row.

    Only the ids come back: the whole rows (``RETURNING *``) cost more to read than the insert (on SQLite
    each of six times parsed from text), and a batch's caller wants the ids alone."""
    if len(items) == 1:
        return [int(enqueue(conn, clock, **items[0])["id"])]
    now = clock.now()
    rows = []
    for item in items:
        kind: Kind = item["kind"]
        rows.append(
            {
                "program_id": item["program_id"],
                "contact_id": item["contact_id"],
                "to_phone": item["to_phone"],
                "from_phone": item.get("from_phone"),
                "kind": kind.value,
                "priority": lane(kind),
                "body": item["body"],
                "segments": item.get("segments", 1),
                "status": "queued",
                "idempotency_key": item["idempotency_key"],
                "campaign_id": item.get("campaign_id"),
                "not_before": item.get("not_before"),
                "optout_token": item.get("optout_token"),
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
    # Rows come back in any order, and none for a key that was there: matched by their key.
    if conn.dialect.name == "postgresql":  # one statement text whatever the batch's size (bulk.unnested)
        inserted = conn.execute(_ENQUEUE_IDS_UNNESTED, bulk.unnest_params(_COLUMNS, rows))
    else:
        inserted = conn.execute(_ENQUEUE_IDS, rows)
    by_key: dict[str, int] = {key: id_ for id_, key in inserted}
    for row in rows:
        if row["idempotency_key"] not in by_key:
            by_key[row["idempotency_key"]] = conn.execute(
                select(messages.c.id).where(messages.c.idempotency_key == row["idempotency_key"])
            ).scalar_one()
    return [by_key[row["idempotency_key"]] for row in rows]
