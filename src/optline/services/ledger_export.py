"""``optline ledger export``: the ledger as JSON lines that a standard-library script can check.

Line 1 describes the export; then every event (in contact, seq order) with exactly the fields its hash
covers, plus ``id`` and ``hash``; then every ledger digest with the heads it recorded. tools/verify_export.py
(no optline import) recomputes the event hashes, the chains and the digest chain, and compares the digests
with a checkpoint log. Times are written in the one form that is hashed (domain.ledger.iso).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from optline.adapters.db.ledger import ordered_events
from optline.adapters.db.tables import ledger_digest_heads, ledger_digests
from optline.domain.ledger import iso

FORMAT = 1
EVENT_FIELDS = ("contact_id", "seq", "program_id", "brand", "action", "channel", "evidence", "prev_hash")


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def lines(conn: Connection, *, since: datetime | None, now: datetime) -> Iterator[str]:
    yield _line(
        {"type": "export", "format": FORMAT, "created_at": iso(now), "since": iso(since) if since else None}
    )
    for e in ordered_events(conn):
        if since is not None and e["recorded_at"] is not None and _aware(e["recorded_at"]) < since:
            continue
        event = {k: e[k] for k in EVENT_FIELDS}
        event.update(
            type="event",
            id=e["id"],
            hash=e["hash"],
            evidence=e["evidence"] or {},
            occurred_at=iso(e["occurred_at"]),
            recorded_at=iso(e["recorded_at"]),
        )
        yield _line(event)
    heads: dict[int, list[list[Any]]] = {}
    # yield_per on the statement, not the connection (which it would change for every later statement).
    for h in conn.execute(
        select(ledger_digest_heads)
        .order_by(ledger_digest_heads.c.digest_id, ledger_digest_heads.c.contact_id)
        .execution_options(yield_per=10000)
    ):
        heads.setdefault(h.digest_id, []).append([h.contact_id, h.seq, h.hash])
    for d in conn.execute(select(ledger_digests).order_by(ledger_digests.c.id)):
        yield _line(
            {
                "type": "digest",
                "id": d.id,
                "created_at": iso(d.created_at),
                "prev_digest": d.prev_digest,
                "digest": d.digest,
                "heads": heads.get(d.id, []),
            }
        )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
