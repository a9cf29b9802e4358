"""The record of each contacts import: who imported which file into which program, when, what came of it,
and every row that was rejected (or imported without its consent: held) with its line and reason.

Kept in the database, not in a file one process owns, so the results page opens after the upload and later,
from any ``serve`` process, and an import run with the CLI shows there too. The rejected rows are inserted
in batches while the file is read (``COPY`` on PostgreSQL), all of them: a million-row file with 15,000 bad
rows stores 15,000 rows, never a sample, and memory stays bounded by one batch.

The import itself is ``services/contacts_import.py``; this module only listens (its ``RejectSink``) and
records the outcome: done, interrupted (the database failed midway: the error names the lines), refused
(the file as a whole: nothing was imported, so no rejected rows are kept either).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from optline.adapters.clock import Clock
from optline.adapters.db import bulk
from optline.adapters.db.database import Database
from optline.adapters.db.tables import import_rejects, imports, programs
from optline.services.contacts_import import (
    HELD,
    ImportError_,
    ImportInterrupted,
    ImportSummary,
    import_file,
)

log = logging.getLogger(__name__)

FLUSH_ROWS = 2000  # rejected rows held in memory before they are written
PAGE_ROWS = 100  # rejected rows per page of the results page
BATCH = 2000  # rejected rows read per query by the CSV export

# What each counter of ImportSummary means, in the order a person reads them (the CLI's table and the page).
OUTCOMES = (
    ("rows", "rows read"), ("created", "contacts created"), ("updated", "contacts updated"),
    ("unchanged", "contacts unchanged"), ("consent_recorded", "consent recorded (opt-in events)"),
    ("already_subscribed", "already subscribed"), ("kept_opted_out", "held: opted out, consent not recorded"),
    ("without_consent", "no consent evidence (no marketing)"), ("rejected", "rejected"),
)  # fmt: skip

_REJECT_COLUMNS = ("import_id", "line", "reason", "held", "fields")


def counts(summary: ImportSummary) -> dict[str, int]:
    """Every counter the import keeps (a counter added to ``ImportSummary`` is recorded without a change here)."""
    return {f.name: v for f in fields(summary) if isinstance(v := getattr(summary, f.name), int)}


class _Recorder:
    """The import's ``RejectSink``: rows are buffered and inserted a batch at a time, each in its own short
    transaction (the import calls it outside its own write transactions, so SQLite's one writer is free)."""

    def __init__(self, db: Database, import_id: int) -> None:
        self.db, self.import_id = db, import_id
        self.columns: list[str] = []
        self._rows: list[tuple[Any, ...]] = []

    def header(self, columns: list[str]) -> None:
        self.columns = list(columns)

    def reject(self, line: int, reason: str, fields: list[str]) -> None:
        self._rows.append((self.import_id, line, reason, reason.startswith(HELD), json.dumps(fields)))
        if len(self._rows) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            with self.db.transaction() as conn:
                bulk.insert_tuples(conn, import_rejects.name, _REJECT_COLUMNS, self._rows)
            self._rows = []


def start(
    db: Database, clock: Clock, program: dict[str, Any], *, file_name: str, source: str, imported_by: str
) -> int:
    """A new import record (status ``running``); its id names the results page."""
    with db.transaction() as conn:
        return int(
            conn.execute(
                insert(imports)
                .values(
                    program_id=program["id"],
                    file_name=file_name[:255],
                    source=source,
                    imported_by=imported_by[:100],
                    started_at=clock.now(),
                    status="running",
                )
                .returning(imports.c.id)
            ).scalar_one()
        )


def run(
    db: Database,
    clock: Clock,
    import_id: int,
    path: Path,
    program: dict[str, Any],
    *,
    default_region: str = "US",
    rejects_path: Path | None = None,
    on_progress: Callable[[int], None] | None = None,
    encoding: str | None = None,
) -> ImportSummary:
    """``contacts_import.import_file`` with its outcome and rejected rows recorded under ``import_id``.

    The import's exceptions are raised unchanged once the record says what happened."""
    recorder = _Recorder(db, import_id)
    try:
        summary = import_file(
            db,
            clock,
            path,
            program,
            default_region=default_region,
            rejects_path=rejects_path,
            on_progress=on_progress,
            encoding=encoding,
            reject_sink=recorder,
        )
    except ImportInterrupted as exc:
        recorder.flush()
        _finish(db, clock, import_id, "interrupted", exc.summary, recorder.columns, str(exc))
        raise
    except ImportError_ as exc:
        # Nothing was imported: the rows listed so far are not "rejected" from anything.
        _finish(db, clock, import_id, "refused", None, recorder.columns, str(exc), drop_rejects=True)
        raise
    except BaseException as exc:
        _failed(db, clock, import_id, recorder, exc)
        raise
    recorder.flush()
    _finish(db, clock, import_id, "done", summary, recorder.columns)
    return summary


def _failed(db: Database, clock: Clock, import_id: int, recorder: _Recorder, exc: BaseException) -> None:
    """Best effort: the database that failed may refuse this too; the caller reports the original error."""
    error = f"the import failed ({type(getattr(exc, 'orig', None) or exc).__name__}): {exc}"[:2000]
    try:
        recorder.flush()
        _finish(db, clock, import_id, "failed", None, recorder.columns, error)
    except SQLAlchemyError:
        log.warning("could not record that import %s failed", import_id, exc_info=True)


def _finish(
    db: Database,
    clock: Clock,
    import_id: int,
    status: str,
    summary: ImportSummary | None,
    columns: list[str],
    error: str | None = None,
    *,
    drop_rejects: bool = False,
) -> None:
    values: dict[str, Any] = {
        "status": status,
        "finished_at": clock.now(),
        "error": error,
        "columns": columns,
    }
    if summary is not None:
        values.update(
            counts=counts(summary),
            encoding=summary.encoding or None,
            reject_reasons=dict(summary.reject_reasons),
            held_reasons=dict(summary.held_reasons),
            notes=list(summary.notes),
        )
    with db.transaction() as conn:
        if drop_rejects:
            conn.execute(delete(import_rejects).where(import_rejects.c.import_id == import_id))
        conn.execute(update(imports).where(imports.c.id == import_id).values(**values))


# --- reading the records ------------------------------------------------------------------------------


def _with_program() -> Any:
    return select(imports, programs.c.name.label("program")).join(
        programs, programs.c.id == imports.c.program_id
    )


def get(conn: Connection, import_id: int) -> dict[str, Any] | None:
    row = conn.execute(_with_program().where(imports.c.id == import_id)).mappings().first()
    return dict(row) if row else None


def recent(
    conn: Connection, *, before: int | None = None, limit: int = 50
) -> tuple[list[dict[str, Any]], int | None]:
    """The newest imports (ids below ``before``), and the ``before`` of the next page or None."""
    query = _with_program().order_by(imports.c.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(imports.c.id < before)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    return rows[:limit], (rows[limit - 1]["id"] if len(rows) > limit else None)


def rejects_page(
    conn: Connection, import_id: int, *, after: int = 0, limit: int = PAGE_ROWS
) -> tuple[list[dict[str, Any]], int | None]:
    """Rejected rows in line order after line ``after``, and the ``after`` of the next page or None."""
    rows = [
        dict(r)
        for r in conn.execute(
            select(
                import_rejects.c.line, import_rejects.c.reason, import_rejects.c.held, import_rejects.c.fields
            )
            .where((import_rejects.c.import_id == import_id) & (import_rejects.c.line > after))
            .order_by(import_rejects.c.line)
            .limit(limit + 1)
        ).mappings()
    ]
    return rows[:limit], (rows[limit - 1]["line"] if len(rows) > limit else None)


def rejects_rows(db: Database, record: dict[str, Any]) -> Iterator[list[Any]]:
    """The rejects file as the import writes it (``line``, ``reason``, the file's columns), in line order:
    fixed and imported again, it is read like the original. Keyset batches, each in a read of its own."""
    yield ["line", "reason", *record["columns"]]
    after = 0
    while True:
        with db.read() as conn:
            rows, after_next = rejects_page(conn, record["id"], after=after, limit=BATCH)
        for r in rows:
            yield [r["line"], r["reason"], *r["fields"]]
        if after_next is None:
            return
        after = after_next
