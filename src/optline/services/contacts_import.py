"""Importing contacts from real-world CSV files: streamed, batched, idempotent, every rejected row explained.

Memory: rows are read and written in batches; the only thing that grows with the file is the set of numbers
already seen (for duplicate detection), kept as 8-byte integers.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, bindparam, select, update

from optline.adapters.clock import Clock
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.database import Database, one_of
from optline.adapters.db.tables import contacts
from optline.domain.consent import Channel, ConsentRefused, check_opt_in_time
from optline.domain.dates import parse_datetime
from optline.domain.phones import InvalidPhoneNumber, parse_phone
from optline.services import consent

PHONE_COLUMNS = ("phone", "phone_number", "mobile", "mobile_number", "cell", "number", "msisdn", "tel")
CONSENT_COLUMNS = {"consented_at", "consent_source", "consent_text", "ip", "user_agent", "consent_url"}
CONTACT_COLUMNS = {"locale", "language", "time_zone", "timezone"}
BATCH = 2000
HELD = "contact imported, consent not recorded"


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

    @property
    def accepted(self) -> int:
        return self.rows - self.rejected


@dataclass
class _Row:
    line: int
    phone: str
    attributes: dict[str, str]
    locale: str | None
    time_zone: str | None
    consent: dict[str, Any] | None
    consented_at: datetime | None
    parsed: Any
    raw: list[str] = field(default_factory=list)


class ImportError_(ValueError):
    """The file as a whole cannot be imported (no phone column, not CSV)."""


class _CountingReader(io.RawIOBase):
    """Counts bytes read so the progress bar can follow a streamed file."""

    def __init__(self, raw: IO[bytes], on_progress: Callable[[int], None] | None) -> None:
        self._raw, self._on_progress, self.position = raw, on_progress, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self.position += len(data)
        if self._on_progress:
            self._on_progress(len(data))
        return len(data)


def _dialect(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    return max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","


def _normalise_header(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def import_file(
    db: Database,
    clock: Clock,
    path: Path,
    program: dict[str, Any],
    *,
    default_region: str = "US",
    rejects_path: Path | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    summary = ImportSummary(rejects_path=rejects_path or path.with_suffix(".rejects.csv"))
    assert summary.rejects_path is not None
    with (
        path.open("rb") as raw,
        summary.rejects_path.open("w", newline="", encoding="utf-8") as rejects_file,
    ):
        text = io.TextIOWrapper(
            io.BufferedReader(_CountingReader(raw, on_progress)), encoding="utf-8-sig", newline=""
        )
        first = text.readline()
        if not first.strip():
            raise ImportError_(f"{path}: the file is empty")
        delimiter = _dialect(first)
        header = [_normalise_header(h) for h in next(csv.reader([first], delimiter=delimiter))]
        phone_col = next((c for c in PHONE_COLUMNS if c in header), None)
        if phone_col is None:
            raise ImportError_(f"{path}: no phone column (expected one of: {', '.join(PHONE_COLUMNS)})")
        rejects = csv.writer(rejects_file)
        rejects.writerow(["line", "reason", *header])
        reader = csv.reader(text, delimiter=delimiter)
        seen: set[int] = set()
        batch: list[_Row] = []
        for row, line in _rows_with_lines(reader):
            summary.rows += 1
            try:
                parsed = _parse_row(row, header, phone_col, default_region, clock.now())
                key = int(parsed.phone[1:])
                if key in seen:
                    raise ValueError(f"duplicate of an earlier row with phone {parsed.phone}")
                seen.add(key)
            except ValueError as exc:
                summary.rejected += 1
                reason = str(exc)
                summary.reject_reasons[reason.split(":")[0].split(" (")[0][:60]] += 1
                rejects.writerow([line, reason, *row])
                continue
            parsed.line = line
            batch.append(parsed)
            if len(batch) >= BATCH:
                _write_batch(db, clock, program, batch, summary, rejects)
                batch = []
        _write_batch(db, clock, program, batch, summary, rejects)
    return summary


def _rows_with_lines(reader: Any) -> Iterator[tuple[list[str], int]]:
    line = 2  # line 1 is the header; a quoted field may span lines, so report where the record starts
    for row in reader:
        start = line
        line = reader.line_num + 2
        if not row or all(not cell.strip() for cell in row):
            continue
        yield row, start


def _parse_row(row: list[str], header: list[str], phone_col: str, region: str, now: datetime) -> _Row:
    if len(row) > len(header):
        raise ValueError(f"too many columns: {len(row)} fields for {len(header)} header columns")
    values = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
    try:
        phone = parse_phone(values[phone_col], region)
    except InvalidPhoneNumber as exc:
        raise ValueError(f"bad phone number: {exc}") from None
    consented_at = None
    if values.get("consented_at"):
        try:
            consented_at = parse_datetime(values["consented_at"])
        except ValueError as exc:
            raise ValueError(f"bad consented_at date: {exc}") from None
        try:  # the time of consent is checked again against their last opt-out when it is recorded
            check_opt_in_time(consented_at, now=now, last_opt_out=None)
        except ConsentRefused as exc:
            raise ValueError(f"bad consented_at date: {values['consented_at']!r}: {exc}") from None
    evidence = None
    source = values.get("consent_source") or values.get("consent_url")
    if consented_at and (source or values.get("consent_text")):
        evidence = {k: values[k] for k in sorted(CONSENT_COLUMNS) if values.get(k) and k != "consented_at"}
        evidence["source"] = source or "import"
    attributes = {
        k: v for k, v in values.items() if v and k != phone_col and k not in CONSENT_COLUMNS | CONTACT_COLUMNS
    }
    return _Row(
        line=0,
        phone=phone.e164,
        attributes=attributes,
        locale=values.get("locale") or values.get("language") or None,
        time_zone=values.get("time_zone") or values.get("timezone") or None,
        consent=evidence,
        consented_at=consented_at,
        parsed=phone,
        raw=row,
    )


def _write_batch(
    db: Database,
    clock: Clock,
    program: dict[str, Any],
    batch: list[_Row],
    summary: ImportSummary,
    rejects: Any,
) -> None:
    if not batch:
        return
    now = clock.now()
    with db.transaction() as conn:
        ids = _upsert_contacts(conn, batch, now, summary)
        items, lines = [], {}
        for row in batch:
            if row.consent is None:
                summary.without_consent += 1
                continue
            assert row.consented_at is not None
            evidence = {**row.consent, "file_line": row.line}
            items.append(consent.BatchOptIn(ids[row.phone], evidence, row.consented_at))
            lines[ids[row.phone]] = row
        outcome = consent.record_opt_ins(conn, clock, program, Channel.IMPORT, items)
    summary.consent_recorded += outcome.recorded
    summary.already_subscribed += outcome.already_subscribed
    summary.kept_opted_out += outcome.kept_opted_out
    # The contact row was imported; its consent was not (an opted-out person, a consent time their opt-out
    # revoked): listed beside the rejected rows, with the reason, so nobody believes they are subscribed.
    for contact_id, reason in outcome.held.items():
        row = lines[contact_id]
        rejects.writerow([row.line, f"{HELD}: {reason}", *row.raw])
        summary.held_reasons[reason.split(":")[0]] += 1


def _upsert_contacts(
    conn: Connection, batch: list[_Row], now: datetime, summary: ImportSummary
) -> dict[str, int]:
    existing = _existing(conn, [row.phone for row in batch])
    new_rows: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for row in batch:
        old = existing.get(row.phone)
        if old is None:
            p = row.parsed
            new_rows.append(
                {
                    "phone": row.phone, "region": p.region, "number_type": p.number_type,
                    "time_zone": row.time_zone or p.time_zone, "time_zone_overridden": bool(row.time_zone),
                    "us_state": p.us_state, "locale": row.locale, "attributes": row.attributes,
                    "created_at": now, "updated_at": now,
                }
            )  # fmt: skip
            continue
        _merge_into(old, row, now, changed, summary)
    ids = {phone: r.id for phone, r in existing.items()}
    if new_rows:
        # ON CONFLICT DO NOTHING: a first text or a sign-up from one of these numbers may create its contact
        # between our read and this insert; that row is then updated below instead of failing the batch.
        result = conn.execute(
            contact_repo.insert_ignoring_duplicates(conn).returning(contacts.c.id, contacts.c.phone), new_rows
        )
        inserted = {r.phone: r.id for r in result}
        ids.update(inserted)
        summary.created += len(inserted)
        by_phone = {row.phone: row for row in batch}
        raced = _existing(conn, [r["phone"] for r in new_rows if r["phone"] not in inserted])
        for phone, old in raced.items():
            ids[phone] = old.id
            _merge_into(old, by_phone[phone], now, changed, summary)
    if changed:
        conn.execute(
            update(contacts)
            .where(contacts.c.id == bindparam("b_id"))
            .values(
                attributes=bindparam("attributes"), locale=bindparam("locale"),
                time_zone=bindparam("time_zone"), updated_at=bindparam("updated_at"),
            ),
            changed,
        )  # fmt: skip
        summary.updated += len(changed)
    return ids


def _existing(conn: Connection, phones: list[str]) -> dict[str, Any]:
    if not phones:
        return {}
    rows = conn.execute(
        select(
            contacts.c.id, contacts.c.phone, contacts.c.attributes, contacts.c.locale, contacts.c.time_zone
        ).where(one_of(conn, contacts.c.phone, phones))
    )
    return {r.phone: r for r in rows}


def _merge_into(
    old: Any, row: _Row, now: datetime, changed: list[dict[str, Any]], summary: ImportSummary
) -> None:
    """Queue the update that merges ``row`` into the stored contact ``old`` (or count it unchanged)."""
    merged = {**(old.attributes or {}), **row.attributes}
    locale = row.locale or old.locale
    tz = row.time_zone or old.time_zone
    if merged != (old.attributes or {}) or locale != old.locale or tz != old.time_zone:
        changed.append(
            {"b_id": old.id, "attributes": merged, "locale": locale, "time_zone": tz, "updated_at": now}
        )
    else:
        summary.unchanged += 1
