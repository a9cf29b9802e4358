"""Importing outside number lists: the National Do-Not-Call file and FCC Reassigned Numbers Database results.

Like the contacts import: streamed, batched, idempotent (importing the same file twice adds nothing), and
every rejected row goes to ``FILE.rejects.csv`` with its line number and the reason.

Formats accepted:
- DNC: one number per line (``2015550123``, ``+1 201 555 0123``), or the FTC download's ``area code,
  number`` pairs (``201,5550123``), or a CSV whose header names a phone column;
- reassigned: ``number, disconnect date`` per line as the FCC RND returns them (the date as ISO 8601 or
  ``MM/DD/YYYY``), with or without a header line.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table

from optline.adapters import csv_file
from optline.adapters.clock import Clock
from optline.adapters.db.database import Database
from optline.adapters.db.tables import dnc_numbers, reassigned_numbers
from optline.domain.csv_safety import SafeWriter, unescape_cell
from optline.domain.dates import parse_datetime
from optline.domain.phones import InvalidPhoneNumber, normalize
from optline.services.contacts_import import PHONE_COLUMNS

BATCH = 5000
_AREA = re.compile(r"^\d{3}$")
_LOCAL = re.compile(r"^\d{3}-?\d{4}$")


@dataclass
class ListImportSummary:
    rows: int = 0
    added: int = 0
    already_known: int = 0
    rejected: int = 0
    reject_reasons: Counter[str] = field(default_factory=Counter)
    rejects_path: Path | None = None


class ListImportError(ValueError):
    """The file as a whole cannot be imported (empty, unreadable)."""


def _insert_new(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert rows whose key is not there yet; returns how many were new."""
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    # Counted by RETURNING: an executemany's rowcount is -1 or 0 on psycopg (PostgreSQL reported 0 added).
    key = next(iter(table.primary_key.columns))
    return len(conn.execute(insert(table).on_conflict_do_nothing().returning(key), rows).all())


def _read(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for every non-blank record; the delimiter is sniffed from the first line.

    The encoding is found as for contacts (``adapters/csv_file``: BOM, else strict UTF-8); an unreadable
    line raises ``CsvFileError`` naming it.
    """
    with path.open("rb") as raw:
        enc = csv_file.detect_encoding(raw.read(4))
        raw.seek(0)
        lines = csv_file.lines(raw, enc)
        first = next(lines, "")
        if not first.strip():
            raise ListImportError(f"{path}: the file is empty")
        delimiter = csv_file.sniff_delimiter(first) if any(d in first for d in ",;\t|") else ","
        for line, record in csv_file.records(itertools.chain([first], lines), delimiter):
            yield line, [unescape_cell(cell.strip()) for cell in record]


def _run(
    db: Database,
    path: Path,
    rejects_path: Path | None,
    table: Table,
    parse: Callable[[list[str], int], dict[str, Any] | None],
) -> ListImportSummary:
    summary = ListImportSummary(rejects_path=rejects_path or path.with_suffix(".rejects.csv"))
    assert summary.rejects_path is not None
    batch: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    keys = [c.name for c in table.primary_key.columns]

    def flush() -> None:
        with db.transaction() as conn:
            added = _insert_new(conn, table, batch)
        summary.added += added
        summary.already_known += len(batch) - added
        batch.clear()

    with summary.rejects_path.open("w", newline="", encoding="utf-8") as out:
        rejects = SafeWriter(out)
        rejects.writerow(["line", "reason", "fields"])
        records = _read(path)
        while True:
            try:
                line, record = next(records)
            except StopIteration:
                break
            except csv_file.CsvFileError as exc:
                # Rows already read are kept (a number list only ever adds restrictions); the error says
                # exactly how far the file was read.
                flush()
                raise ListImportError(
                    f"{path.name}: {exc}; the lines before it were read ({summary.added:,} numbers added, "
                    f"{summary.rejected:,} rejected, listed in {summary.rejects_path}), the rest were not"
                ) from None
            try:
                row = parse(record, line)
            except ValueError as exc:
                summary.rows += 1
                summary.rejected += 1
                summary.reject_reasons[str(exc).split(":")[0][:60]] += 1
                rejects.writerow([line, str(exc), *record])
                continue
            if row is None:  # a header line
                continue
            summary.rows += 1
            key = tuple(row[k] for k in keys)
            if key in seen:
                summary.already_known += 1
                continue
            seen.add(key)
            batch.append(row)
            if len(batch) >= BATCH:
                flush()
        flush()
    return summary


def _number(text: str, region: str) -> str:
    try:
        return normalize(text, region)
    except InvalidPhoneNumber as exc:
        raise ValueError(f"bad phone number: {exc}") from None


def import_dnc(
    db: Database,
    clock: Clock,
    path: Path,
    *,
    source: str | None = None,
    default_region: str = "US",
    rejects_path: Path | None = None,
) -> ListImportSummary:
    now = clock.now()
    label = (source or f"dnc file {path.name}")[:100]
    phone_index: list[int] = []

    def parse(record: list[str], line: int) -> dict[str, Any] | None:
        header = [h.lower().replace(" ", "_") for h in record]
        if line == 1 and any(h in PHONE_COLUMNS for h in header):
            phone_index.append(next(i for i, h in enumerate(header) if h in PHONE_COLUMNS))
            return None
        if phone_index:
            if phone_index[0] >= len(record) or not record[phone_index[0]]:
                raise ValueError("missing phone number")
            raw = record[phone_index[0]]
        elif len(record) == 2 and _AREA.match(record[0]) and _LOCAL.match(record[1]):
            raw = record[0] + record[1].replace("-", "")  # the FTC download: area code, number
        elif len(record) == 1:
            raw = record[0]
        else:
            raise ValueError(f"expected one number per line or 'area code,number', got {len(record)} fields")
        return {"phone": _number(raw, default_region), "source": label, "imported_at": now}

    return _run(db, path, rejects_path, dnc_numbers, parse)


def import_reassigned(
    db: Database,
    clock: Clock,
    path: Path,
    *,
    source: str | None = None,
    default_region: str = "US",
    rejects_path: Path | None = None,
) -> ListImportSummary:
    now = clock.now()
    label = (source or f"FCC RND results {path.name}")[:200]

    def parse(record: list[str], line: int) -> dict[str, Any] | None:
        if line == 1 and not any(ch.isdigit() for ch in record[0]):
            return None  # a header line ("phone number, disconnect date")
        if len(record) < 2 or not record[1]:
            raise ValueError("missing disconnect date: expected 'number, disconnect date'")
        if len(record) > 2:
            raise ValueError(f"too many fields: expected 'number, disconnect date', got {len(record)}")
        phone = _number(record[0], default_region)
        try:
            disconnected: datetime = parse_datetime(record[1])
        except ValueError as exc:
            raise ValueError(f"bad disconnect date: {exc}") from None
        if disconnected > now:
            raise ValueError(f"bad disconnect date: {record[1]!r} is in the future")
        return {"phone": phone, "disconnected_at": disconnected, "source": label, "imported_at": now}

    return _run(db, path, rejects_path, reassigned_numbers, parse)
