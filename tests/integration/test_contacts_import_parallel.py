"""Large files are parsed in worker processes: the outcome is the one parsing here gives, row for row.

Both imports below read the same messy file (bad numbers, bad dates, duplicates, formulas, a quoted field
spanning lines, non-ASCII names) into fresh programs of one database; the second run finds every contact
the first created, so the contact rows are compared through what each import reported and stored.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy import select

from optline.adapters import worker_pool
from optline.adapters.db.tables import consent_events, contacts
from optline.bootstrap import Container
from optline.services import contacts_import as importer
from optline.services.contacts_import import ImportError_, ImportSummary, import_file
from optline.services.programs import create_program


def messy_file(path: Path, rows: int) -> None:
    rnd = random.Random(11)
    lines = ["Phone,First Name,consented_at,consent_source,city\n"]
    for i in range(rows):
        phone = f"({rnd.choice(['415', '212', '787', '604'])}) {200 + i // 10000}-{i % 10000:04d}"
        r = rnd.random()
        if r < 0.02:
            phone = rnd.choice(['=HYPERLINK("http://x")', "n/a", "+1 999 555 0134", "12345"])
        elif r < 0.03 and i > 0:
            phone = lines[-1].split(",")[0].strip('"')  # a repeat of the previous row's number
        date = rnd.choice(["2024-05-01", "03/04/2024", "2024-02-30", "", "2099-01-01"])
        source = rnd.choice(["web", '"store\nsign-up sheet"', ""])
        lines.append(f'"{phone}",Zoë {i},{date},{source},Zürich\n')
    path.write_text("".join(lines), encoding="utf-8")


def run(container: Container, path: Path, name: str) -> tuple[ImportSummary, list[str]]:
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name=name, brand=name
        )
    summary = import_file(
        container.db, container.clock, path, program, rejects_path=path.with_name(f"{name}.csv")
    )
    assert summary.rejects_path is not None
    return summary, summary.rejects_path.read_text(encoding="utf-8").splitlines()


def test_workers_and_this_process_parse_a_file_alike(
    container: Container, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "contacts.csv"
    messy_file(path, 6000)
    here, here_rejects = run(container, path, "here")
    with container.db.read() as conn:
        stored = conn.execute(
            select(
                contacts.c.phone,
                contacts.c.attributes,
                contacts.c.number_type,
                contacts.c.time_zone,
                contacts.c.us_state,
            ).order_by(contacts.c.phone)
        ).all()
        evidence = sorted(
            str(sorted(e.items())) for e in conn.execute(select(consent_events.c.evidence)).scalars()
        )
    monkeypatch.setattr(importer, "PARALLEL_FROM_BYTES", 0)  # any file: in workers
    monkeypatch.setattr(importer, "PARSE_BATCH", 97)  # many batches, results taken out of order
    monkeypatch.setattr(worker_pool, "default_workers", lambda: 2)  # even on a one-core runner
    workers, workers_rejects = run(container, path, "workers")

    assert (here.rows, here.rejected, here.reject_reasons) == (
        workers.rows,
        workers.rejected,
        workers.reject_reasons,
    )
    assert here.rejected > 100 and here.reject_reasons["duplicate"] > 10
    assert (here.created, workers.created, workers.unchanged) == (len(stored), 0, len(stored))
    assert here.consent_recorded == workers.consent_recorded > 1000
    assert here_rejects == workers_rejects  # the same lines, reasons and cells, in the same order
    with container.db.read() as conn:
        assert (
            stored
            == conn.execute(
                select(
                    contacts.c.phone,
                    contacts.c.attributes,
                    contacts.c.number_type,
                    contacts.c.time_zone,
                    contacts.c.us_state,
                ).order_by(contacts.c.phone)
            ).all()
        )
        both = sorted(
            str(sorted(e.items())) for e in conn.execute(select(consent_events.c.evidence)).scalars()
        )
    assert both == sorted(evidence + evidence)  # each import's evidence, with the same file lines


def test_a_bad_byte_late_in_a_file_parsed_in_workers_leaves_nothing_behind(
    container: Container, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "contacts.csv"
    messy_file(path, 5000)
    last = path.read_bytes().count(b"\n") + 1  # quoted fields span lines: the physical line is named
    with path.open("ab") as f:
        f.write(b'"(415) 555-0100",Jos\xe9,,,\n')
    monkeypatch.setattr(importer, "PARALLEL_FROM_BYTES", 0)
    monkeypatch.setattr(worker_pool, "default_workers", lambda: 2)
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="p", brand="b"
        )
    with pytest.raises(ImportError_, match=rf"line {last}, character 21: byte 0xe9 is not valid UTF-8"):
        import_file(container.db, container.clock, path, program)
    with container.db.read() as conn:
        assert conn.execute(select(contacts.c.id)).first() is None
