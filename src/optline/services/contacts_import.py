"""Importing contacts from real-world CSV files: staged, merged set-based, every row accounted for.

Two phases, on one connection:

1. **Stage.** The file is read (``adapters/csv_file``: encoding by BOM / ``encoding`` / strict UTF-8, hostile
   input refused with its line), each row parsed in Python (phone, dates, evidence) — for files from
   ``PARALLEL_FROM_BYTES`` in worker processes, one per core (``adapters/worker_pool``: the rows come back
   in file order; reading and writing stay in this process) — and written to a temporary staging table —
   by ``COPY`` on PostgreSQL, by multi-row ``INSERT`` on SQLite (``adapters/db/bulk``). Rows that cannot be
   imported go to the rejects file with their line and reason. Nothing outside the staging table is written
   yet, so a file that turns out to be unreadable at its last line leaves nothing behind: the import is
   refused as a whole (``ImportError_``) and the error names what and where. Duplicates within the file are
   then found in SQL (every repeat of a phone number after its first line is rejected, naming that line).
2. **Merge** in chunks of lines, one transaction each (so inbound opt-outs never wait long for the write
   lock): new contacts by ``INSERT … SELECT … ON CONFLICT DO NOTHING``; existing ones merged; consent
   evidence through ``consent.record_opt_ins`` (the ledger rules: an opted-out person's import is held, never
   re-subscribed — invariant 4). Contacts the chunk created (most rows) start their chains in bulk: the parse
   workers already wrote each row's evidence in its canonical JSON text, so the merge hashes and stores it as
   it is, and events and projection rows go out as tuples (``COPY`` on PostgreSQL), never as dicts. On
   PostgreSQL the server's own work per row (indexes, the six foreign-key checks of an event and its
   projection row) is then most of the merge, so there two backends merge alternate chunks at once, each
   chunk still one transaction, committed strictly in file order (``adapters/db/ordered_commits``). If the
   database fails in this phase (or the process is killed), the committed chunks are a prefix of the file:
   ``ImportInterrupted`` reports exactly which lines were imported and which were not (importing the same file
   again finishes it: imports are idempotent).

Memory stays bounded: rows are staged in batches (at most two batches per worker in flight); duplicate
detection is in the database, not a Python set.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from optline.adapters import csv_file, heap, worker_pool
from optline.adapters.clock import Clock
from optline.adapters.db import bulk, ordered_commits
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.database import Database, one_of
from optline.adapters.db.tables import UtcDateTime, contacts
from optline.domain.consent import Channel, ConsentRefused, check_opt_in_time
from optline.domain.csv_safety import SafeWriter, unescape_cell
from optline.domain.dates import parse_datetime
from optline.domain.phones import InvalidPhoneNumber, parse_phone
from optline.services import consent

PHONE_COLUMNS = ("phone", "phone_number", "mobile", "mobile_number", "cell", "number", "msisdn", "tel")
CONSENT_COLUMNS = {"consented_at", "consent_source", "consent_text", "ip", "user_agent", "consent_url"}
CONTACT_COLUMNS = {"locale", "language", "time_zone", "timezone"}
_NOT_ATTRIBUTES = frozenset(CONSENT_COLUMNS | CONTACT_COLUMNS)
STAGE_BATCH = 5000  # rows parsed in Python before they are written to the staging table
# Files from this size are parsed in worker processes (one per core): below it, starting them (~1 s) costs
# more than it saves. PARSE_BATCH rows go to a worker at a time.
PARALLEL_FROM_BYTES = 4 << 20
PARSE_BATCH = 2000
SHARE_BLOCK = 64 << 10  # bytes of staged rows passed to the second merge connection at a time
MERGE_LINES = 10000  # lines per merge transaction (SQLite's IN lists stay under its 32,766 variables)
HELD = "contact imported, consent not recorded"
# The columns a rejects file starts with (then the file's own); one of ours imported again is recognised.
REJECTS_COLUMNS = ("line", "reason")
REJECTS_NOTE = (
    "the first two columns, line and reason, are those of a rejects file: ignored (not stored as attributes)"
)

_staging_metadata = MetaData()
# One per connection (temporary), dropped when the import ends.
staging = Table(
    "optline_import_staging",
    _staging_metadata,
    Column("line", Integer, primary_key=True, autoincrement=False),
    Column("phone", String(20), nullable=False),
    Column("region", String(2)),
    Column("number_type", String(30), nullable=False),
    Column("number_tz", String(64)),  # the zone the number fixes (new contacts, when the file names none)
    Column("time_zone", String(64)),  # the zone the file names
    Column("us_state", String(2)),
    Column("locale", String(10)),
    Column("attributes", JSON, nullable=False),
    Column("consented_at", String(40)),  # ISO 8601 with offset, read back with datetime.fromisoformat
    # NULL: no consent evidence in the row. Its canonical JSON text (domain.ledger.canonical_json), computed in
    # the parse workers: the merge hashes and stores it as it is, with no dict in between.
    Column("evidence", JSON),
    Column("raw", Text, nullable=False),  # the row's fields as JSON, for the rejects file
    prefixes=["TEMPORARY"],
)
_COLUMNS = [c.name for c in staging.columns]
_NEW_CONTACT = [
    "phone", "region", "number_type", "time_zone", "time_zone_overridden", "us_state", "locale", "attributes",
    "created_at", "updated_at",
]  # fmt: skip


@dataclass
class ImportSummary:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    consent_recorded: int = 0
    already_subscribed: int = 0
    kept_opted_out: int = 0
    without_consent: int = 0
    rejected: int = 0
    reject_reasons: Counter[str] = field(default_factory=Counter)
    held_reasons: Counter[str] = field(default_factory=Counter)  # imported, consent not recorded: why
    rejects_path: Path | None = None
    encoding: str = ""
    notes: list[str] = field(default_factory=list)  # what the import did with the file that is no rejection

    @property
    def accepted(self) -> int:
        return self.rows - self.rejected

    def add(self, merged: ImportSummary) -> None:
        """Add a merged chunk's outcome (phase 2) to this file's summary."""
        for name in (
            "created",
            "updated",
            "unchanged",
            "consent_recorded",
            "already_subscribed",
            "kept_opted_out",
            "without_consent",
        ):
            setattr(self, name, getattr(self, name) + getattr(merged, name))
        self.held_reasons.update(merged.held_reasons)


class RejectSink(Protocol):
    """Told of the rejects file's rows as they are written (``services/imports.py`` stores them).

    Called only while the import holds no write lock (staging writes a temporary table; held rows are written
    after their merge transaction commits): the sink writes to the database on a connection of its own."""

    def header(self, columns: list[str]) -> None: ...

    def reject(self, line: int, reason: str, fields: list[str]) -> None: ...


class _RejectsWriter(SafeWriter):
    """The rejects file, each row also handed to a ``RejectSink``: its first row is the header."""

    def __init__(self, out: IO[str], sink: RejectSink) -> None:
        super().__init__(out)
        self._sink, self._header_written = sink, False

    def writerow(self, row: Iterable[Any]) -> Any:
        row = list(row)
        if self._header_written:
            self._sink.reject(row[0], row[1], row[2:])
        else:
            self._sink.header(row[2:])
            self._header_written = True
        return super().writerow(row)


class ImportError_(ValueError):
    """The file as a whole cannot be imported (not CSV, not readable, no phone column); nothing was stored.

    The message says what and where in the file; callers prefix the file's name."""


class ImportInterrupted(ImportError_):
    """The database failed while merging: lines before ``next_line`` are imported, the rest are not."""

    def __init__(self, message: str, summary: ImportSummary, next_line: int) -> None:
        super().__init__(message)
        self.summary, self.next_line = summary, next_line


def _normalise_header(name: str) -> str:
    return unescape_cell(name.strip()).lower().replace(" ", "_").replace("-", "_")


def _reason_key(reason: str) -> str:
    return reason.split(":")[0].split(" (")[0][:60]


def import_file(
    db: Database,
    clock: Clock,
    path: Path,
    program: dict[str, Any],
    *,
    default_region: str = "US",
    rejects_path: Path | None = None,
    on_progress: Callable[[int], None] | None = None,
    encoding: str | None = None,
    reject_sink: RejectSink | None = None,
) -> ImportSummary:
    """Import ``path`` into ``program``; ``encoding`` is used for files without a byte-order mark.

    ``reject_sink`` is told of every row written to the rejects file (rejected or held), as it is written."""
    summary = ImportSummary(rejects_path=rejects_path or path.with_suffix(".rejects.csv"))
    assert summary.rejects_path is not None
    try:
        with (
            heap.frozen(),  # collections walk this job's rows, not every module's objects (adapters/heap)
            db.engine.connect() as conn,
            bulk.large_cache(conn),
            path.open("rb") as raw,
            summary.rejects_path.open("w", newline="", encoding="utf-8") as rejects_file,
        ):
            rejects = (
                SafeWriter(rejects_file) if reject_sink is None else _RejectsWriter(rejects_file, reject_sink)
            )
            try:
                _create_staging(conn)
                try:
                    _stage(
                        conn, raw, path, encoding, default_region, clock.now(), summary, rejects, on_progress
                    )
                except csv_file.CsvFileError as exc:
                    raise ImportError_(f"{exc}; nothing was imported") from None
                _reject_duplicates(conn, summary, rejects)
                _merge(db, conn, clock, program, summary, rejects)
            finally:
                _drop_staging(conn)
    except ImportInterrupted:
        raise  # its rejects file lists the rows of the lines that were imported
    except ImportError_:
        summary.rejects_path.unlink(missing_ok=True)  # nothing was imported: no half a rejects file either
        raise
    return summary


def _create_staging(conn: Connection) -> None:
    with conn.begin():
        staging.drop(conn, checkfirst=True)
        staging.create(conn)


def _drop_staging(conn: Connection) -> None:
    if conn.invalidated or conn.closed:
        return  # a broken connection is discarded by the pool, and its temporary table with it
    try:
        if conn.in_transaction():
            conn.rollback()
        with conn.begin():
            staging.drop(conn, checkfirst=True)
    except SQLAlchemyError:  # pragma: no cover - the connection died; the pool discards it
        conn.invalidate()


# --- phase 1: read, parse and stage every row ---------------------------------------------------------


def _stage(
    conn: Connection,
    raw: IO[bytes],
    path: Path,
    encoding: str | None,
    region: str,
    now: datetime,
    summary: ImportSummary,
    rejects: SafeWriter,
    on_progress: Callable[[int], None] | None,
) -> None:
    enc = csv_file.detect_encoding(raw.read(4), encoding)
    raw.seek(0)
    summary.encoding = enc.label
    lines = csv_file.lines(raw, enc, on_progress)
    first = next(lines, "")
    if not first.strip():
        raise ImportError_("the file is empty (or its first line is blank)")
    delimiter = csv_file.sniff_delimiter(first)
    header_row = next(csv_file.records(iter([first]), delimiter), (1, []))[1]
    header = [_normalise_header(h) for h in header_row]
    records = csv_file.records(lines, delimiter, first_line=2)
    if [h.strip() for h in header_row[:2]] == list(REJECTS_COLUMNS):
        # A rejects file of ours imported again as it is (fixed, its first two columns left in): those are
        # the earlier import's line and reason, not facts about the person to keep as attributes.
        header = header[2:]
        records = ((line, row[2:]) for line, row in records)
        summary.notes.append(REJECTS_NOTE)
    phone_col = next((c for c in PHONE_COLUMNS if c in header), None)
    if phone_col is None:
        raise ImportError_(f"no phone column in the first line (expected one of: {', '.join(PHONE_COLUMNS)})")
    rejects.writerow([*REJECTS_COLUMNS, *header])
    batch: list[tuple[Any, ...]] = []
    parse_row = _RowParser(header, phone_col, region, now)
    workers = worker_pool.default_workers() if path.stat().st_size >= PARALLEL_FROM_BYTES else 1
    parsed = (
        _parse_in_workers(records, parse_row, workers) if workers > 1 else _parse_here(records, parse_row)
    )
    # Staging writes only the temporary table: a plain (not IMMEDIATE) transaction takes no write lock.
    conn.execution_options(optline_write=False)
    with conn.begin():
        for line, row, staged in parsed:
            summary.rows += 1
            if isinstance(staged, str):
                _reject(summary, rejects, line, staged, row)
                continue
            batch.append(staged)
            if len(batch) >= STAGE_BATCH:
                _write_staged(conn, batch)
                batch = []
        _write_staged(conn, batch)
    _index_staging(conn)


# A row parsed: its staging tuple, or why it is rejected.
_Parsed = tuple[Any, ...] | str


def _parse_or_reason(parse_row: _RowParser, line: int, row: list[str]) -> _Parsed:
    try:
        return parse_row(line, row)
    except ValueError as exc:
        return str(exc)


def _parse_here(
    records: Iterator[tuple[int, list[str]]], parse_row: _RowParser
) -> Iterator[tuple[int, list[str], _Parsed]]:
    for line, row in records:
        yield line, row, _parse_or_reason(parse_row, line, row)


def _parse_in_workers(
    records: Iterator[tuple[int, list[str]]], parse_row: _RowParser, workers: int
) -> Iterator[tuple[int, list[str], _Parsed]]:
    """The same, with the parsing in worker processes (the file is read and the rows staged here, in order)."""
    batches = iter(lambda: list(islice(records, PARSE_BATCH)), [])
    for batch, results in worker_pool.ordered_map(
        _parse_batch, batches, workers=workers, initializer=_start_parser, initargs=(parse_row,)
    ):
        for (line, row), staged in zip(batch, results, strict=True):
            yield line, row, staged


_worker_parser: _RowParser | None = None  # in a worker process: the file's parser, set once


def _start_parser(parse_row: _RowParser) -> None:
    global _worker_parser
    _worker_parser = parse_row


def _parse_batch(batch: list[tuple[int, list[str]]]) -> list[_Parsed]:
    assert _worker_parser is not None, "a parse worker starts with _start_parser"
    return [_parse_or_reason(_worker_parser, line, row) for line, row in batch]


def _reject(summary: ImportSummary, rejects: SafeWriter, line: int, reason: str, row: list[str]) -> None:
    summary.rejected += 1
    summary.reject_reasons[_reason_key(reason)] += 1
    rejects.writerow([line, reason, *row])


class _RowParser:
    """Turns one row into its staging tuple, or raises ValueError with the reason. Built once per file from
    its header; plain data, so each parse worker gets a copy (``_start_parser``)."""

    def __init__(self, header: list[str], phone_col: str, region: str, now: datetime) -> None:
        self.header, self.phone_col, self.region, self.now = header, phone_col, region, now
        self.width = len(header)

    def __call__(self, line: int, row: list[str]) -> tuple[Any, ...]:
        header = self.header
        if len(row) > self.width:
            raise ValueError(f"too many columns: {len(row)} fields for {self.width} header columns")
        cells = [c.strip() for c in row]
        cells = [unescape_cell(c) if c[:1] == "'" else c for c in cells]  # only a quote can need undoing
        if len(cells) < self.width:
            cells += [""] * (self.width - len(cells))
        values = dict(zip(header, cells, strict=True))  # a repeated header name: its last column, as before
        phone_col = self.phone_col
        try:
            phone = parse_phone(values[phone_col], self.region)
        except InvalidPhoneNumber as exc:
            raise ValueError(f"bad phone number: {exc}") from None
        consented_at = None
        if values.get("consented_at"):
            try:
                consented_at = parse_datetime(values["consented_at"])
            except ValueError as exc:
                raise ValueError(f"bad consented_at date: {exc}") from None
            try:  # the time of consent is checked again against their last opt-out when it is recorded
                check_opt_in_time(consented_at, now=self.now, last_opt_out=None)
            except ConsentRefused as exc:
                raise ValueError(f"bad consented_at date: {values['consented_at']!r}: {exc}") from None
        evidence: str | None = None
        source = values.get("consent_source") or values.get("consent_url")
        if consented_at and (source or values.get("consent_text")):
            evidence = _evidence_json(values, source or "import", line)
        attributes = {k: v for k, v in values.items() if v and k != phone_col and k not in _NOT_ATTRIBUTES}
        time_zone = values.get("time_zone") or values.get("timezone") or None
        return (
            line, phone.e164, phone.region, phone.number_type, phone.time_zone, time_zone, phone.us_state,
            values.get("locale") or values.get("language") or None, _json_object(attributes),
            consented_at.isoformat() if consented_at and evidence else None,
            evidence, _json_list(row),
        )  # fmt: skip


_EVIDENCE_COLUMNS = tuple(sorted(CONSENT_COLUMNS - {"consented_at"}))
# The evidence's keys in canonical (sorted) order: its file's consent columns, "source" and "file_line".
_EVIDENCE_ORDER = tuple(sorted((*_EVIDENCE_COLUMNS, "source", "file_line")))
_quote_canonical = json.encoder.encode_basestring  # how canonical_json quotes strings (ensure_ascii=False)


def _evidence_json(values: dict[str, str], source: str, line: int) -> str:
    """``canonical_json`` of a row's evidence ({its non-empty consent columns, source, file_line}), written
    without building the dict and running the encoder over it: that was a fifth of a row's parsing. Byte for
    byte the same text (tests/unit/test_ledger_chain.py): the ledger hashes it as it is."""
    parts = []
    for key in _EVIDENCE_ORDER:
        if key == "file_line":
            parts.append(f'"file_line":{int(line)}')
        elif key == "source":
            parts.append(f'"source":{_quote_canonical(source)}')
        elif value := values.get(key):
            parts.append(f"{_quote_canonical(key)}:{_quote_canonical(value)}")
    return "{" + ",".join(parts) + "}"


_quote = json.encoder.encode_basestring_ascii  # what json.dumps quotes strings with


# JSON text of a row's cells and of its attributes (strings only), as json.dumps writes them but without
# building an encoder per call: that was a third of a row's parsing.
def _json_list(cells: list[str]) -> str:
    return "[" + ", ".join(map(_quote, cells)) + "]"


def _json_object(items: dict[str, str]) -> str:
    return "{" + ", ".join([f"{_quote(k)}: {_quote(v)}" for k, v in items.items()]) + "}"


def _write_staged(conn: Connection, batch: list[tuple[Any, ...]]) -> None:
    # COPY on PostgreSQL: one stream, no statement to parse per row (the multi-row INSERT's cost).
    bulk.insert_tuples(conn, staging.name, _COLUMNS, batch)


def _index_staging(conn: Connection) -> None:
    """SQLite: the phone index, for finding the file's duplicates (``_reject_duplicates``). PostgreSQL: the
    statistics only — it finds them by hashing every staged row whatever the indexes (EXPLAIN), and the
    merge reads the staged rows by line."""
    if conn.dialect.name != "postgresql":
        with conn.begin():
            conn.exec_driver_sql(f"CREATE INDEX ix_{staging.name}_phone ON {staging.name} (phone)")
    _analyze_staging(conn)


def _analyze_staging(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        # Temporary tables are never auto-analysed: without statistics the merge joins would guess. Only
        # the columns the merge selects and joins by: the wide text columns (raw, attributes, evidence)
        # were most of ANALYZE's time, and no plan depends on their statistics.
        with conn.begin():
            conn.exec_driver_sql(f"ANALYZE {staging.name} (line, phone)")


def _reject_duplicates(conn: Connection, summary: ImportSummary, rejects: SafeWriter) -> None:
    """Every repeat of a phone number after its first line is rejected, naming that line."""
    first = (
        select(staging.c.phone, func.min(staging.c.line).label("first"))
        .group_by(staging.c.phone)
        .having(func.count() > 1)
        .subquery()
    )
    with conn.begin():
        repeats = conn.execute(
            select(staging.c.line, staging.c.phone, staging.c.raw, first.c.first)
            .join(first, first.c.phone == staging.c.phone)
            .where(staging.c.line > first.c.first)
            .order_by(staging.c.line)
        ).all()
        for r in repeats:
            _reject(
                summary,
                rejects,
                r.line,
                f"duplicate: phone {r.phone} is already on line {r.first}",
                json.loads(r.raw),
            )
        if repeats:
            # By the lines just found: a second self-join of every staged row (half this step's time on
            # PostgreSQL) would find the same ones.
            conn.execute(delete(staging).where(one_of(conn, staging.c.line, [r.line for r in repeats])))


# --- phase 2: merge the staged rows, a chunk of lines per transaction ---------------------------------


def _merge(
    db: Database,
    conn: Connection,
    clock: Clock,
    program: dict[str, Any],
    summary: ImportSummary,
    rejects: SafeWriter,
) -> None:
    with conn.begin():
        low, high = conn.execute(select(func.min(staging.c.line), func.max(staging.c.line))).one()
    if low is None:
        return
    conn.execution_options(optline_write=True)  # SQLite: BEGIN IMMEDIATE, writers queue instead of failing
    chunks = [(start, start + MERGE_LINES - 1) for start in range(low, high + 1, MERGE_LINES)]

    def merge(c: Connection, lines: tuple[int, int]) -> tuple[ImportSummary, list[list[Any]]]:
        chunk, held = ImportSummary(), list[list[Any]]()
        _merge_chunk(c, clock, program, *lines, chunk, held)
        return chunk, held

    start = low  # the first line not yet imported
    with ExitStack() as stack:  # left in reverse: chunks still in flight roll back, then the helper goes
        try:
            conns = [conn]
            if conn.dialect.name == "postgresql" and len(chunks) > 1:
                # A second backend merges every other chunk (adapters/db/ordered_commits: commits stay in
                # file order). It reads the staged rows of its chunks from a temporary table of its own.
                helper = stack.enter_context(db.engine.connect())
                stack.callback(_drop_staging, helper)
                _share_staging(conn, helper, low)
                conns.append(helper)
            merged = stack.enter_context(closing(ordered_commits.in_order(conns, chunks, merge)))
            for (_, end), (chunk, held) in merged:
                summary.add(chunk)  # counted only once committed: a chunk that failed was rolled back whole
                for row in held:
                    rejects.writerow(row)
                start = end + 1
        except (DBAPIError, SQLAlchemyError) as exc:
            done = (
                f"lines 2–{start - 1} are imported ({summary.created:,} contacts created, "
                f"{summary.consent_recorded:,} consent events)"
                if start > low
                else "nothing was imported"
            )
            raise ImportInterrupted(
                f"the database failed while importing lines {start}–{start + MERGE_LINES - 1} ({type(getattr(exc, 'orig', None) or exc).__name__}):"
                f" {done}; lines from {start} on are not — import the same file again to finish"
                " (rows already imported are recognised, not doubled)",
                summary,
                start,
            ) from exc


def _share_staging(source: Connection, target: Connection, low: int) -> None:
    """PostgreSQL: copy the staged rows of every other chunk (the second, fourth, …) into ``target``'s own
    staging table, as COPY's bytes passed through (no row is decoded here)."""
    names = ", ".join(_COLUMNS)
    _create_staging(target)
    with source.begin(), target.begin():
        reader = source.connection.driver_connection.cursor()  # type: ignore[union-attr]
        writer = target.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with (
            reader.copy(
                f"COPY (SELECT {names} FROM {staging.name} WHERE (line - {int(low)}) / {MERGE_LINES} % 2 = 1)"
                " TO STDOUT"
            ) as out,
            writer.copy(f"COPY {staging.name} ({names}) FROM STDIN") as into,
        ):
            # COPY TO yields a row at a time; each write is a round of the driver's wait loop, so rows are
            # passed on in blocks of SHARE_BLOCK bytes, not one by one.
            block = bytearray()
            for row in out:
                block += row
                if len(block) >= SHARE_BLOCK:
                    into.write(bytes(block))
                    block.clear()
            if block:
                into.write(bytes(block))
    _analyze_staging(target)


def _in_chunk(start: int, end: int) -> Any:
    return staging.c.line.between(start, end)


def _merge_chunk(
    conn: Connection,
    clock: Clock,
    program: dict[str, Any],
    start: int,
    end: int,
    summary: ImportSummary,
    held: list[list[Any]],
) -> None:
    now = clock.now()
    new = select(
        staging.c.phone,
        staging.c.region,
        staging.c.number_type,
        func.coalesce(staging.c.time_zone, staging.c.number_tz),
        staging.c.time_zone.is_not(None),
        staging.c.us_state,
        staging.c.locale,
        staging.c.attributes,
        literal(now, UtcDateTime),
        literal(now, UtcDateTime),
    ).where(_in_chunk(start, end))
    # Rows whose contact exists are left out by ON CONFLICT DO NOTHING (one probe of the phone index each)
    # and merged below — so is one that a first text or a sign-up created meanwhile, instead of failing the
    # chunk. No NOT EXISTS first: PostgreSQL planned it as a hash anti-join that read every contact for
    # each chunk (once autovacuum had analysed the table), a cost growing with the table — 8 µs a row at
    # 200,000 contacts — for what the conflict check does anyway. (A row left out this way still draws an
    # id from the sequence: gaps in contact ids, which mean nothing.)
    inserted = conn.execute(
        contact_repo.insert_ignoring_duplicates(conn)
        .from_select(_NEW_CONTACT, new)
        .returning(contacts.c.id, contacts.c.phone)
    ).all()
    summary.created += len(inserted)
    ids = {r.phone: r.id for r in inserted}  # phone -> contact id, for every staged row once merged below
    created_here = frozenset(ids.values())
    staged = conn.execute(select(func.count()).select_from(staging).where(_in_chunk(start, end))).scalar_one()
    # Existing contacts are looked up only when the insert left rows out: a first import (most rows of most
    # files) skips the join of the chunk's rows with contacts, which found nothing (2 µs a row of the
    # server's time on PostgreSQL).
    if len(ids) < staged:
        _merge_existing(conn, start, end, now, summary, ids)
    _record_consent(conn, clock, program, start, end, summary, held, staged, created_here, ids)


def _merge_existing(
    conn: Connection, start: int, end: int, now: datetime, summary: ImportSummary, ids: dict[str, int]
) -> None:
    """Merge staged rows into contacts that exist (file values win; attributes are merged key by key);
    adds each one's phone and id to ``ids`` (phones already there, the contacts this chunk created, are
    skipped)."""
    found: Any = contacts
    if conn.dialect.name == "postgresql":
        # Each staged row's contact by one probe of the phone index (LATERAL … LIMIT 1; phones are unique):
        # as a join, PostgreSQL hashed every contact for each chunk (53 ms against 28 ms a chunk at 197,000
        # contacts, EXPLAIN ANALYZE), a cost that grows with the table. SQLite probes the index by itself.
        found = (
            select(
                contacts.c.id,
                contacts.c.phone,
                contacts.c.attributes,
                contacts.c.locale,
                contacts.c.time_zone,
            )
            .where(contacts.c.phone == staging.c.phone)
            .limit(1)
            .lateral()
        )
    rows = conn.execute(
        select(
            found.c.id,
            found.c.phone,
            found.c.attributes,
            found.c.locale,
            found.c.time_zone,
            staging.c.attributes.label("new_attributes"),
            staging.c.locale.label("new_locale"),
            staging.c.time_zone.label("new_time_zone"),
        )
        .join(found, found.c.phone == staging.c.phone)
        .where(_in_chunk(start, end))
    ).all()
    changed: list[dict[str, Any]] = []
    for r in rows:
        if r.phone in ids:
            continue
        ids[r.phone] = r.id
        merged = {**(r.attributes or {}), **(r.new_attributes or {})}
        locale = r.new_locale or r.locale
        tz = r.new_time_zone or r.time_zone
        if merged != (r.attributes or {}) or locale != r.locale or tz != r.time_zone:
            changed.append({"b_id": r.id, "attributes": merged, "locale": locale, "time_zone": tz,
                            "updated_at": now})  # fmt: skip
        else:
            summary.unchanged += 1
    if changed:
        conn.execute(
            update(contacts)
            .where(contacts.c.id == bindparam("b_id"))
            .values(
                attributes=bindparam("attributes"),
                locale=bindparam("locale"),
                time_zone=bindparam("time_zone"),
                updated_at=bindparam("updated_at"),
            ),
            changed,
        )
        summary.updated += len(changed)


# Staged times of consent are few distinct texts in most files (a date per campaign): each parsed once.
_time_of = lru_cache(maxsize=4096)(datetime.fromisoformat)


def _record_consent(
    conn: Connection,
    clock: Clock,
    program: dict[str, Any],
    start: int,
    end: int,
    summary: ImportSummary,
    held: list[list[Any]],
    staged: int,
    created_here: frozenset[int],
    ids: dict[str, int],
) -> None:
    # The chunk's rows with evidence, read from staging alone: their contacts' ids are known (no join).
    # The evidence as its stored text (the SQL cast): it is hashed and stored as it is, never decoded.
    evidence = cast(staging.c.evidence, Text)
    # Fetched whole (a chunk's rows are bounded) as the driver's plain tuples.
    found = bulk.fetch_tuples(
        conn,
        select(staging.c.phone, staging.c.line, staging.c.consented_at, evidence).where(
            _in_chunk(start, end) & staging.c.evidence.is_not(None)
        ),
    )
    rows = [(ids[phone], line, at, text) for phone, line, at, text in found if phone in ids]
    summary.without_consent += staged - len(rows)
    time_of = _time_of
    items = [consent.BatchOptIn(cid, text, time_of(at)) for cid, _, at, text in rows]
    outcome = consent.record_opt_ins(conn, clock, program, Channel.IMPORT, items, created_here=created_here)
    summary.consent_recorded += outcome.recorded
    summary.already_subscribed += outcome.already_subscribed
    summary.kept_opted_out += outcome.kept_opted_out
    if not outcome.held:
        return
    # The contact row was imported; its consent was not (an opted-out person, a consent time their opt-out
    # revoked): listed beside the rejected rows, with the reason, so nobody believes they are subscribed.
    line_of = {cid: line for cid, line, _, _ in rows}
    raw_of = {
        r.line: r.raw
        for r in conn.execute(
            select(staging.c.line, staging.c.raw).where(
                staging.c.line.in_([line_of[c] for c in outcome.held])
            )
        )
    }
    for contact_id, reason in sorted(outcome.held.items(), key=lambda kv: line_of[kv[0]]):
        line = line_of[contact_id]
        held.append([line, f"{HELD}: {reason}", *json.loads(raw_of[line])])
        summary.held_reasons[reason.split(":")[0]] += 1
