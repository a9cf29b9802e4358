"""What an import writes to the consent ledger, on both engines: chains that verify, evidence and projection
exactly as the row-at-a-time path writes them, and a chunk that fails inside its writes leaves nothing of
itself behind (its contacts, events and projection rows roll back together)."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from optline.adapters.db import bulk, contacts
from optline.adapters.db import ledger as ledger_repo
from optline.adapters.db.tables import consent_events, subscriptions
from optline.adapters.db.tables import contacts as contacts_table
from optline.bootstrap import Container
from optline.domain import ledger
from optline.domain.consent import Action, Channel, Status
from optline.domain.phones import parse_phone
from optline.services import consent
from optline.services import contacts_import as importer
from optline.services.contacts_import import ImportInterrupted, import_file
from optline.services.programs import create_program

HEADER = "phone,first_name,consented_at,consent_source,consent_text,ip\n"


@pytest.fixture
def program(container: Container) -> dict:
    with container.db.transaction() as conn:
        return create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="deals", brand="Acme “Ü”"
        )


def count(container: Container, table: Any) -> int:
    with container.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_imported_chains_verify_and_match_the_ledger_rules(
    container: Container, program: dict, tmp_path: Path
) -> None:
    # Known contacts (one never subscribed, one opted out) beside new ones; awkward evidence text.
    with container.db.transaction() as conn:
        contacts.get_or_create(conn, parse_phone("+14155550101"), container.clock.now())
        out, _ = contacts.get_or_create(conn, parse_phone("+14155550102"), container.clock.now())
        consent.record(
            conn, container.clock, contact_id=out["id"], program=program, action=Action.OPT_OUT,
            channel=Channel.SMS_KEYWORD, evidence={"message_text": "STOP"},
            occurred_at=container.clock.now(),
        )  # fmt: skip
    rows = (
        '+14155550101,Kim,2024-01-02T10:00:00+02:00,web,"Oui, j\'accepte « les SMS » \\ \U0001f600",198.51.100.1\n'
        "+14155550102,Out,2024-01-02,web,I agree,198.51.100.2\n"
        '+14155550103,New,2024-01-03T23:59:59.123456Z,checkout,"He said ""yes""",\n'
        "+14155550104,Bare,2024-01-04,,I agree,\n"
        "+14155550103,Twice,2024-01-05,web,again,\n"
    )
    path = tmp_path / "contacts.csv"
    path.write_text(HEADER + rows, encoding="utf-8")
    s = import_file(container.db, container.clock, path, program)
    assert (s.rows, s.created, s.updated, s.rejected) == (5, 2, 2, 1)
    assert (s.consent_recorded, s.kept_opted_out, s.without_consent) == (3, 1, 0)
    with container.db.read() as conn:
        result = ledger_repo.verify(conn)
        assert result.ok, result.breaks
        for phone, line, text, when in (
            ("+14155550101", 2, "Oui, j'accepte « les SMS » \\ \U0001f600", "2024-01-02T08:00:00+00:00"),
            ("+14155550103", 4, 'He said "yes"', "2024-01-03T23:59:59.123456+00:00"),
            ("+14155550104", 5, "I agree", "2024-01-04T00:00:00+00:00"),
        ):
            contact = contacts.get_by_phone(conn, phone)
            assert contact is not None
            events = ledger_repo.history(conn, contact["id"])
            assert len(events) == 1, phone
            event = events[0]
            source = "web" if phone != "+14155550103" else "checkout"
            expected = {"consent_text": text, "consent_source": source, "source": source}
            if phone == "+14155550101":
                expected["ip"] = "198.51.100.1"
            if phone == "+14155550104":
                del expected["consent_source"]
                expected["source"] = "import"  # a text but no source: the import is named
            assert event["evidence"] == {**expected, "file_line": line}
            assert (event["seq"], event["prev_hash"], event["action"], event["channel"]) == (
                1, ledger.GENESIS, "opt_in", "import",
            )  # fmt: skip
            assert event["hash"] == ledger.event_hash(event)
            assert ledger.iso(event["occurred_at"]) == ledger.iso(datetime.fromisoformat(when))
            sub = conn.execute(
                select(subscriptions).where(
                    (subscriptions.c.contact_id == contact["id"])
                    & (subscriptions.c.program_id == program["id"])
                )
            ).one()
            assert (sub.status, sub.held, sub.last_event_id, sub.consent_event_id) == (
                Status.SUBSCRIBED.value, False, event["id"], event["id"],
            )  # fmt: skip
            assert ledger.iso(sub.since) == ledger.iso(event["occurred_at"])
        opted_out = contacts.get_by_phone(conn, "+14155550102")
        assert opted_out is not None
        assert consent.current(conn, opted_out["id"], program)[0] is Status.UNSUBSCRIBED


def test_a_chunk_that_fails_inside_its_writes_leaves_nothing_of_itself(
    container: Container, program: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real failure from the database, after the chunk's contacts and events are written: its projection
    # rows name a program that does not exist (the foreign key refuses them).
    rows = "".join(f"+1 415 201 {i:04d},P{i},2024-01-01,web,yes,\n" for i in range(250))
    path = tmp_path / "contacts.csv"
    path.write_text(HEADER + rows, encoding="utf-8")
    monkeypatch.setattr(importer, "MERGE_LINES", 100)
    real, real_chunk = bulk.insert_values, importer._merge_chunk
    # The chunk each thread is merging: chosen by its lines, not by call order (on PostgreSQL two chunks are
    # merged at once).
    merging = threading.local()

    def chunk(conn: Any, clock: Any, program: Any, start: int, *args: Any) -> None:
        merging.start = start
        real_chunk(conn, clock, program, start, *args)

    def second_projection_is_refused(conn: Any, table: Any, columns: Any, values: Any) -> None:
        if table is subscriptions and merging.start == 102:  # the second chunk: lines 102–201
            at = list(columns).index("program_id")
            values = [(*v[:at], 999_999, *v[at + 1 :]) for v in values]
        real(conn, table, columns, values)

    monkeypatch.setattr(importer, "_merge_chunk", chunk)
    monkeypatch.setattr(bulk, "insert_values", second_projection_is_refused)
    with pytest.raises(ImportInterrupted) as stopped:
        import_file(container.db, container.clock, path, program)
    assert isinstance(stopped.value.__cause__, DBAPIError)
    assert stopped.value.next_line == 102
    assert (stopped.value.summary.created, stopped.value.summary.consent_recorded) == (100, 100)
    assert (count(container, contacts_table), count(container, consent_events), count(container, subscriptions)) == (
        100, 100, 100,
    )  # fmt: skip
    monkeypatch.setattr(bulk, "insert_values", real)
    again = import_file(container.db, container.clock, path, program)
    assert (again.created, again.unchanged, again.consent_recorded, again.already_subscribed) == (
        150,
        100,
        150,
        100,
    )
    assert (count(container, contacts_table), count(container, consent_events), count(container, subscriptions)) == (
        250, 250, 250,
    )  # fmt: skip
    with container.db.read() as conn:
        assert ledger_repo.verify(conn).ok


def test_evidence_not_in_its_canonical_text_is_refused(container: Container, program: dict) -> None:
    # Hashing text in another form (keys unsorted, spaces) would store events whose hashes never verify.
    with container.db.transaction() as conn:
        contact, _ = contacts.get_or_create(conn, parse_phone("+14155550199"), container.clock.now())
        with pytest.raises(ValueError, match="not in its canonical JSON text"):
            ledger_repo.insert_first_events(
                conn, program_id=program["id"], brand=program["brand"], action=Action.OPT_IN,
                channel=Channel.IMPORT, recorded_at=container.clock.now(),
                items=[(contact["id"], '{"source": "web", "ip": "1.2.3.4"}', container.clock.now())],
            )  # fmt: skip
