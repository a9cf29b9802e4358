"""Each import's record in the database (services/imports.py), on both engines: every rejected or held row
stored with its line, reason and fields — exactly the rows of the rejects file — and no valid row lost."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.tables import contacts, import_rejects
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.domain.csv_safety import escape_row
from optline.domain.phones import parse_phone
from optline.services import consent, imports
from optline.services.contacts_import import HELD, ImportError_, ImportInterrupted
from tests.integration.test_contacts_import import MESSY
from tests.support import web


def run(container: Container, program: dict[str, Any], path: Path, **kw: Any) -> tuple[int, Any]:
    import_id = imports.start(
        container.db, container.clock, program, file_name=path.name, source="cli", imported_by="maria"
    )
    return import_id, imports.run(container.db, container.clock, import_id, path, program, **kw)


def stored(container: Container, import_id: int) -> list[list[Any]]:
    with container.db.read() as conn:
        record = imports.get(conn, import_id)
    assert record is not None
    return list(imports.rejects_rows(container.db, record))


def rejects_file(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def as_text(rows: list[list[Any]]) -> list[list[str]]:
    return [[str(cell) for cell in row] for row in rows]


def test_every_rejected_and_held_row_is_stored_as_the_rejects_file_has_it(
    container: Container, tmp_path: Path
) -> None:
    program = web.program(container)
    with container.db.transaction() as conn:  # an opted-out person: their row is imported, consent held
        contact, _ = contact_repo.get_or_create(
            conn, parse_phone("+14155550135", "US"), container.clock.now()
        )
        consent.record(
            conn,
            container.clock,
            contact_id=contact["id"],
            program=program,
            action=Action.OPT_OUT,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "STOP"},
        )
    path = tmp_path / "messy.csv"
    path.write_text(MESSY + '=HYPERLINK("http://x");<b>Eve</b>;;;;\n', encoding="utf-8")
    import_id, summary = run(container, program, path)

    rows = stored(container, import_id)
    file_rows = rejects_file(summary.rejects_path)
    # The same header and the same rows (the file: in the order found; the record: in line order).
    assert (
        rows[0]
        == file_rows[0]
        == ["line", "reason", "phone", "first_name", "consented_at", "consent_source", "consent_text", "ip"]
    )
    file_rows[1:] = sorted(file_rows[1:], key=lambda r: int(r[0]))
    assert [escape_row(r) for r in as_text(rows)] == file_rows
    lines = {row[0]: row[1] for row in rows[1:]}
    assert set(lines) == {3, 5, 6, 7, 8, 12}  # line 3: Bob, opted out (held); 12: the formula row
    assert lines[3].startswith(HELD) and "duplicate" in lines[7] and "bad phone number" in lines[12]
    assert rows[-1][2:] == ['=HYPERLINK("http://x")', "<b>Eve</b>", "", "", "", ""]  # fields as read
    with container.db.read() as conn:
        record = imports.get(conn, import_id)
        held = conn.execute(select(import_rejects.c.line).where(import_rejects.c.held)).scalars().all()
        people = conn.execute(select(func.count()).select_from(contacts)).scalar_one()
    assert record is not None and held == [3]
    assert record["status"] == "done" and record["source"] == "cli" and record["imported_by"] == "maria"
    assert record["counts"] == imports.counts(summary) and record["counts"]["rejected"] == 5
    assert (
        record["reject_reasons"] == dict(summary.reject_reasons)
        and record["encoding"] == "UTF-8 (with byte-order mark)"
    )
    # Valid rows are not lost with the bad ones: every row read is a contact or a rejected line.
    assert people == summary.rows - summary.rejected == 4


def test_thousands_of_rejects_are_stored_in_batches_none_lost(container: Container, tmp_path: Path) -> None:
    program = web.program(container)
    n = imports.FLUSH_ROWS * 2 + 17  # more than two batches, and a partial one at the end
    lines = []
    for i in range(n):
        lines.append(f"+1 415 {200 + i // 1000} {i % 1000:04d},2024-01-01,web")
        lines.append(f"not a phone {i},2024-01-01,web")
    path = tmp_path / "big.csv"
    path.write_text("phone,consented_at,consent_source\n" + "\n".join(lines) + "\n", encoding="utf-8")
    import_id, summary = run(container, program, path)
    assert (summary.rows, summary.rejected, summary.created) == (2 * n, n, n)
    with container.db.read() as conn:
        got = (
            conn.execute(
                select(import_rejects.c.line)
                .where(import_rejects.c.import_id == import_id)
                .order_by(import_rejects.c.line)
            )
            .scalars()
            .all()
        )
        page, after = imports.rejects_page(conn, import_id, after=0)
        second, _ = imports.rejects_page(conn, import_id, after=after or 0)
    assert got == list(range(3, 2 * n + 2, 2))  # every bad line (the odd rows after the header), once
    assert len(page) == imports.PAGE_ROWS and after == page[-1]["line"] and second[0]["line"] == after + 2


def test_a_refused_file_keeps_its_record_but_no_rejects(container: Container, tmp_path: Path) -> None:
    program = web.program(container)
    path = tmp_path / "bad.csv"  # rows rejected before the last line turns out not to be UTF-8
    path.write_bytes(b"phone\n" + b"nope\n" * (imports.FLUSH_ROWS + 500) + b"4155550134\n\xe9\n")
    with pytest.raises(ImportError_):
        run(container, program, path)
    with container.db.read() as conn:
        (record,), _ = imports.recent(conn)
        left = conn.execute(select(func.count()).select_from(import_rejects)).scalar_one()
    assert (
        record["status"] == "refused" and f"line {imports.FLUSH_ROWS + 503}" in record["error"] and left == 0
    )


def test_an_interrupted_import_says_so_and_keeps_its_rejects(
    container: Container, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = web.program(container)

    def database_goes_away(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("INSERT INTO consent_events …", {}, Exception("server closed the connection"))

    monkeypatch.setattr(consent, "record_opt_ins", database_goes_away)
    path = tmp_path / "list.csv"
    path.write_text(
        "phone,consented_at,consent_source\n4155550134,2024-01-01,web\nnope,,\n", encoding="utf-8"
    )
    with pytest.raises(ImportInterrupted):
        run(container, program, path)
    with container.db.read() as conn:
        (record,), _ = imports.recent(conn)
    assert record["status"] == "interrupted" and "nothing was imported" in record["error"]
    assert [r[0] for r in stored(container, record["id"])[1:]] == [3]
