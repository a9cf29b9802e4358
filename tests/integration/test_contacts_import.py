"""Importing real-world CSV on both engines: every row accounted for, idempotent, never re-subscribes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import func, select

from optline.adapters.db import contacts
from optline.adapters.db.tables import consent_events, subscriptions
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel, Status
from optline.services import consent, contacts_import
from optline.services.contacts_import import ImportError_, import_file
from optline.services.programs import create_program

MESSY = (
    "\ufeffPhone;First Name;consented_at;consent_source;consent_text;ip\n"
    '"(415) 555-0134";Ann;2024-01-02T10:00:00Z;web form;"I agree; send me deals";198.51.100.7\n'
    "415.555.0135;Bob;03/04/2024;checkout;;\n"
    "+1 415 555 0136 ;Cy;;;;\n"  # no consent: imported, cannot get marketing
    "14155550137;Di;2024-02-30;web;;\n"  # bad date
    "not a phone;Ed;;;;\n"  # bad number
    "(415) 555-0134;Ann again;;;;\n"  # duplicate within the file
    "4155550138;Fay;2024-01-01;web;;;extra\n"  # too many columns
    "\n"
    '"415 555 0139";"Gus ""G"" Jr";2024-01-05;"store\nsign-up sheet";;\n'  # quoted field spanning lines
)


@pytest.fixture
def program(container: Container) -> dict:
    with container.db.transaction() as conn:
        return create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="deals", brand="Acme"
        )


def write(tmp_path: Path, text: str, name: str = "contacts.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def count(container: Container, table) -> int:  # type: ignore[no-untyped-def]
    with container.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_messy_csv_every_row_accounted_for(container: Container, program: dict, tmp_path: Path) -> None:
    path = write(tmp_path, MESSY)
    s = import_file(container.db, container.clock, path, program)
    assert s.rows == 8
    assert (s.created, s.consent_recorded, s.without_consent, s.rejected) == (4, 3, 1, 4)
    rejects = list(csv.reader(s.rejects_path.open(encoding="utf-8")))  # type: ignore[union-attr]
    by_line = {int(r[0]): r[1] for r in rejects[1:]}
    assert set(by_line) == {5, 6, 7, 8}
    assert "bad consented_at date" in by_line[5]
    assert "bad phone number" in by_line[6]
    assert "duplicate" in by_line[7]
    assert "too many columns" in by_line[8]
    with container.db.read() as conn:
        gus = contacts.get_by_phone(conn, "+14155550139")
        assert gus is not None and gus["attributes"] == {"first_name": 'Gus "G" Jr'}
        ann = contacts.get_by_phone(conn, "+14155550134")
        assert ann is not None
        status, _ = consent.current(conn, ann["id"], program)
        assert status is Status.SUBSCRIBED
        event = conn.execute(select(consent_events).where(consent_events.c.contact_id == ann["id"])).one()
        assert event.channel == "import"
        assert event.evidence["consent_text"] == "I agree; send me deals"
        assert event.evidence["ip"] == "198.51.100.7"
        cy = contacts.get_by_phone(conn, "+14155550136")
        assert consent.current(conn, cy["id"], program)[0] is Status.NEVER  # type: ignore[index]


def test_reimport_changes_nothing(container: Container, program: dict, tmp_path: Path) -> None:
    path = write(tmp_path, MESSY)
    import_file(container.db, container.clock, path, program)
    events, subs = count(container, consent_events), count(container, subscriptions)
    again = import_file(container.db, container.clock, path, program)
    assert (again.created, again.updated, again.consent_recorded) == (0, 0, 0)
    assert again.unchanged == 4 and again.already_subscribed == 3
    assert (count(container, consent_events), count(container, subscriptions)) == (events, subs)


def test_import_never_resubscribes_an_opted_out_contact(
    container: Container, program: dict, tmp_path: Path
) -> None:
    path = write(tmp_path, "phone,consented_at,consent_source\n4155550134,2024-01-01,web\n")
    import_file(container.db, container.clock, path, program)
    with container.db.transaction() as conn:
        cid = contacts.get_by_phone(conn, "+14155550134")["id"]  # type: ignore[index]
        consent.record(
            conn,
            container.clock,
            contact_id=cid,
            program=program,
            action=Action.OPT_OUT,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "STOP"},
        )
    newer = write(tmp_path, "phone,consented_at,consent_source\n4155550134,2026-11-01,web\n", "newer.csv")
    s = import_file(container.db, container.clock, newer, program)
    assert s.kept_opted_out == 1 and s.consent_recorded == 0
    with container.db.read() as conn:
        assert consent.current(conn, cid, program)[0] is Status.UNSUBSCRIBED


def test_comma_file_without_bom_and_batches(container: Container, program: dict, tmp_path: Path) -> None:
    rows = "\n".join(f"+1 415 {200 + i // 1000} {i % 1000:04d},2024-01-01,web" for i in range(5000))
    path = write(tmp_path, "mobile,consented_at,consent_source\n" + rows + "\n")
    s = import_file(container.db, container.clock, path, program)  # more rows than one batch
    assert (s.rows, s.rejected, s.created) == (5000, 0, 5000)
    assert count(container, consent_events) == s.consent_recorded == 5000


def test_file_without_phone_column_is_refused(container: Container, program: dict, tmp_path: Path) -> None:
    with pytest.raises(ImportError_, match="no phone column"):
        import_file(container.db, container.clock, write(tmp_path, "name,email\nAnn,a@x\n"), program)


def test_the_clis_rejects_file_fixed_and_imported_as_it_is(
    container: Container, program: dict, tmp_path: Path
) -> None:
    """The rejects file the CLI writes beside the input, one number fixed and imported again without
    removing its ``line`` and ``reason`` columns: they are not stored as attributes, a note says why."""
    first = import_file(
        container.db,
        container.clock,
        write(tmp_path, "phone,name\nnot a phone,Ann\n4155550134,Bo\n"),
        program,
    )
    assert first.rejected == 1 and first.notes == []
    assert first.rejects_path is not None
    rows = list(csv.reader(first.rejects_path.open(newline="", encoding="utf-8")))
    assert rows[0] == ["line", "reason", "phone", "name"]
    rows[1][2] = "415 555 0199"
    fixed = tmp_path / "fixed.csv"
    with fixed.open("w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerows(rows)
    again = import_file(container.db, container.clock, fixed, program)
    assert again.created == 1 and again.rejected == 0
    assert again.notes == [contacts_import.REJECTS_NOTE]
    with container.db.read() as conn:
        ann = contacts.get_by_phone(conn, "+14155550199")
    assert ann is not None and ann["attributes"] == {"name": "Ann"}
