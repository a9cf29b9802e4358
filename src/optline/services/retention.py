"""Retention: deleting working data that has served its purpose (run by the worker's housekeeping).

Two tables grow without bound otherwise:
- ``pending_receipts``: status callbacks kept until their message's provider id is stored (services/receipts.py).
  One that matched nothing for days never will (dispatch records an id within its lease and reconcile_after).
  Kept for ever, though, is an opt-out receipt whose opt-out could not be recorded (no usable number): it is
  the only trace of a person's STOP and an operator must see it. An opt-out that was recorded is in the
  ledger with the receipt's numbers and ids as evidence; its pending row is a copy.
- ``import_rejects``: every rejected row of every import, shown on the import's results page. After the
  retention period the rows go; the import's record (counts, reasons per count) stays, with
  ``rejects_purged_at`` saying when and why its rows are gone.

Never touched: consent_events, ledger digests and checkpoints, messages, imports themselves — evidence.

Deletes run in batches, each its own short transaction: a million rejected rows must not hold SQLite's write
lock (or a PostgreSQL row lock on the hot path) for the whole purge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, exists, func, select, update

from optline.adapters.clock import Clock
from optline.adapters.db.database import Database
from optline.adapters.db.tables import import_rejects, imports, pending_receipts

log = logging.getLogger("optline.retention")
BATCH = 5_000


@dataclass
class Purged:
    pending_receipts: int = 0
    import_rejects: int = 0
    imports: int = 0  # imports whose rejected rows were deleted

    @property
    def total(self) -> int:
        return self.pending_receipts + self.import_rejects


def purge_pending_receipts(db: Database, clock: Clock, days: float, *, batch: int = BATCH) -> int:
    """Delete receipts kept longer than ``days`` for a message that never matched (0: keep all), except
    opt-out receipts whose opt-out was not recorded. Returns how many were deleted."""
    if days <= 0:
        return 0
    cutoff = clock.now() - timedelta(days=days)
    unrecorded_optout = pending_receipts.c.opted_out & pending_receipts.c.consent_event_id.is_(None)
    old = (pending_receipts.c.received_at < cutoff) & ~unrecorded_optout
    deleted = 0
    while True:
        with db.transaction() as conn:
            ids = list(conn.execute(select(pending_receipts.c.id).where(old).limit(batch)).scalars())
            if ids:
                conn.execute(delete(pending_receipts).where(pending_receipts.c.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch:
            return deleted


def purge_import_rejects(db: Database, clock: Clock, days: float, *, batch: int = BATCH) -> tuple[int, int]:
    """Delete the rejected rows of imports that ended more than ``days`` ago (0: keep all), marking each
    import's record. Returns (rows deleted, imports purged)."""
    if days <= 0:
        return 0, 0
    now = clock.now()
    cutoff = now - timedelta(days=days)
    # An import whose process died keeps status 'running' and no end: its start counts (none runs for days).
    ended = func.coalesce(imports.c.finished_at, imports.c.started_at)
    with db.read() as conn:
        due = list(
            conn.execute(
                select(imports.c.id)
                .where((ended < cutoff) & exists().where(import_rejects.c.import_id == imports.c.id))
                .order_by(imports.c.id)
            ).scalars()
        )
    deleted = 0
    for import_id in due:
        while True:
            with db.transaction() as conn:
                # The line that ends this batch: delete by range of the primary key (import_id, line).
                last = conn.execute(
                    select(import_rejects.c.line)
                    .where(import_rejects.c.import_id == import_id)
                    .order_by(import_rejects.c.line)
                    .offset(batch - 1)
                    .limit(1)
                ).scalar()
                where = import_rejects.c.import_id == import_id
                if last is not None:
                    where = where & (import_rejects.c.line <= last)
                deleted += conn.execute(delete(import_rejects).where(where)).rowcount
                if last is None:
                    conn.execute(
                        update(imports).where(imports.c.id == import_id).values(rejects_purged_at=now)
                    )
                    break
    return deleted, len(due)


def purge(db: Database, clock: Clock, *, pending_receipts_days: float, import_rejects_days: float) -> Purged:
    """Both purges; logs what was deleted (nothing when nothing was)."""
    result = Purged()
    result.pending_receipts = purge_pending_receipts(db, clock, pending_receipts_days)
    result.import_rejects, result.imports = purge_import_rejects(db, clock, import_rejects_days)
    if result.pending_receipts:
        log.info(
            "retention: deleted %d pending receipt(s) that matched no message for %g days",
            result.pending_receipts,
            pending_receipts_days,
        )
    if result.import_rejects:
        log.info(
            "retention: deleted %d rejected row(s) of %d import(s) that ended more than %g days ago",
            result.import_rejects,
            result.imports,
            import_rejects_days,
        )
    return result
